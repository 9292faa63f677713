"""The fleet page on real agents in network namespaces, read by headless Chromium.

Three test hosts, each with its own address, Serf and undistro agent (the
harness of tests/fleet/test_fleet_hosts.py). Chromium runs in host 0's
namespace and opens host 0's page; a promise fails on host 2, and the page
served by host 0 must show it within a second — measured from the write
that breaks it to the DOM change, both on this machine's clock.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PolicyDir
from tests.content._chromium import Chromium
from tests.fleet.test_fleet_hosts import (  # noqa: F401 - fixtures
    FleetNode,
    _alive,
    _wait,
    fleet_dir,
    short_tmp,
    three,
)
from tests.supervisor._idle import WAITS, idle_syscalls

ARTIFACTS = Path(os.environ.get("UNDISTRO_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))
HOSTILE = "<img src=x onerror=alert(1)>"

# A file whose repair is judged by a validator the test controls: with the
# flag file present the validator refuses (printing hostile HTML, which
# becomes the promise's error text), and the promise fails.
POLICY = f"""
[[file]]
path = "/etc/app.conf"
content = "good\\n"
validate = ["/bin/sh", "-c", "if [ -e \\"$UNDISTRO_ROOT/etc/fail\\" ]; then echo \\"{HOSTILE}\\"; exit 1; fi", "sh", "{{path}}"]

[[service]]
name = "ticker<b>"
command = ["/bin/sleep", "100000"]
"""


@pytest.fixture
def pushed(three: list[FleetNode], fleet_dir: Path, policy: PolicyDir) -> list[FleetNode]:  # noqa: F811
    """Three hosts (tests/fleet's fixture) running POLICY from a push."""
    policy.resources(POLICY)
    out = three[1].run("fleet", "push", str(policy), "--fleet", str(fleet_dir))
    assert out.returncode == 0, out.stderr
    _wait(lambda: all((n.root / "etc/app.conf").exists() for n in three), 30, "revision 1")
    return three


@pytest.fixture
def chromium(pushed: list[FleetNode]) -> Iterator[Chromium]:
    browser = Chromium(wrap=pushed[0].host.argv())
    try:
        yield browser
    finally:
        browser.close()


def _row(name: str, cell: str) -> str:
    return f"(document.querySelector('tr[data-node=\"{name}\"] .{cell}')?.textContent ?? null)"


def _until(expression: str, timeout: float = 20.0) -> str:
    """A promise resolving to Date.now() once ``expression`` is true, checked
    at every change of the node table (a MutationObserver, no timer)."""
    return f"""new Promise((resolve, reject) => {{
      const done = () => {{ if ({expression}) {{ obs.disconnect(); resolve(Date.now()); return true; }} }};
      const obs = new MutationObserver(done);
      obs.observe(document.getElementById('nodes'), {{childList: true, subtree: true, characterData: true}});
      if (!done()) setTimeout(() => reject(new Error({json.dumps("timed out: " + expression)})), {int(timeout * 1000)});
    }})"""


def test_a_failed_promise_shows_on_another_nodes_page_within_a_second(
    pushed: list[FleetNode], chromium: Chromium
) -> None:
    hosts = pushed
    names = [n.host.name for n in hosts]
    url = f"http://{hosts[0].host.address}:7948/"
    chromium.navigate(url)
    everyone = " && ".join(f"{_row(n, 'c-revision')} === '1'" for n in names)
    chromium.evaluate(_until(everyone), timeout=30)
    assert chromium.evaluate(_row(names[2], "c-failed")) == "0"
    services = chromium.evaluate(
        f"document.querySelector('tr[data-node=\"{names[2]}\"] .services').textContent"
    )
    assert "ticker<b> running" in services

    # Break host 2's promise; host 0's page must show it.
    victim = hosts[2].root
    (victim / "etc/fail").write_text("")
    failed = _row(names[2], "c-failed") + " === '1'"
    chromium.send("Runtime.evaluate", expression=f"window.failedAt = {_until(failed)}")
    t0 = time.time()
    (victim / "etc/app.conf").write_text("drift\n")
    shown_ms = chromium.evaluate("window.failedAt", timeout=10)
    latency = shown_ms / 1000 - t0
    print(
        f"\nfleet page: host 2's failed promise in host 0's DOM {latency * 1000:.0f} ms after the drift"
    )
    assert latency < 1.0

    # The hostile error text is text: no element made of it, no script run.
    errors = chromium.evaluate(
        f"document.querySelector('tr[data-node=\"{names[2]}\"] .errors').textContent"
    )
    record = chromium.evaluate(f"JSON.stringify(nodes.get('{names[2]}'))")
    assert HOSTILE in errors and "file:/etc/app.conf" in errors, record
    assert chromium.evaluate("document.querySelectorAll('img, b').length") == 0
    assert chromium.evaluate("document.title") == "undistro fleet"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "fleet-page.png"
    chromium.screenshot(str(shot))
    print(f"fleet page screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # A service's logs link explains where they are and how to read them
    # (a node's /logs/ needs an operator's signature, which a browser lacks).
    chromium.evaluate(f"document.querySelector('tr[data-node=\"{names[2]}\"] .svc a').click()")
    assert chromium.evaluate("document.getElementById('logs').open") is True
    where = chromium.evaluate("document.getElementById('logs-url').textContent")
    assert where == f"http://{hosts[2].host.address}:7948/logs/ticker<b>"
    assert "undistro fleet logs ticker<b>" in chromium.evaluate(
        "document.getElementById('logs-cmd').textContent"
    )
    chromium.screenshot(str(ARTIFACTS / "fleet-page-logs.png"))
    chromium.evaluate("document.getElementById('logs-close').click()")
    assert chromium.evaluate("document.getElementById('logs').open") is False

    # Mend it: the next repair shows as kept, with the repair listed.
    (victim / "etc/fail").unlink()
    mended = _row(names[2], "c-failed") + " === '0'"
    chromium.send("Runtime.evaluate", expression=f"window.mended = {_until(mended)}")
    (victim / "etc/app.conf").write_text("drift again\n")
    chromium.evaluate("window.mended", timeout=10)
    assert "file:/etc/app.conf" in chromium.evaluate(_row(names[2], "repairs"))

    # Idle, with the page open: the serving agent makes no system call at
    # all (no timer in the page's stream, nothing polled).
    assert hosts[0].proc is not None
    # First the news settles: the mend's cards and their repeats (2 s), and
    # the end ("done") of the status query the page's opening asked (2 s).
    time.sleep(3.0)
    calls = idle_syscalls(hosts[0].proc.pid, 3.0)
    opens = chromium.evaluate("document.body.dataset.opens")
    assert set(calls) <= WAITS, (calls, f"event stream opened {opens} times")
    assert opens == "1"  # one stream all along: never dropped, never re-polled

    # The page server's Serf killed: its supervisor restarts it, the page's
    # feed follows the new session, and news still reaches the open page.
    serf = hosts[0].serf_pid()
    assert serf is not None
    os.kill(serf, signal.SIGKILL)
    _wait(lambda: hosts[0].serf_pid() not in (None, serf), 20, "serf restarted on host 0")
    (hosts[1].root / "etc/fail").write_text("")
    again = _row(names[1], "c-failed") + " === '1'"
    chromium.send("Runtime.evaluate", expression=f"window.again = {_until(again, 30)}")
    _wait(lambda: _alive(hosts[0]) == 3, 30, "host 0 back in the fleet")
    (hosts[1].root / "etc/app.conf").write_text("drift\n")
    chromium.evaluate("window.again", timeout=30)

    # A node killed outright: Serf's failure detection marks it on the page.
    gone = _row(names[2], "name .failed") + " === 'failed'"
    chromium.send("Runtime.evaluate", expression=f"window.gone = {_until(gone, 30)}")
    hosts[2].kill_all()
    chromium.evaluate("window.gone", timeout=30)

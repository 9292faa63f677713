"""The fleet page: time from a failed promise on one node to the DOM of the
page another node serves, the page's weight, and the RSS it adds to an agent.

    PYTHONPATH=src .venv/bin/python bench/fleet_page.py [--hosts 3] [--runs 10]

Real agents and Serf in network namespaces (the tests' harness, tests/fleet),
headless Chromium in host 0's namespace on host 0's page; each run breaks a
promise on another host (its validator refuses, like the test in
tests/content/test_page_fleet.py), and the page's own MutationObserver
stamps Date.now() when the row changes; the clock starts just before the
write that breaks it. Both clocks are this machine's. Needs root, serf and
chromium.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.content._chromium import Chromium  # noqa: E402
from tests.content.test_page_fleet import POLICY, _row, _until  # noqa: E402
from tests.fleet.netns import namespace_hosts  # noqa: E402
from tests.fleet.test_fleet_hosts import UNDISTRO, FleetNode, _alive, _wait  # noqa: E402


def latency(hosts: int, runs: int) -> dict[str, object]:
    top = Path(tempfile.mkdtemp(prefix="ufp", dir="/tmp"))
    fleet = top / "fleet"
    subprocess.run([UNDISTRO, "fleet", "init", str(fleet)], check=True, capture_output=True)
    policy = top / "policy"
    (policy / "policy").mkdir(parents=True)
    (policy / "undistro.toml").write_text('name = "bench"\n')
    (policy / "policy/main.toml").write_text(POLICY)
    with namespace_hosts(hosts, net=21) as spaces:
        nodes = [FleetNode(h, top, fleet, spaces[0].address, ["web"]) for h in spaces]
        browser = None
        try:
            for node in nodes:
                node.start()
            _wait(lambda: _alive(nodes[0]) == hosts, 60, f"{hosts} alive members")
            out = nodes[0].run("fleet", "push", str(policy), "--fleet", str(fleet))
            assert out.returncode == 0, out.stderr
            _wait(lambda: all((n.root / "etc/app.conf").exists() for n in nodes), 60, "revision 1")
            browser = Chromium(wrap=nodes[0].host.argv())
            url = f"http://{nodes[0].host.address}:7948/"
            browser.navigate(url)
            names = [n.host.name for n in nodes]
            everyone = " && ".join(f"{_row(n, 'c-revision')} === '1'" for n in names)
            browser.evaluate(_until(everyone, 60), timeout=60)
            weight = _weight(nodes[0], url)
            samples: list[float] = []
            parts: list[tuple[float, float]] = []
            for i in range(runs):
                victim = nodes[1 + i % (hosts - 1)]
                name = victim.host.name
                for state, flag in (("1", True), ("0", False)):
                    if flag:
                        (victim.root / "etc/fail").write_text("")
                    else:
                        (victim.root / "etc/fail").unlink()
                    shown = _row(name, "c-failed") + f" === '{state}'"
                    browser.send("Runtime.evaluate", expression=f"window.t = {_until(shown, 20)}")
                    started = time.time()
                    (victim.root / "etc/app.conf").write_text(f"drift {i}\n")
                    try:
                        at = browser.evaluate("window.t", timeout=20) / 1000
                    except RuntimeError:
                        _explain(browser, nodes[0], victim, started)
                        raise
                    if flag:
                        samples.append(at - started)
                        rec = browser.evaluate(f"JSON.stringify(nodes.get('{name}'))")
                        rec = json.loads(rec)
                        # the sender's card time, the server's time of hearing it
                        parts.append((rec["card"]["at"] - started, rec["heard"] - started))
                time.sleep(0.5)  # a window apart: each run is a fresh change
            rss = _rss_kb(nodes[0].proc.pid if nodes[0].proc else 0)
            return {
                "hosts": hosts,
                "runs": runs,
                "failure_to_dom_ms": sorted(round(s * 1000) for s in samples),
                "median_ms": round(statistics.median(samples) * 1000),
                "max_ms": round(max(samples) * 1000),
                # each run: sent (the card's time) and heard (the serving node), ms
                "sent_heard_ms": [(round(a * 1000), round(b * 1000)) for a, b in parts],
                "serving_agent_rss_mb": round(rss / 1024, 1),
                **weight,
            }
        finally:
            if browser is not None:
                browser.close()
            for node in nodes:
                node.stop()
            shutil.rmtree(top, ignore_errors=True)


def _explain(browser: Chromium, server: FleetNode, victim: FleetNode, started: float) -> None:
    """Where a change that never showed was lost: the page, the server, the sender."""
    name = victim.host.name
    print("page has:", browser.evaluate(f"JSON.stringify(nodes.get('{name}'))"), file=sys.stderr)
    url = f"http://{server.host.address}:7948/fleet.json"
    script = "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    got = subprocess.run(server.host.argv(sys.executable, "-c", script, url), capture_output=True)
    nodes = json.loads(got.stdout)["nodes"]
    print("server has:", [n for n in nodes if n["name"] == name], file=sys.stderr)
    print(f"changed at {started:.3f}; sender's log:", file=sys.stderr)
    print(victim.log.read_text()[-1500:], file=sys.stderr)


def _weight(node: FleetNode, url: str) -> dict[str, int]:
    """The page and the first snapshot event, fetched from inside the namespace."""
    script = textwrap.dedent("""
        import json, sys, urllib.request
        page = urllib.request.urlopen(sys.argv[1]).read()
        snap = urllib.request.urlopen(sys.argv[1] + "fleet.json").read()
        print(json.dumps({"page": page.hex(), "snapshot": len(snap)}))
    """)
    out = subprocess.run(
        node.host.argv(sys.executable, "-c", script, url),
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout)
    page = bytes.fromhex(got["page"])
    return {
        "page_bytes": len(page),
        "page_gzip_bytes": len(gzip.compress(page, 9)),
        "snapshot_bytes": int(got["snapshot"]),
    }


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


RSS_PROBE = textwrap.dedent("""
    import asyncio, json, sys
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    import undistro.agent._daemon, undistro.content._http
    base = rss()
    import undistro.content._page  # and _page_state (the fleet member's), _page_html
    from undistro.content._page_state import FleetView, encode_card
    from undistro.content._page_html import page
    imported = rss()
    view = FleetView()
    card = {"revision": 12, "generation": 3, "kept": 240, "repaired": 2, "failed": 1,
            "services_up": 3, "services_failed": 0, "last_error": None, "rss_mb": 26.1,
            "policy": "web", "failing": [["file:/etc/app.conf", "validate: exited 1: " + "x" * 60]],
            "services": {"nginx": "running", "app": "running", "cron": "running"},
            "repairs": [["file:/etc/a.conf", 1.7e9], ["service:app", 1.7e9]]}
    n = int(sys.argv[1])
    for i in range(n):
        view.member(f"node-{i:05d}", "alive", f"10.0.{i // 250}.{i % 250}", {"http": "7948"})
        view.card(encode_card(f"node-{i:05d}", {"at": float(i), **card}), via="event")
    page("node-00000")
    added = {"imports_kb": (imported - base) // 1024, "view_kb": (rss() - imported) // 1024}
    print(json.dumps(added))
""")


def rss_added(nodes: int) -> dict[str, int]:
    """RSS the page's modules and a view of ``nodes`` nodes add to a process
    that already holds the agent and the HTTP face."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, str(nodes)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    return {
        "nodes": nodes,
        "imports_kb": int(statistics.median(r["imports_kb"] for r in runs)),
        "view_kb": int(statistics.median(r["view_kb"] for r in runs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    for tool in ("serf", "chromium", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    print(json.dumps({"rss_added": [rss_added(n) for n in (100, 1000)]}))
    print(json.dumps(latency(args.hosts, args.runs)))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps({"loadavg": load, "when": time.strftime("%H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()

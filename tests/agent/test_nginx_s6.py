"""Debian's real nginx under s6, driven by a real ``undistro agent`` process.

The operator's promises: a fixed config is reloaded (same master pid), a
config nginx rejects never reaches it, kill -9 of the master brings nginx
back on the promised config, and ``undistro services`` tells the same
uptime and readiness as ``s6-svstat``. nginx listens on 127.0.0.1 only, on a
free high port, with its pid, logs and temp files in the test's dir and
``daemon off;``. Everything started is killed at the end: the agent by pid,
then the s6-svscan it started (which takes its supervisors and nginx with it),
then any nginx left, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._services import alive, short_tmp
from tests.agent._nginx import NGINX, free_port, http_get, nginx_conf, nginx_policy
from tests.agent.conftest import AgentProc, run_cli, wait_until
from tests.agent.test_idle import ALLOWED, _settled
from tests.supervisor._idle import idle_syscalls
from undistro.supervisor._s6_status import read_status

CONF = "/etc/web/nginx.conf"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx not installed (.ci/apt/nginx.txt)"),
    pytest.mark.skipif(shutil.which("s6-svscan") is None, reason="s6 not installed"),
]


@dataclass
class Web:
    tmp: Path
    agent: AgentProc
    port: int

    @property
    def run(self) -> Path:
        return self.tmp / "nginx"

    @property
    def svc(self) -> str:
        return f"{self.agent.state_dir}/services/s6/s6/web"

    def conf(self, body: str) -> str:
        return nginx_conf(self.run, self.port, body)

    def policy(self, body: str, *, validate: bool = False, raw_conf: str | None = None) -> None:
        conf = raw_conf if raw_conf is not None else self.conf(body)
        real = self.agent.path(CONF)
        check = (
            f'validate = ["{NGINX}", "-t", "-q", "-e", "/dev/stderr", "-c", "{{path}}"]\n'
            if validate
            else ""
        )
        text = nginx_policy(CONF, real, self.run, conf, "s6", check)
        target = self.agent.policy / "policy" / "main.toml"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        os.rename(tmp, target)

    def get(self) -> str | None:
        return http_get(self.port)

    def up_pid(self) -> int:
        raw = read_status(self.svc)
        return raw.pid if raw is not None and raw.up else 0

    def master(self) -> int:
        pid = self.up_pid()
        assert pid, read_status(self.svc)
        return pid

    def promise(self, rid: str) -> dict[str, Any]:
        return dict(self.agent.status()["resources"].get(rid, {}))


def _nginx_masters(run: Path) -> list[int]:
    """Every nginx master whose command line names this test's files."""
    out = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
            if argv.startswith(b"nginx: master") and str(run).encode() in argv:
                out.append(int(entry))
    return out


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (a master and its workers)."""
    out = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


@pytest.fixture
def web() -> Iterator[Web]:
    with short_tmp() as tmp:
        policy = tmp / "policy"
        (policy / "policy").mkdir(parents=True)
        (policy / "undistro.toml").write_text('name = "nginx-s6"\n')
        agent = AgentProc(policy, tmp / "root", tmp / "agent.log")
        handle = Web(tmp, agent, free_port())
        handle.run.mkdir()
        try:
            yield handle
        finally:
            agent.kill()
            # short_tmp then stops the s6-svscan the agent started (SIGTERM, by
            # its recorded pid): s6 takes nginx down. Anything left goes by pid.
            for pid in _nginx_masters(handle.run):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def _serving(web: Web, body: str, timeout: float = 15) -> None:
    wait_until(lambda: web.get() == body, timeout, f"nginx answering {body!r}")


def test_fixed_config_is_reloaded_and_the_master_keeps_its_pid(web: Web) -> None:
    web.policy("v1")
    web.agent.start()
    _serving(web, "v1")
    master = web.master()
    web.policy("v2")
    _serving(web, "v2")
    assert web.master() == master, "restarted instead of reloaded"
    wait_until(lambda: "refresh: reload service web" in web.agent.log(), what="journalled")
    journal = run_cli("log", "--root", str(web.agent.root), "--resource", "service:web")
    assert "reload" in journal.stdout, journal.stdout
    assert "signal 1 (SIGHUP) received" in (web.run / "error.log").read_text()


def test_kill_9_of_the_master_brings_it_back_on_the_promised_config(web: Web) -> None:
    web.policy("v1")
    web.agent.start()
    _serving(web, "v1")
    web.policy("v2")  # the promise moves on: reloaded, not restarted
    _serving(web, "v2")
    master = web.master()
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: not alive(master), 5, "master gone")
    wait_until(lambda: web.up_pid() not in (0, master), 10, "a new master")
    _serving(web, "v2")
    again = web.master()
    assert again != master
    # the old master's workers went with its process group: one master, one worker
    assert _group(master) == [], "the killed master's workers were left behind"
    assert len(_group(again)) == 2 and _nginx_masters(web.run) == [again]
    status = web.promise("service:web")
    assert status.get("state") != "failed", status


def test_uptime_and_readiness_agree_with_s6_svstat(web: Web) -> None:
    """Reproduction: ``UPTIME -1m45s`` and ``READY no`` for a service s6-svstat
    reports ``up (pid …) 11 seconds`` — from disk (no agent) and from the agent."""
    web.policy("v1")
    result = run_cli("apply", str(web.agent.policy), "--root", str(web.agent.root))
    assert result.returncode == 0, result.stdout + result.stderr
    _serving(web, "v1")
    time.sleep(2.5)

    def check(source: str) -> None:
        listed = run_cli("services", "--root", str(web.agent.root), "--json")
        assert listed.returncode == 0, listed.stderr
        reply = json.loads(listed.stdout)
        assert reply["source"] == source
        row = reply["services"]["web"]
        s6_says = subprocess.run(
            ["s6-svstat", "-o", "up,pid,updownfor", web.svc], capture_output=True, text=True
        ).stdout.split()
        assert s6_says[:2] == ["true", str(row["pid"])], (s6_says, row)
        assert abs(row["uptime"] - int(s6_says[2])) < 1.5, (s6_says, row)
        assert row["ready"] is True and row["phase"] == "running", row
        table = run_cli("services", "--root", str(web.agent.root)).stdout
        line = next(ln for ln in table.splitlines() if ln.startswith("web "))
        assert "-" not in line.split()[3] and " yes " in line, table

    check("disk")
    web.agent.start()  # adopts nginx from s6: same pid, true uptime
    check("agent")


def test_rejected_config_never_reaches_the_daemon(web: Web) -> None:
    """Needs ``[[file]] validate`` (issue 9, the services branch)."""
    web.policy("v1", validate=True)
    web.agent.start()
    _serving(web, "v1")
    master = web.master()
    good = web.agent.path(CONF).read_text()
    hups = (web.run / "error.log").read_text().count("SIGHUP")
    broken = web.conf("v2").replace(
        "worker_processes 1;", "worker_processes 1;\nbogus_directive on;"
    )
    web.policy("v2", validate=True, raw_conf=broken)
    wait_until(lambda: web.promise(f"file:{CONF}").get("state") == "failed", 15, "the file failed")
    error = str(web.promise(f"file:{CONF}").get("error"))
    assert "bogus_directive" in error, error  # nginx's own words
    assert web.agent.path(CONF).read_text() == good, "the rejected config replaced the old one"
    time.sleep(0.5)
    assert web.get() == "v1" and web.master() == master
    assert (web.run / "error.log").read_text().count("SIGHUP") == hups, "reloaded anyway"
    # Fixed: written, then reloaded on the same master.
    web.policy("v3", validate=True)
    _serving(web, "v3")
    assert web.master() == master


def test_tamper_and_kill_9_at_once_comes_back_on_the_promised_config(web: Web) -> None:
    web.policy("v1")
    web.agent.start()
    _serving(web, "v1")
    master = web.master()
    conf = web.agent.path(CONF)
    promised = conf.read_text()
    conf.write_text(web.conf("tampered"))
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: web.up_pid() not in (0, master), 10, "a new master")
    _serving(web, "v1")
    assert conf.read_text() == promised
    time.sleep(1)
    assert web.get() == "v1"
    status = web.promise("service:web")
    assert status.get("state") != "failed", (status, web.agent.log())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (.ci/apt)")
def test_idle_agent_with_nginx_under_s6_makes_no_syscalls(web: Web) -> None:
    web.policy("v1")
    web.agent.start()
    _serving(web, "v1")
    _settled(web.agent)
    calls = idle_syscalls(web.agent.pid, 10)
    extra = {name: n for name, n in calls.items() if name not in ALLOWED}
    assert extra == {}, calls
    # Still listening after being watched: a crash is seen and nginx comes back.
    master = web.master()
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: web.up_pid() not in (0, master), 10, "a new master")
    _serving(web, "v1")

"""The agent's fork server: jobs run forked from a single-threaded zygote,
or exec'd when there is none, with the same statuses, output and deadlines.

Each test runs a real host process (a zygote forked from pytest would copy
pytest), which starts the zygote and runs jobs from a module of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

JOB = """
import os, signal, sys, time
what = sys.argv[1]
if what == "who":
    comm = open("/proc/self/comm").read().strip()
    print(os.getpid(), os.getppid(), comm, *sys.argv[2:])
elif what == "exit":
    sys.exit(int(sys.argv[2]))
elif what == "raise":
    raise RuntimeError("kaput")
elif what == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif what == "sleep":
    print(os.getpid(), flush=True)
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
elif what == "fds":
    print(" ".join(sorted(os.listdir("/proc/self/fd"), key=int)))
"""

HOST_PRELUDE = """
import asyncio, json, os, sys, threading, time
from undistro.agent import _zygote
def job(*args, timeout=30.0, name="ztest-job"):
    try:
        done = _zygote.run_module("ztest_job", list(args), name=name, timeout=timeout)
    except TimeoutError as exc:
        return {"timeout": str(exc)}
    return {"status": done.status, "out": done.out.decode(), "err": done.err.decode()}
def emit(**fields):
    print(json.dumps(fields), flush=True)
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    (tmp_path / "ztest_job.py").write_text(JOB)
    procs: list[subprocess.Popen[str]] = []

    def run(body: str, *, wait: bool = True) -> Any:
        code = HOST_PRELUDE + textwrap.dedent(body)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), SRC])}
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        procs.append(proc)
        if not wait:
            return proc
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_job_is_forked_by_the_zygote_and_named(host: Callable[..., Any]) -> None:
    result = host("""
        started = _zygote.start()
        emit(started=started, job=job("who", "a b", "c"), stats=_zygote.stats(), host=os.getpid())
        _zygote.stop()
    """)
    assert result["started"] is True
    _, parent, comm, *args = result["job"]["out"].split()
    assert int(parent) == result["stats"]["zygote_pid"] != result["host"]
    assert comm == "ztest-job"
    assert args == ["a", "b", "c"]  # sys.argv as `python -m` gives it ("a b" is one word)
    assert result["job"]["status"] == 0
    assert result["stats"]["forked_jobs"] == 1 and result["stats"]["exec_fallbacks"] == 0
    assert result["stats"]["worker_max_rss_bytes"] > 1_000_000
    assert _gone(result["stats"]["zygote_pid"])


def test_statuses_and_errors_come_back_as_from_an_exec(host: Callable[..., Any]) -> None:
    body = (
        'emit(exit=job("exit", "3"), raised=job("raise"), killed=job("kill"), ok=job("exit", "0"))'
    )
    for started in (True, False):
        result = host(("_zygote.start()\n" if started else "") + body + "\n")
        assert result["exit"]["status"] == 3
        assert result["raised"]["status"] == 1
        assert "RuntimeError: kaput" in result["raised"]["err"]
        assert result["killed"]["status"] == -signal.SIGKILL
        assert result["ok"]["status"] == 0


def test_a_job_past_its_deadline_is_killed(host: Callable[..., Any], tmp_path: Path) -> None:
    for started in (True, False):
        mark = tmp_path / f"pid-{started}"
        result = host(
            ("_zygote.start()\n" if started else "")
            + f"t = time.monotonic(); r = job('sleep', {str(mark)!r}, timeout=0.5)\n"
            + "emit(result=r, took=time.monotonic() - t)\n"
        )
        assert "timeout" in result["result"]
        assert result["took"] < 5
        assert _gone(int(mark.read_text()))


def test_the_async_form_reads_on_the_loop_and_keeps_the_deadline(
    host: Callable[..., Any], tmp_path: Path
) -> None:
    mark = tmp_path / "pid"
    result = host(f"""
        _zygote.start()
        async def main():
            done = await _zygote.run_module_async("ztest_job", ["who", "x"], name="ztest-a", timeout=10)
            try:
                await _zygote.run_module_async("ztest_job", ["sleep", {str(mark)!r}], name="z", timeout=0.5)
                late = "no timeout"
            except TimeoutError as exc:
                late = str(exc)
            return done, late
        done, late = asyncio.run(main())
        emit(status=done.status, out=done.out.decode(), late=late, stats=_zygote.stats())
    """)
    assert result["status"] == 0
    assert result["out"].split()[1] == str(result["stats"]["zygote_pid"])
    assert "killed" in result["late"]
    assert _gone(int(mark.read_text()))


def test_no_zygote_once_the_process_has_threads(host: Callable[..., Any]) -> None:
    result = host("""
        t = threading.Thread(target=time.sleep, args=(2,)); t.start()
        started = _zygote.start()
        emit(started=started, job=job("who"), stats=_zygote.stats(), host=os.getpid())
    """)
    assert result["started"] is False
    assert int(result["job"]["out"].split()[1]) == result["host"]  # exec'd by the host itself
    assert result["stats"]["exec_fallbacks"] == 1 and result["stats"]["zygote_pid"] is None


def test_a_dead_zygote_means_exec_not_failure(host: Callable[..., Any]) -> None:
    result = host("""
        import signal
        _zygote.start()
        zygote = _zygote.stats()["zygote_pid"]
        os.kill(zygote, signal.SIGKILL)
        time.sleep(0.2)
        emit(job=job("who"), stats=_zygote.stats(), host=os.getpid(), zygote=zygote)
    """)
    assert result["job"]["status"] == 0
    assert int(result["job"]["out"].split()[1]) == result["host"]
    assert result["stats"]["zygote_pid"] is None and result["stats"]["exec_fallbacks"] == 1
    assert _gone(result["zygote"])


def test_zygote_and_worker_die_with_a_killed_host(host: Callable[..., Any], tmp_path: Path) -> None:
    mark = tmp_path / "pid"
    proc = host(
        f"""
        _zygote.start()
        print(_zygote.stats()["zygote_pid"], flush=True)
        job("sleep", {str(mark)!r}, timeout=60)
        """,
        wait=False,
    )
    zygote = int(proc.stdout.readline())
    deadline = time.monotonic() + 10
    while not mark.exists() or not mark.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    worker = int(mark.read_text())
    try:
        proc.kill()  # SIGKILL: no clean-up
        proc.wait()
        assert _gone(zygote), "the zygote outlived its agent"
        assert _gone(worker), "a worker outlived its zygote"
    finally:
        _kill(worker)
        _kill(zygote)


def test_the_zygote_holds_none_of_the_agents_files(
    host: Callable[..., Any], tmp_path: Path
) -> None:
    result = host(f"""
        held = open({str(tmp_path / "held")!r}, "w")  # a database, a socket...
        _zygote.start()
        zygote = _zygote.stats()["zygote_pid"]
        emit(zygote_fds=sorted(os.listdir(f"/proc/{{zygote}}/fd"), key=int),
             targets=[os.readlink(f"/proc/{{zygote}}/fd/{{fd}}") for fd in os.listdir(f"/proc/{{zygote}}/fd")],
             held=held.fileno(), job=job("fds"))
    """)
    assert str(tmp_path / "held") not in result["targets"]
    assert len(result["zygote_fds"]) == 6  # stdio, its socket, its SIGCHLD wake-up pipe
    assert result["job"]["out"].split() == ["0", "1", "2", "3"]  # stdio (+ listdir's own)

"""A fork server: the agent's short-lived children without a new interpreter.

A policy compile (``undistro.agent._compile``) and a fleet revision's
fetch-and-verify (``undistro.fleet._child``) run in children that may die,
hang or blow up without hurting the agent. Exec'ing ``python -m MODULE``
for each costs a fresh interpreter that imports undistro again: ~0.08 CPU-s
for a compile of a one-file policy, ~0.2 CPU-s for a fetch, paid per node per
revision. ``fork()`` from the agent would skip that, but the agent is
threaded by then (passes and compiles run in worker threads), and a fork
copies whatever locks other threads hold — a module being imported, a
buffer being written — into a child that may then wait on them for ever.

So the agent forks one *zygote* at start, while it still has a single
thread: it holds a copy of the agent's imported modules (shared copy-on-write
with the agent: ~1 MB of its own) and nothing else — it closes every
inherited fd, freezes the garbage collector, and blocks in ``recvmsg``.
Asked to run ``MODULE ARGS``, it forks a *worker* that runs the module as
``python -m MODULE ARGS`` would (``runpy``, ``sys.argv``, the exit status)
with stdout and stderr on pipes the agent passed along, reaps it, and
writes its exit status to a third pipe. A worker starts in ~1 ms with
undistro already imported; it imports only what its job needs.

Both die with the agent (``PR_SET_PDEATHSIG``: the zygote with the agent, a
worker with the zygote). Without a zygote (not started, or dead: it is never
restarted, the agent being threaded by then) a job falls back to fork+exec
of ``python -m MODULE``, the same program with the same protocol. Deadlines
and memory caps are the job's own business, as they were before.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_NAME = b"undistro-forks"  # the zygote's comm (ps, top); its cmdline is the agent's
_SPAWN_TIMEOUT = 5.0  # the zygote answers in ~1 ms; past this it is wedged
_MAX_REQUEST = 64 * 1024
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass(frozen=True)
class Finished:
    """How a job ended: its exit status (negative: killed by that signal;
    None: no one saw it end), and everything it wrote."""

    status: int | None
    out: bytes
    err: bytes
    max_rss: int = 0  # bytes, when the zygote reaped it


class _Server:
    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock, self.pid = sock, pid
        self.lock = threading.Lock()  # one request and its answer at a time
        self.jobs = 0
        self.max_rss = 0  # bytes: the largest worker's peak, from wait4


_server: _Server | None = None
_in_worker = False
_fallbacks = 0


def start() -> bool:
    """Fork the zygote now; False (jobs will exec) unless this process has
    exactly one thread, the only moment a fork copies no one's locks."""
    global _server
    if _server is not None:
        return True
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        return False
    agent_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    agent_end.set_inheritable(False)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # else both processes would flush what was buffered
    agent = os.getpid()
    # Objects alive now are shared with the zygote; frozen, the agent's
    # collector never writes their headers (which would copy their pages).
    gc.collect()
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the zygote: never returns
        try:
            agent_end.close()
            _zygote(zygote_end, agent)
        finally:
            os._exit(70)
    zygote_end.close()
    agent_end.settimeout(_SPAWN_TIMEOUT)
    try:
        ready = agent_end.recv(16) == b"ready"  # set up: it holds none of our fds now
    except OSError:
        ready = False
    if not ready:
        agent_end.close()
        _kill(pid)
        _reap(pid)
        return False
    _server = _Server(agent_end, pid)
    return True


def stop() -> None:
    """End the zygote (it exits when its socket closes) and reap it."""
    global _server
    server, _server = _server, None
    if server is None:
        return
    server.sock.close()
    _reap(server.pid)


def stats() -> dict[str, object]:
    """The zygote's pid, jobs forked and exec'd, the largest worker's peak
    RSS, and the CPU seconds of the zygote and the workers it reaped."""
    server = _server
    return {
        "zygote_pid": server.pid if server else None,
        "forked_jobs": server.jobs if server else 0,
        "exec_fallbacks": _fallbacks,
        "worker_max_rss_bytes": worker_max_rss(),
        "cpu_s": _cpu_s(server.pid) if server else 0.0,
    }


def worker_max_rss() -> int:
    """Bytes: the largest peak RSS of a worker the zygote forked."""
    return _server.max_rss if _server is not None else 0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    # utime stime cutime cstime: fields 14-17 of proc(5), 3 being the first after ")"
    return round(sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK"), 2)


def in_worker() -> bool:
    """True in a job the zygote forked (its parent is the zygote, which dies
    with the agent: no need to check for the agent itself)."""
    return _in_worker


def run_module(
    module: str,
    args: Sequence[str],
    *,
    name: str,
    timeout: float,
    started: Callable[[int], None] | None = None,
    ended: Callable[[int], None] | None = None,
) -> Finished:
    """Run ``python -m module *args`` (forked by the zygote when there is
    one), wait for it; TimeoutError (it was killed) past ``timeout`` s.

    ``name`` is the worker's comm (15 bytes at most, for ps). ``started``
    and ``ended`` are told its pid, so that someone else may kill it.
    """
    forked = _spawn(module, args, name)
    if forked is None:
        return _exec(module, args, timeout=timeout, started=started, ended=ended)
    pid, fds = forked
    if started is not None:
        started(pid)
    try:
        return _noted(_collect(pid, fds, time.monotonic() + timeout))
    finally:
        if ended is not None:
            ended(pid)


async def run_module_async(
    module: str, args: Sequence[str], *, name: str, timeout: float
) -> Finished:
    """:func:`run_module` for the event loop: the pipes are read by the loop."""
    forked = _spawn(module, args, name)
    if forked is None:
        return await _exec_async(module, args, timeout=timeout)
    pid, fds = forked
    loop = asyncio.get_running_loop()
    chunks: list[list[bytes]] = [[], [], []]
    done = loop.create_future()
    open_fds = set(fds)

    def readable(i: int, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            chunks[i].append(data)
            return
        loop.remove_reader(fd)
        open_fds.discard(fd)
        if not open_fds and not done.done():
            done.set_result(None)

    for i, fd in enumerate(fds):
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable, i, fd)
    try:
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            _kill(pid)
            await done  # the pipes close as it dies, the status follows
            raise TimeoutError(f"{module} ran past {timeout:g} s (killed)") from None
    finally:
        if not done.done():
            _kill(pid)  # cancelled: the job must not outlive its caller
        for fd in fds:
            if fd in open_fds:
                loop.remove_reader(fd)
            os.close(fd)
    return _noted(_finished(chunks))


# -- the agent's side ---------------------------------------------------------


def _spawn(module: str, args: Sequence[str], name: str) -> tuple[int, list[int]] | None:
    """Ask the zygote for a worker: its pid and the read ends of its stdout,
    stderr and status pipes. None when there is no (working) zygote."""
    global _server, _fallbacks
    server = _server
    if server is None:
        _fallbacks += 1
        return None
    request = json.dumps({"module": module, "args": list(args), "name": name}).encode()
    pipes = [os.pipe() for _ in range(3)]
    try:
        with server.lock:
            socket.send_fds(server.sock, [request], [w for _, w in pipes])
            answer = server.sock.recv(256)
        pid = int(json.loads(answer)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        # Dead or wedged: never used again (a new one cannot be forked safely
        # now that the agent has threads); this job and the next ones exec.
        if _server is server:
            _server = None
        with contextlib.suppress(OSError):
            server.sock.close()
        _kill(server.pid)
        _reap(server.pid)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        _fallbacks += 1
        return None
    for _, w in pipes:
        os.close(w)
    server.jobs += 1
    return pid, [r for r, _ in pipes]


def _collect(pid: int, fds: list[int], deadline: float) -> Finished:
    chunks: list[list[bytes]] = [[], [], []]
    index = {fd: i for i, fd in enumerate(fds)}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    killed = False
    try:
        while index:
            left = deadline - time.monotonic()
            if left <= 0 and not killed:
                _kill(pid)  # its pipes close as it dies; read them out
                killed = True
            wait = None if killed else max(0, int(left * 1000) + 1)
            for fd, _ in poller.poll(wait):
                data = os.read(fd, 65536)
                if data:
                    chunks[index[fd]].append(data)
                else:
                    poller.unregister(fd)
                    del index[fd]
    finally:
        for fd in fds:
            os.close(fd)
    if killed:
        raise TimeoutError("killed at its deadline")
    return _finished(chunks)


def _finished(chunks: list[list[bytes]]) -> Finished:
    # The zygote writes "STATUS MAXRSS_KB" once it has reaped the worker.
    words = b"".join(chunks[2]).split()
    try:
        status, rss = int(words[0]), int(words[1]) * 1024
    except (IndexError, ValueError):
        status, rss = None, 0
    return Finished(status, b"".join(chunks[0]), b"".join(chunks[1]), rss)


def _noted(done: Finished) -> Finished:
    server = _server
    if server is not None:
        server.max_rss = max(server.max_rss, done.max_rss)
    return done


def _exec_argv(module: str, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
    return [sys.executable, "-m", module, *args], env


def _exec(
    module: str,
    args: Sequence[str],
    *,
    timeout: float,
    started: Callable[[int], None] | None,
    ended: Callable[[int], None] | None,
) -> Finished:
    argv, env = _exec_argv(module, args)
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    if started is not None:
        started(proc.pid)
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise TimeoutError("killed at its deadline") from None
    finally:
        if ended is not None:
            ended(proc.pid)
    return Finished(proc.returncode, out, err)


async def _exec_async(module: str, args: Sequence[str], *, timeout: float) -> Finished:
    argv, env = _exec_argv(module, args)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{module} ran past {timeout:g} s (killed)") from None
    return Finished(proc.returncode, out, err)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    # The supervisor's orphan reaper may have taken it (the zygote is in a
    # process group of its own, so it counts as an orphan there).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# -- the zygote and its workers (single-threaded, never return) ---------------


def _zygote(sock: socket.socket, agent: int) -> None:
    die_with(agent)
    os.setpgid(0, 0)  # out of the agent's group: Ctrl-C and the orphan reaper
    gc.freeze()  # the agent's objects are never scanned here: no copy-on-write
    signal.set_wakeup_fd(-1)  # the agent's event loop's, not ours
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    _set_name(_NAME)
    wake_r, wake_w = os.pipe()
    keep = {0, 1, 2, sock.fileno(), wake_r, wake_w}
    for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)  # the agent's sockets, database, inotify: not ours
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes poll() via wake_w
    statuses: dict[int, int] = {}  # worker pid → its status pipe
    me = os.getpid()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    sock.send(b"ready")
    while True:
        try:
            ready = [fd for fd, _ in poller.poll()]
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        _reap_workers(statuses)
        if sock.fileno() not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 3)
        except OSError:
            os._exit(0)
        if not message:
            os._exit(0)  # the agent closed its end (or died)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            sock.send(b'{"error": "three pipes expected"}')
            continue
        job = json.loads(message)
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.close(fds[2])
            for fd in (wake_r, wake_w):
                os.close(fd)
            _worker(job, fds[0], fds[1], me)
        os.close(fds[0])
        os.close(fds[1])
        statuses[pid] = fds[2]
        sock.send(json.dumps({"pid": pid}).encode())


def _reap_workers(statuses: dict[int, int]) -> None:
    while statuses:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}".encode())
            os.close(fd)


def _worker(job: dict[str, object], out: int, err: int, zygote: int) -> None:
    global _in_worker
    import runpy
    import traceback

    code = 1
    try:
        _in_worker = True
        die_with(zygote)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a job's own subprocesses are waited for
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (devnull, out, err):
            os.close(fd)
        _set_name(str(job["name"]).encode()[:15])
        module = str(job["module"])
        args = job["args"]
        sys.argv = [module, *(str(a) for a in args)] if isinstance(args, list) else [module]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                sys.stderr.write(f"{exc.code}\n")
        except BaseException:
            sys.stderr.write(traceback.format_exc())
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(code)


def die_with(parent: int) -> None:
    """SIGKILL us when ``parent`` dies (a kill -9 must not leave a child
    blocked on a FIFO for ever); exit now if it died while we started."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _set_name(name: bytes) -> None:
    import ctypes

    pr_set_name = 15
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_name, ctypes.c_char_p(name[:15]))

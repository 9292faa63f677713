"""A small real service for tests, and a reaper that kills every one started.

``service_cmd(tmp, mode, ...)`` gives the argv of a Python program that
records its pid in ``tmp/pids`` (so the test can kill it whatever happens),
prints the config file it was told to read, optionally waits, then says
READY=1 on ``$NOTIFY_SOCKET`` and behaves as ``mode`` says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SCRIPT = r"""
import os, signal, socket, sys, time
mode, pids, delay, config = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
open(os.path.join(pids, str(os.getpid())), "w").close()
signal.signal(signal.SIGHUP, lambda *_: print("reloaded", flush=True))
if config != "-":
    with open(config) as f:
        print("config:", f.read().strip(), flush=True)
print("started", os.getpid(), flush=True)
if mode == "crash":
    time.sleep(delay)
    sys.exit(1)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        open(os.path.join(pids, str(os.getpid())), "w").close()
        while True:
            time.sleep(1000)
time.sleep(delay)
if os.environ.get("NOTIFY_SOCKET"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:  # as sd_notify does: no supervisor listening is not an error
        s.connect(os.environ["NOTIFY_SOCKET"])
        s.send(b"READY=1\nSTATUS=serving")
    except OSError:
        pass
    s.close()
print("ready", flush=True)
while True:
    time.sleep(1000)
"""


def service_cmd(tmp: Path, mode: str = "serve", delay: float = 0.0, config: str = "-") -> str:
    """A TOML array literal: the argv of the test service."""
    script = tmp / "svc.py"
    if not script.exists():
        script.write_text(SCRIPT)
    pids = tmp / "pids"
    pids.mkdir(exist_ok=True)
    argv = [sys.executable, str(script), mode, str(pids), str(delay), config]
    return "[" + ", ".join(f'"{a}"' for a in argv) + "]"


def started(tmp: Path) -> list[int]:
    """Pids of every service process started so far, oldest first."""
    pids = tmp / "pids"
    if not pids.exists():
        return []
    return sorted(
        (int(p.name) for p in pids.iterdir()), key=lambda p: (pids / str(p)).stat().st_mtime_ns
    )


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # A process reaped between the open and the read says ESRCH.
        return False


def kill_all(tmp: Path, state_dir: str | None = None) -> None:
    """SIGKILL every service process (and its group) a test started, and an
    s6-svscan it made (SIGTERM: it takes its supervisors with it)."""
    if state_dir is not None:
        pidfile = Path(state_dir) / "services" / "s6" / "s6-svscan.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            svscan = int(pidfile.read_text())
            os.kill(svscan, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(svscan) and time.monotonic() < deadline:
                time.sleep(0.05)
    for pid in started(tmp):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    """A temp dir under /tmp with a short name (a notify socket's path must
    fit in 107 bytes; pytest's tmp_path does not) and ``root/`` in it; on
    exit every service process started there is killed and the dir removed."""
    tmp = Path(tempfile.mkdtemp(prefix="usv-", dir="/tmp"))
    (tmp / "root").mkdir()
    try:
        yield tmp
    finally:
        kill_all(tmp, str(tmp / "root" / "var" / "lib" / "undistro"))
        shutil.rmtree(tmp, ignore_errors=True)


def wait_started(tmp: Path, count: int = 1, timeout: float = 10) -> list[int]:
    """Wait (tests may poll) until ``count`` service processes have started."""
    deadline = time.monotonic() + timeout
    while len(pids := started(tmp)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pids)} of {count} service processes started")
        time.sleep(0.02)
    return pids


NGINX = "/usr/sbin/nginx"


def free_port() -> int:
    """A free TCP port on loopback (high, chosen by the kernel)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """Debian's real nginx as a ``[[service]]``: loopback only, a free port,
    its pid, logs and temp files under ``prefix`` (the test's tmp dir).

    The config (``conf``, a policy path) answers ``GET /`` with a body, so
    what is served says which config the running master has loaded.
    """

    def __init__(self, tmp: Path, root: Path) -> None:
        self.prefix = tmp / "ngx"
        self.prefix.mkdir(exist_ok=True)
        self.root = root
        self.port = free_port()
        self.conf = "/etc/ngx/nginx.conf"
        conf_dir = root / "etc" / "ngx"
        conf_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy("/etc/nginx/mime.types", conf_dir / "mime.types")  # a relative include
        # notice: nginx logs each SIGHUP it gets ("signal 1 (SIGHUP) received"), so a test
        # can tell from nginx itself whether it was reloaded.
        self.globals = f"pid {self.prefix}/nginx.pid; error_log {self.prefix}/error.log notice;"

    def config(self, body: str, extra: str = "") -> str:
        """A realistic nginx.conf (relative include, temp paths) serving ``body``."""
        temps = "\n".join(
            f"    {kind}_temp_path {self.prefix}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "worker_processes 1;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    include mime.types;\n"
            "    access_log off;\n"
            f"{temps}\n"
            f"    server {{ listen 127.0.0.1:{self.port};\n"
            f'        location / {{ default_type text/plain; return 200 "{body}\\n"; }} }}\n'
            f"{extra}"
            "}\n"
        )

    def argv(self) -> list[str]:
        conf = str(self.root) + self.conf
        return [NGINX, "-p", str(self.prefix), "-c", conf, "-g", f"daemon off; {self.globals}"]

    def validate(self) -> list[str]:
        return [NGINX, "-t", "-q", "-p", str(self.prefix), "-g", self.globals, "-c", "{path}"]

    def tables(self, body: str, *, service_extra: str = "", file_extra: str = "") -> str:
        """The policy: the config file (validated, notifying) and the service."""
        import json

        content = json.dumps(self.config(body))
        return (
            f'[[file]]\npath = "{self.conf}"\ncontent = {content}\nmode = "0644"\n'
            f"validate = {json.dumps(self.validate())}\n"
            f'notify = ["service:nginx"]\n{file_extra}\n'
            f'[[service]]\nname = "nginx"\ncommand = {json.dumps(self.argv())}\n'
            'on_notify = "reload"\nrestart_delay = 0.1\n'
            f'requires = ["file:{self.conf}"]\n{service_extra}'
        )

    def get(self, timeout: float = 2) -> str | None:
        """The body served on ``/``, or None if nothing answers."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=timeout) as r:
                return str(r.read().decode().strip())
        except OSError:
            return None

    def reloads(self) -> int:
        """How many reloads nginx itself has logged."""
        try:
            return (self.prefix / "error.log").read_text().count("(SIGHUP) received")
        except FileNotFoundError:
            return 0

    def master(self) -> int | None:
        try:
            return int((self.prefix / "nginx.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL every master started on this prefix, with its process group
        (the workers): found by pid file and by command line."""
        masters = {self.master()} | set(self.pids())
        for pid in masters - {None}:
            assert pid is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """Live processes whose command line names this prefix (masters)."""
        found = []
        mark = str(self.prefix).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if mark in f.read() and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
        return found

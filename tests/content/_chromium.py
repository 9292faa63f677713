"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

The protocol goes over a pipe (``--remote-debugging-pipe``: fds 3 and 4,
JSON messages ended by NUL), not a port: no websocket library, and it
works unchanged when Chromium runs inside a test host's network namespace
(``ip netns exec``), where a debugging port on the namespace's loopback
would not be reachable from the test.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",  # root: Chromium's sandbox refuses to run as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1400,700",
    "--remote-debugging-pipe",
)


class Chromium:
    """One browser with one page; ``close()`` ends it (by pid)."""

    def __init__(self, wrap: Sequence[str] = ()) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            pytest.skip("chromium is not installed (Debian chromium; .ci/apt/content-page.txt)")
        self.profile = tempfile.mkdtemp(prefix="udchrome")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4: a
        # shell puts the pipe ends there, whatever numbers they have here.
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        with open(os.path.join(self.profile, "stderr.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [*wrap, "bash", "-c", f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-', binary,
                 *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                pass_fds=(r, w),
                start_new_session=True,  # its helpers share its process group: killed together
            )  # fmt: skip
        os.close(r)
        os.close(w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    # -- the protocol ---------------------------------------------------------

    def call(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        """A browser-level command (no session)."""
        return self._call(method, params, None, timeout)

    def send(self, method: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        """A command to the page."""
        return self._call(method, params, self.session, timeout)

    def _call(
        self, method: str, params: dict[str, Any], session: str | None, timeout: float
    ) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited: {self.stderr()[-800:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        value: dict[str, Any] = json.loads(message)
        return value

    # -- what the tests use ---------------------------------------------------

    def navigate(self, url: str, timeout: float = 20.0) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str, timeout: float = 20.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate",
            timeout=timeout + 1,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def stderr(self) -> str:
        try:
            with open(os.path.join(self.profile, "stderr.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

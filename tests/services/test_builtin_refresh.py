"""The builtin backend's part in refreshes: a reload owed to a service that
is about to restart is satisfied by that restart; a spec change that leaves
the process alone is taken in place."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.supervisor.builtin_harness import Harness, poll
from undistro.errors import ApplyError
from undistro.supervisor import BuiltinBackend, Phase, ServiceSpec


def test_a_reload_during_backoff_is_satisfied_by_the_pending_restart(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("web", ("sleep", "1000"), restart_delay=0.5)
            first = await sup.start(spec)
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            await h.until(lambda: sup.status("web").phase is Phase.BACKOFF)  # type: ignore[union-attr]
            status = await sup.reload("web")  # no process to signal: the start is the reload
            assert status.phase is Phase.BACKOFF
            assert h.causes("web")[-1] == "reload satisfied by the pending restart"
            await h.until(lambda: sup.status("web").phase is Phase.RUNNING)  # type: ignore[union-attr]
            await sup.stop("web")
            with pytest.raises(ApplyError, match="not running"):
                await sup.reload("web")  # stopped on purpose: no start is coming
            assert h.causes("web")[-1] == "reload failed: not running (stopped)"

        h.run(body)


def test_only_process_fields_restart_a_running_service(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("web", ("sleep", "1000"))
            pid = (await sup.start(spec)).pid
            calmer = ServiceSpec(
                "web",
                ("sleep", "1000"),
                reload_signal="SIGUSR1",
                restart="always",
                restart_delay=2.0,
                stop_timeout=3.0,
                log_keep=1,
            )
            assert (await sup.start(calmer)).pid == pid
            assert h.causes("web")[-1] == "spec updated in place"
            # the new policy is the one in force: its restart_delay applies
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
            await h.until(lambda: sup.status("web").phase is Phase.BACKOFF)  # type: ignore[union-attr]
            assert "restart in 2s" in h.causes("web")[-1]
            changed = ServiceSpec("web", ("sleep", "999"), restart_delay=0.05)
            status = await sup.start(changed)
            assert status.pid is not None and status.pid != pid
            await sup.stop("web")
            await asyncio.sleep(0)
            assert await poll(lambda: sup.status("web").pid is None)  # type: ignore[union-attr]

        h.run(body)

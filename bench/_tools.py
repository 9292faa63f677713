"""How each compared tool is run: its command, environment and private state.

Every tool keeps its state (locks, caches, reports, keys) in a directory of
the run, never the host's, so each repetition starts truly fresh and the
host's own CFEngine/Puppet/Ansible set-up is neither used nor disturbed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


def clean_environ() -> dict[str, str]:
    """This environment without the PYTHON* settings a session may carry.

    PYTHONUNBUFFERED makes every printed line a write(2) and
    PYTHONDONTWRITEBYTECODE makes every run compile its modules again: no
    deployed agent runs like that, and both would bill Python tools (undistro,
    Ansible) for a shell's habits. PYTHONPATH stays: it selects undistro's tree.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") or k == "PYTHONPATH"}


@dataclass(frozen=True)
class Tool(ABC):
    """A compared tool. `max_n` is the largest N it is run at by default."""

    name: str
    max_n: int | None = None

    @abstractmethod
    def command(self, entry: Path, root: Path, state: Path) -> list[str]:
        """The one-shot run that converges root on the policy at entry."""

    @abstractmethod
    def check_command(self, entry: Path, state: Path) -> list[str]:
        """The tool's own parser run on the policy without applying it."""

    def env(self, state: Path) -> dict[str, str]:
        return clean_environ()

    def prepare(self, state: Path) -> None:
        """Set up the tool's private state directory before its first run."""
        state.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def version_command(self) -> list[str]:
        """What prints the tool's version on its first line."""

    def version(self) -> str:
        try:
            out = subprocess.run(
                self.version_command(), capture_output=True, text=True, timeout=60, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"unavailable ({exc})"
        return out.strip().splitlines()[0] if out.strip() else "unknown"


@dataclass(frozen=True)
class Undistro(Tool):
    """undistro apply; its state goes under the root (ROOT/var/lib/undistro).

    `--no-diff`: the peers print at most a line per change (Puppet) or
    nothing (CFEngine), never the new files' contents.
    """

    prefix: tuple[str, ...] = ("undistro",)

    @classmethod
    def from_command(cls, text: str) -> Undistro:
        return cls("undistro", prefix=tuple(shlex.split(text)))

    def command(self, entry: Path, root: Path, state: Path) -> list[str]:
        return [*self.prefix, "apply", "--no-diff", str(entry), "--root", str(root)]

    def check_command(self, entry: Path, state: Path) -> list[str]:
        return [*self.prefix, "plan", "--no-diff", str(entry), "--root", str(state)]

    def version_command(self) -> list[str]:
        return [*self.prefix, "--version"]


@dataclass(frozen=True)
class CFEngine(Tool):
    """cf-agent -K (no locks) on promises.cf, with a private work directory.

    CFENGINE_TEST_OVERRIDE_WORKDIR is the variable CFEngine's own test suite
    uses to move /var/lib/cfengine3; the work directory needs a key pair and
    a bin/ holding cf-promises, as the Debian package's has.
    """

    def command(self, entry: Path, root: Path, state: Path) -> list[str]:
        return ["cf-agent", "-K", "-f", str(entry)]

    def check_command(self, entry: Path, state: Path) -> list[str]:
        return ["cf-promises", "-f", str(entry)]

    def env(self, state: Path) -> dict[str, str]:
        return {**clean_environ(), "CFENGINE_TEST_OVERRIDE_WORKDIR": str(state)}

    def prepare(self, state: Path) -> None:
        super().prepare(state)
        (state / "bin").symlink_to("/usr/bin")
        subprocess.run(["cf-key"], env=self.env(state), capture_output=True, timeout=60, check=True)

    def version_command(self) -> list[str]:
        return ["cf-agent", "--version"]


@dataclass(frozen=True)
class Puppet(Tool):
    """puppet apply on a manifest directory, every puppet directory private."""

    def command(self, entry: Path, root: Path, state: Path) -> list[str]:
        return ["puppet", "apply", *self._dirs(state), "--color=false", str(entry)]

    def check_command(self, entry: Path, state: Path) -> list[str]:
        return ["puppet", "parser", "validate", *self._dirs(state), *map(str, entry.glob("*.pp"))]

    @staticmethod
    def _dirs(state: Path) -> list[str]:
        return [f"--{d}={state / d}" for d in ("confdir", "vardir", "codedir", "logdir", "rundir")]

    def version_command(self) -> list[str]:
        return ["puppet", "--version"]


@dataclass(frozen=True)
class Ansible(Tool):
    """ansible-playbook over the local connection, ~/.ansible made private."""

    def command(self, entry: Path, root: Path, state: Path) -> list[str]:
        return ["ansible-playbook", "-c", "local", "-i", "localhost,", str(entry)]

    def check_command(self, entry: Path, state: Path) -> list[str]:
        return ["ansible-playbook", "--syntax-check", "-i", "localhost,", str(entry)]

    def env(self, state: Path) -> dict[str, str]:
        return {
            **clean_environ(),
            "HOME": str(state),
            "ANSIBLE_LOCAL_TEMP": str(state / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(state / "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }

    def version_command(self) -> list[str]:
        return ["ansible-playbook", "--version"]


def peers() -> dict[str, Tool]:
    """The peers by name. Ansible needs ~0.3 s per file, hence N <= 100."""
    return {
        "cfengine": CFEngine("cfengine"),
        "puppet": Puppet("puppet"),
        "ansible": Ansible("ansible", max_n=100),
    }

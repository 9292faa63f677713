"""Shared fixtures: a policy written into a temp dir, a temp root, the CLI."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from undistro.cli import main


class PolicyDir:
    """A policy directory under tmp_path, written file by file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.write("undistro.toml", 'name = "test"\n')

    def write(self, rel: str, text: str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
        return target

    def resources(self, text: str, rel: str = "policy/main.toml") -> Path:
        return self.write(rel, text)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


@pytest.fixture
def policy(tmp_path: Path) -> PolicyDir:
    return PolicyDir(tmp_path / "policy")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``undistro ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
        try:
            code = main([os.fspath(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def fleet(tmp_path: Path, cli: RunCli) -> Path:
    """A new fleet's keys and root (``undistro fleet init``), in tmp_path/fleet."""
    path = tmp_path / "fleet"
    code, out, err = cli("fleet", "init", path)
    assert (code, err) == (0, ""), err
    assert "undistro fleet trust" in out
    return path


def trusting_state(path: Path, fleet: Path) -> Path:
    """A node state directory that trusts ``fleet``'s first root."""
    from undistro.fleet._receive import install_root

    install_root(str(path), (fleet / "repo/metadata/1.root.json").read_bytes())
    return path


# --- Skips under CI -------------------------------------------------------
# A test whose real component is missing must fail in CI, where the project's
# own setup installs every component: a green run that skipped the builds or
# the daemons proves nothing. Only a stated limit of the machine may skip;
# its reason starts with MACHINE_LIMIT and is listed at the end of the run.

MACHINE_LIMIT = "machine limit:"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if reason.startswith(MACHINE_LIMIT):
        item.config.stash.setdefault(_limits_key, []).append((item.nodeid, reason))
    elif _in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true: skipped for a missing component, which CI must install "
            f"(.ci/apt/*.txt, make test): {reason}"
        )


_limits_key = pytest.StashKey[list[tuple[str, str]]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    # A module-level skip (allow_module_level) never reaches makereport.
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    reason = _skip_reason(report)  # type: ignore[arg-type]
    if report.skipped and _in_ci() and not reason.startswith(MACHINE_LIMIT):
        report.outcome = "failed"
        report.longrepr = f"CI=true: module skipped for a missing component: {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    limits = terminalreporter.config.stash.get(_limits_key, [])
    if limits:
        terminalreporter.section(f"skipped for a limit of this machine: {len(limits)}")
        for nodeid, reason in limits:
            terminalreporter.line(f"{nodeid}: {reason}")

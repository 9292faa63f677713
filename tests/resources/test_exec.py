from __future__ import annotations

from pathlib import Path

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses


def test_creates_guard_runs_once(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[exec]]
        name = "init"
        command = ["sh", "-c", "echo done > marker; echo ran"]
        creates = "/marker"
        """
    )
    summary = converge(policy, root)
    assert statuses(summary) == {"exec:init": "repaired"}
    assert summary.results["exec:init"].output == "ran\n"
    assert (root / "marker").read_text() == "done\n"
    assert statuses(converge(policy, root)) == {"exec:init": "kept"}


def test_unless_and_onlyif(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[exec]]
        name = "skipped-by-unless"
        command = "touch a"
        unless = "true"

        [[exec]]
        name = "skipped-by-onlyif"
        command = "touch b"
        onlyif = "false"

        [[exec]]
        name = "runs"
        command = "touch c"
        onlyif = "true"
        unless = "false"
        """
    )
    assert statuses(converge(policy, root)) == {
        "exec:skipped-by-unless": "kept",
        "exec:skipped-by-onlyif": "kept",
        "exec:runs": "repaired",
    }
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["c"]


def test_failure_reports_exit_code_and_last_line(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[exec]]\nname = "bad"\ncommand = ["sh", "-c", "echo boom >&2; exit 3"]\n')
    summary = converge(policy, root)
    assert summary.results["exec:bad"].status == "failed"
    assert summary.results["exec:bad"].error == "run sh -c 'echo boom >&2; exit 3': exited 3: boom"


def test_returns_and_missing_command(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[exec]]
        name = "three-is-fine"
        command = ["sh", "-c", "exit 3"]
        returns = [0, 3]

        [[exec]]
        name = "missing"
        command = ["/nonexistent/tool"]
        """
    )
    summary = converge(policy, root)
    assert summary.results["exec:three-is-fine"].status == "repaired"
    assert "command not found: /nonexistent/tool" in (summary.results["exec:missing"].error or "")


def test_timeout(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[exec]]\nname = "slow"\ncommand = ["sleep", "5"]\ntimeout = 1\n')
    summary = converge(policy, root)
    assert summary.results["exec:slow"].error == "run sleep 5: timed out after 1 s"


def test_refreshonly_runs_only_when_notified(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[file]]
        path = "/etc/app.conf"
        content = "v1"
        notify = ["exec:reload"]

        [[exec]]
        name = "reload"
        command = "sh -c 'echo reload >> reloads'"
        refreshonly = true
        """
    )
    first = converge(policy, root)
    assert first.results["exec:reload"].status == "repaired"
    assert first.results["exec:reload"].refreshed
    assert statuses(converge(policy, root))["exec:reload"] == "kept"
    (root / "etc/app.conf").write_text("drift")
    converge(policy, root)
    assert (root / "reloads").read_text() == "reload\nreload\n"

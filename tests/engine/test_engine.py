"""Ordering, failure isolation, notifications, concurrency, dry runs."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses


def test_order_follows_requires_before_and_implicit_edges(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[file]]
        path = "/srv/app/conf"
        content = "x"

        [[exec]]
        name = "last"
        command = "true"
        requires = ["file:/srv/app/conf"]

        [[exec]]
        name = "first"
        command = "true"
        before = ["directory:/srv/app"]

        [[directory]]
        path = "/srv/app"
        """
    )
    order = list(converge(policy, root).results)
    assert order.index("exec:first") < order.index("directory:/srv/app")
    assert order.index("directory:/srv/app") < order.index(
        "file:/srv/app/conf"
    )  # implicit parent edge
    assert order.index("file:/srv/app/conf") < order.index("exec:last")


def test_failure_skips_only_its_dependents(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[exec]]
        name = "broken"
        command = "false"

        [[file]]
        path = "/needs-broken"
        content = "x"
        requires = ["exec:broken"]

        [[file]]
        path = "/needs-needs-broken"
        content = "x"
        requires = ["file:/needs-broken"]

        [[file]]
        path = "/independent"
        content = "x"
        """
    )
    summary = converge(policy, root)
    assert statuses(summary) == {
        "exec:broken": "failed",
        "file:/independent": "repaired",
        "file:/needs-broken": "skipped",
        "file:/needs-needs-broken": "skipped",
    }
    assert summary.results["file:/needs-broken"].error == "skipped: exec:broken did not converge"
    assert not (root / "needs-broken").exists()
    assert (root / "independent").exists()
    assert not summary.ok


def test_crashing_probe_is_a_failed_promise_not_a_crash(policy: PolicyDir, root: Path) -> None:
    (root / "locked").mkdir(mode=0o000)
    policy.resources(
        '[[exec]]\nname = "guarded"\ncommand = "true"\nunless = ["/nonexistent-guard"]\n'
    )
    summary = converge(policy, root)
    assert summary.results["exec:guarded"].status == "failed"
    assert "probe failed: command not found: /nonexistent-guard" in (
        summary.results["exec:guarded"].error or ""
    )


def test_commands_of_one_level_run_concurrently(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        "\n".join(f'[[exec]]\nname = "sleep{i}"\ncommand = ["sleep", "1"]\n' for i in range(4))
    )
    started = time.monotonic()
    summary = converge(policy, root)
    assert summary.count("repaired") == 4
    assert time.monotonic() - started < 3.0  # serially it would take 4 s


def test_dry_run_changes_nothing_and_writes_no_state(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[file]]
        path = "/etc/conf"
        content = "x"
        notify = ["exec:hook"]

        [[exec]]
        name = "hook"
        command = "touch ran"
        refreshonly = true
        """
    )
    summary = converge(policy, root, dry_run=True)
    assert statuses(summary) == {"file:/etc/conf": "repaired", "exec:hook": "repaired"}
    assert summary.results["exec:hook"].refreshed
    assert not (root / "etc").exists() and not (root / "ran").exists()
    assert not (root / "var/lib/undistro/state.db").exists()


def test_only_checks_the_given_resources(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[file]]\npath = "/a"\ncontent = "a"\n[[file]]\npath = "/b"\ncontent = "b"\n')
    summary = converge(policy, root, only={"file:/b"})
    assert statuses(summary) == {"file:/b": "repaired"}
    assert not (root / "a").exists()


def test_each_change_is_journalled_with_its_own_cause(policy: PolicyDir, root: Path) -> None:
    from undistro.state import StateStore

    policy.resources(
        """
        [[file]]
        path = "/a"
        content = "a"
        notify = ["exec:hook"]

        [[file]]
        path = "/b"
        content = "b"

        [[exec]]
        name = "hook"
        command = "true"
        refreshonly = true
        """
    )
    converge(policy, root, cause="batch", causes={"file:/a": "modify /r/a"})
    entries = {e.resource: e.cause for e in StateStore(str(root / "var/lib/undistro")).journal()}
    assert entries == {
        "file:/a": "modify /r/a",
        "file:/b": "batch",
        "exec:hook": "notified by file:/a",
    }


def test_after_a_repair_the_journal_holds_the_new_state(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[file]]\npath = "/a"\ncontent = "a"\nmode = "0600"\n')
    summary = converge(policy, root)
    after = summary.results["file:/a"].after or ""
    assert after.startswith("file, mode 0600, owner 0:0, sha256 ")

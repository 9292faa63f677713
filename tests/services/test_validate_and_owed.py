"""``validate`` of ``[[file]]`` and refreshes that stay owed, through the CLI
and the engine (no daemon: the nginx cases are tests/agent/test_nginx_builtin.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli
from tests.engine.helpers import converge, statuses
from undistro.errors import ApplyError
from undistro.resources import _validate_cmd
from undistro.resources._validate_cmd import run_validate

# A validator: accepts a candidate whose first line is "ok".
CHECK = '["/bin/sh", "-c", "head -n1 \\"$0\\" | grep -qx ok || { echo rejected: $(head -n1 \\"$0\\"); exit 4; }", "{path}"]'


def file_policy(policy: PolicyDir, content: str, *, notify: bool = True) -> None:
    policy.resources(
        f"""
        [[file]]
        path = "/etc/app.conf"
        content = "{content}\\n"
        validate = {CHECK}
        {'notify = ["exec:reload"]' if notify else ""}

        [[exec]]
        name = "reload"
        command = ["/bin/sh", "-c", "[ ! -e \\"$UNDISTRO_ROOT/deny\\" ] && echo x >> \\"$UNDISTRO_ROOT/reloads\\""]
        refreshonly = true
        """
    )


def test_a_rejected_candidate_leaves_the_old_file_and_notifies_nothing(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    file_policy(policy, "ok")
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert (root / "reloads").read_text() == "x\n"
    before = os.stat(root / "etc/app.conf")
    file_policy(policy, "broken")
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 1
    assert "validate: sh exited 4, file left as it was: rejected: broken" in out, out
    assert (root / "etc/app.conf").read_text() == "ok\n"
    assert os.stat(root / "etc/app.conf").st_ino == before.st_ino
    assert sorted(os.listdir(root / "etc")) == ["app.conf"], "the candidate was left behind"
    assert (root / "reloads").read_text() == "x\n", "a rejected file notified"
    code, out, _ = cli("plan", policy, "--root", root)
    assert "validated by sh before the rename" in out, out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"nginx -t -c {path}"', "expected a non-empty list of strings"),
        ("[]", "expected a non-empty list of strings"),
        ('["/bin/true", "-c"]', "must name the candidate file as {path}"),
        ('["{path}"]', "must name the candidate file as {path}"),
        ('["no-such-validator-xyz", "{path}"]', "program 'no-such-validator-xyz' not found"),
        ('["/etc/passwd", "{path}"]', "is not an executable file"),
        ('["/bin/true", 3]', "expected a non-empty list of strings"),
    ],
)
def test_bad_validate_is_one_line_and_changes_nothing(
    policy: PolicyDir, root: Path, cli: RunCli, value: str, message: str
) -> None:
    policy.resources(f'[[file]]\npath = "/etc/x"\ncontent = "x"\nvalidate = {value}\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("undistro: "), err
    assert "field 'validate'" in err and message in err, err
    assert "Traceback" not in err
    assert not (root / "etc").exists()


def test_validate_is_bounded_in_time_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    candidate = tmp_path / "c"
    candidate.write_text("x")
    monkeypatch.setattr(_validate_cmd, "TIMEOUT", 0.5)
    began = time.monotonic()
    with pytest.raises(ApplyError, match=r"did not finish within 0\.5s"):
        run_validate(("/bin/sh", "-c", "exec sleep 30", "{path}"), str(candidate), "/")
    assert time.monotonic() - began < 5
    # 20 MB of output: read and dropped, the error keeps its first lines.
    bomb = ("/bin/sh", "-c", "yes line | head -c 20000000; exit 1", "{path}")
    with pytest.raises(ApplyError) as info:
        run_validate(bomb, str(candidate), "/")
    assert len(str(info.value)) < 200 and str(info.value).endswith("line; line; line; line; line …")


def test_a_failed_refresh_stays_owed_until_it_succeeds(policy: PolicyDir, root: Path) -> None:
    file_policy(policy, "ok")
    assert statuses(converge(policy, root))["exec:reload"] == "repaired"
    (root / "deny").touch()
    policy.resources(
        (policy.path / "policy/main.toml").read_text().replace('"ok\\n"', '"ok\\nv2\\n"')
    )
    first = converge(policy, root)
    assert statuses(first) == {"file:/etc/app.conf": "repaired", "exec:reload": "failed"}
    assert "refresh owed" in str(first.results["exec:reload"].error)
    # The file is right now; the refresh is not paid: the next run is not "kept".
    again = converge(policy, root)
    assert statuses(again) == {"file:/etc/app.conf": "kept", "exec:reload": "failed"}
    plan = converge(policy, root, dry_run=True)
    assert plan.results["exec:reload"].owed and plan.results["exec:reload"].status == "repaired"
    (root / "deny").unlink()
    paid = converge(policy, root)
    assert statuses(paid) == {"file:/etc/app.conf": "kept", "exec:reload": "repaired"}
    assert paid.causes["exec:reload"] == "refresh owed (notified by file:/etc/app.conf)"
    assert statuses(converge(policy, root)) == {"file:/etc/app.conf": "kept", "exec:reload": "kept"}
    assert (root / "reloads").read_text() == "x\nx\n"

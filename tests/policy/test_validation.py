"""Every validation error is one line naming the file, the resource and the
field; exit status 2; nothing on disk changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli

CASES = [
    (
        '[[file]]\npath = "/etc/x"\ncolour = "red"\n',
        "policy/main.toml: file:/etc/x: field 'colour': unknown key",
    ),
    (
        '[[file]]\npath = "etc/x"\n',
        "policy/main.toml: file:etc/x: field 'path': must be an absolute path, got 'etc/x'",
    ),
    ('[[file]]\npath = "/etc/../x"\n', "field 'path': must be a normalised path"),
    (
        '[[file]]\npath = "/etc/x"\nmode = 644\n',
        "file:/etc/x: field 'mode': expected an octal string like '0644', got an integer",
    ),
    (
        '[[file]]\npath = "/etc/x"\nmode = "rwx"\n',
        "field 'mode': expected an octal string like '0644', got 'rwx'",
    ),
    ('[[file]]\npath = "/etc/x"\nmode = "0999"\n', "field 'mode': expected an octal string"),
    (
        '[[file]]\npath = "/etc/x"\ncontent = 5\n',
        "file:/etc/x: field 'content': expected a string, got an integer",
    ),
    (
        '[[file]]\npath = "/etc/x"\ncontent = "a"\nsource = "b"\n',
        "field 'source': give only one of content, source, template",
    ),
    (
        '[[file]]\npath = "/etc/x"\nsource = "nope"\n',
        "file:/etc/x: field 'source': source not found: files/nope",
    ),
    (
        '[[file]]\npath = "/etc/x"\nsource = "../undistro.toml"\n',
        "field 'source': source path must be relative and stay inside the policy",
    ),
    (
        '[[file]]\npath = "/etc/x"\ntemplate = "nope.j2"\n',
        "field 'template': template not found: templates/nope.j2",
    ),
    (
        '[[file]]\npath = "/etc/x"\ntemplate = "undef.j2"\n',
        "field 'template': templates/undef.j2: undefined variable: 'nosuchvar' is undefined",
    ),
    (
        '[[file]]\npath = "/etc/x"\ntemplate = "syntax.j2"\n',
        "field 'template': templates/syntax.j2:1: template syntax error",
    ),
    (
        '[[file]]\npath = "/etc/x"\nensure = "maybe"\n',
        "field 'ensure': expected one of 'present', 'absent', got 'maybe'",
    ),
    ('[[file]]\nmode = "0644"\n', "policy/main.toml: file[0]: field 'path': is required"),
    ('[[fiel]]\npath = "/etc/x"\n', "policy/main.toml: unknown resource type 'fiel' (known: "),
    ('file = "x"\n', "policy/main.toml: 'file' must be an array of tables: write [[file]]"),
    (
        '[[file]]\npath = "/a"\n[[file]]\npath = "/a"\n',
        "policy/main.toml: file:/a: duplicate id (first declared in policy/main.toml)",
    ),
    (
        '[[file]]\npath = "/a"\n[[directory]]\npath = "/a"\n',
        "directory:/a: path /a is also managed by file:/a",
    ),
    (
        '[[file]]\npath = "/a"\nrequires = ["user:bob"]\n',
        "policy/main.toml: file:/a: field 'requires': unknown resource 'user:bob'",
    ),
    (
        '[[file]]\npath = "/a"\nnotify = ["nonsense"]\n',
        "field 'notify': expected an id like 'file:/etc/motd', got 'nonsense'",
    ),
    (
        '[[file]]\npath = "/a"\nrequires = ["file:/b"]\n[[file]]\npath = "/b"\nrequires = ["file:/a"]\n',
        "dependency cycle: file:/",
    ),
    ('[[user]]\nname = "-bad"\n', "user:-bad: field 'name': not a valid user/group name"),
    ('[[user]]\nname = "u"\nuid = -1\n', "user:u: field 'uid': must be between 0 and"),
    ('[[user]]\nname = "u"\ncomment = "a:b"\n', "user:u: field 'comment': must not contain ':'"),
    (
        '[[group]]\nname = "g"\ngid = "10"\n',
        "group:g: field 'gid': expected an integer, got a string",
    ),
    ('[[exec]]\nname = "e"\n', "exec:e: field 'command': is required"),
    (
        '[[exec]]\nname = "e"\ncommand = []\n',
        "field 'command': expected a command line string or a non-empty list",
    ),
    (
        '[[exec]]\nname = "e"\ncommand = "echo \'unclosed"\n',
        "exec:e: field 'command': cannot split command line",
    ),
    (
        '[[exec]]\nname = "e"\ncommand = "x"\nreturns = [300]\n',
        "field 'returns': must be between 0 and 255",
    ),
    ('[[symlink]]\npath = "/l"\n', "symlink:/l: field 'target': is required"),
    (
        '[[directory]]\npath = "/d"\npurge = "yes"\n',
        "directory:/d: field 'purge': expected true or false, got a string",
    ),
    ("[[file]\n", "policy/main.toml: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), CASES, ids=[c[1][:60] for c in CASES])
def test_each_error_is_one_line_exit_2_nothing_changed(
    policy: PolicyDir, root: Path, cli: RunCli, text: str, message: str
) -> None:
    policy.write("templates/undef.j2", "{{ nosuchvar }}\n")
    policy.write("templates/syntax.j2", "{% if %}\n")
    policy.resources('[[file]]\npath = "/etc/fine"\ncontent = "fine"\n', rel="policy/a-fine.toml")
    policy.resources(text)
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert lines[0].startswith("undistro: ")
    assert "Traceback" not in err
    assert os.listdir(root) == []  # not even the state directory


def test_all_problems_are_listed_at_once(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    policy.resources('[[file]]\npath = "/a"\nmode = "x"\n[[file]]\npath = "/b"\nowner = ""\n')
    code, _, err = cli("plan", policy, "--root", root)
    assert code == 2
    assert len(err.strip().splitlines()) == 2


MANIFEST_CASES = [
    ("", "undistro.toml: field 'name': a non-empty string is required"),
    ('name = "x"\ncolour = 1\n', "undistro.toml: unknown key 'colour'"),
    ('name = "x"\nvars = 3\n', "undistro.toml: field 'vars': expected a table"),
    (
        'name = "x"\n[[apply]]\ntags = ["a"]\n',
        "undistro.toml: apply[0]: field 'files': at least one pattern is required",
    ),
    (
        'name = "x"\n[[apply]]\nfiles = ["policy/none.toml"]\n',
        "apply[0]: files pattern 'policy/none.toml' matches no file",
    ),
    (
        'name = "x"\n[[apply]]\nfiles = ["../x"]\n',
        "apply[0]: files pattern '../x' must stay inside the policy",
    ),
    ('name = "x"\n[[apply]]\nfiles = ["p"]\nwhen = 1\n', "apply[0]: unknown key 'when'"),
    ("name = \n", "undistro.toml: not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), MANIFEST_CASES)
def test_manifest_errors(
    policy: PolicyDir, root: Path, cli: RunCli, text: str, message: str
) -> None:
    policy.write("undistro.toml", text)
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert os.listdir(root) == []


def test_missing_policy_dir_and_root(tmp_path: Path, root: Path, cli: RunCli) -> None:
    code, _, err = cli("apply", tmp_path / "nope", "--root", root)
    assert (code, err.strip()) == (2, f"undistro: {tmp_path / 'nope'}: policy directory not found")
    code, _, err = cli("apply", tmp_path, "--root", tmp_path / "noroot")
    assert code == 2 and "not a directory" in err
    code, _, err = cli("apply", "--root", root)
    assert code == 2 and "no POLICY_DIR given" in err


def test_bad_node_config(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    (root / "etc/undistro").mkdir(parents=True)
    (root / "etc/undistro/node.toml").write_text("tags = 'web'\n")
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 2 and "'tags' must be a list of non-empty strings" in err

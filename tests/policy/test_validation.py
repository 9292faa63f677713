"""Every validation error is one line naming the file, the resource and the
field; exit status 2; nothing on disk changes."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli
from tests.policy.conftest import Refused

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


# -- hostile policies (issue 8): each refused in one short line, exit 2 -------


def test_deeply_nested_toml_is_refused_not_a_traceback(policy: PolicyDir, refused: Refused) -> None:
    policy.resources("x = " + "[" * 900 + "]" * 900 + "\n")
    assert refused() == ["policy/main.toml: nested more than 32 levels deep"]


def test_nesting_that_parses_is_still_bounded(policy: PolicyDir, refused: Refused) -> None:
    # 200 levels parse (no RecursionError in tomllib) and would then reach
    # repr(), pickle and Jinja2 deep; the limit refuses them first.
    policy.resources('[[file]]\npath = "/a"\ncontent = "x"\nvars = ' + "[" * 200 + "]" * 200)
    assert refused() == ["policy/main.toml: nested more than 32 levels deep"]
    policy.resources('[[file]]\npath = "/a"\ncontent = "x"\n')
    policy.write("undistro.toml", 'name = "x"\n[vars]\nv = ' + "[" * 200 + "]" * 200 + "\n")
    assert refused() == ["undistro.toml: nested more than 32 levels deep"]


def test_deep_node_vars_are_refused(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    (root / "etc/undistro").mkdir(parents=True)
    (root / "etc/undistro/node.toml").write_text("[vars]\nv = " + "[" * 200 + "]" * 200 + "\n")
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 2 and err.count("\n") == 1 and "nested more than 32 levels deep" in err


TEMPLATE_BOMBS = [
    (
        "{{ 'a' * 10**12 }}",
        "templates/bomb.j2: 'a' * 1000000000000 would be larger than the limit of 16 Mi characters",
    ),
    ("{{ 9 ** (10**9) }}", "templates/bomb.j2: 9 ** 1000000000 is too large a number"),
    (
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "templates/bomb.j2: output larger than the limit of 16 Mi characters",
    ),
    (
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        # the doubling is caught at the '~' before the attribute is ever set
        "templates/bomb.j2: a '~' concatenation would be larger than the limit of 16 Mi",
    ),
    ("{{ 'a'|center(10**10) }}", "the 'center' filter would be larger than the limit"),
    ("{{ 'a'.ljust(10**10) }}", "templates/bomb.j2: str.ljust() would be larger than the limit"),
    ("{{ '%999999999d' % 1 }}", "templates/bomb.j2: a format width would be larger than"),
    ("{{ '{:>999999999}'.format(1) }}", "templates/bomb.j2: a format width would be larger"),
    ("{{ lipsum(10**9) }}", "templates/bomb.j2: lipsum() would be larger than the limit"),
    (
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}{{ 'x' * 10**6 }}"
        "{% endif %}{% endmacro %}{{ f(10) }}",
        "the result of f() would be larger than the limit of 16 Mi characters",
    ),
    ("{% include 'bomb.j2' %}", "templates/bomb.j2: template error: too deeply nested"),
    # Small values that serialise huge: one 10 MB string, referenced 1,000 times.
    ("{{ ['x' * 10**7] * 1000 }}", "* 1000 would be larger than the limit of 16 Mi characters"),
    (
        "{% set a = ['x' * 10**7] %}{% set b = [a, a] %}{{ 'z' ~ b }}",
        "templates/bomb.j2: a '~' concatenation would be larger than the limit",
    ),
    ("{% set a = 'x' * 10**7 %}{{ [a, a]|join }}", "the 'join' filter would be larger"),
    ("{% set a = 'x' * 10**7 %}{{ '%s%s' % (a, a) }}", "a '%' format would be larger"),
    ("{{ ('x' * 10**5)|replace('', 'y' * 10**5) }}", "the 'replace' filter would be larger"),
    ("{{ ('x' * 10**5).replace('', 'y' * 10**5) }}", "str.replace() would be larger"),
]


@pytest.mark.parametrize(
    ("text", "message"), TEMPLATE_BOMBS, ids=[b[0][:40] for b in TEMPLATE_BOMBS]
)
def test_template_bombs_are_refused_naming_the_template_and_the_limit(
    policy: PolicyDir, refused: Refused, text: str, message: str
) -> None:
    policy.write("templates/bomb.j2", text)
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "bomb.j2"\n')
    (line,) = refused(within=20)
    assert line.startswith("policy/main.toml: file:/etc/x: field 'template': templates/bomb.j2")
    assert message in line


def test_a_template_that_spins_is_stopped_at_the_time_limit(
    policy: PolicyDir, refused: Refused, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two nested loops that output nothing and call nothing: only the
    # watchdog can stop them. (The real limit is 5 s; 1 s keeps CI quick.)
    monkeypatch.setattr("undistro.policy._templates.MAX_SECONDS", 1.0)
    policy.write(
        "templates/spin.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "spin.j2"\n')
    started = time.monotonic()
    (line,) = refused(within=10)
    assert time.monotonic() - started < 5
    assert line.endswith("templates/spin.j2: rendering took longer than the limit of 1 s")


def test_a_template_too_slow_to_compile_is_stopped_at_the_time_limit(
    policy: PolicyDir, refused: Refused, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("undistro.policy._templates.MAX_SECONDS", 0.5)
    policy.write("templates/slow.j2", "{{ x }}\n" * 400_000)  # 3.2 MB: Jinja2 parses it for ~30 s
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "slow.j2"\n')
    (line,) = refused(within=10)
    assert line.endswith("templates/slow.j2: rendering took longer than the limit of 0.5 s")


def test_a_template_larger_than_its_limit_is_refused(policy: PolicyDir, refused: Refused) -> None:
    policy.write("templates/big.j2", "x" * (4 * 1024 * 1024 + 1))
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "big.j2"\n')
    (line,) = refused()
    assert line.endswith("templates/big.j2: larger than the limit of 4 MiB")


def test_templates_within_the_limits_still_render(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    policy.write(
        "templates/ok.j2",
        "{{ 'ab' * 3 }} {{ 20000000|filesizeformat }} {{ 2 ** 64 }} {{ '%5d' % 42 }}"
        "{% set ns = namespace(n=0) %}{% for i in range(1000) %}{% set ns.n = ns.n + i %}"
        "{% endfor %} {{ ns.n }} {{ 'x'|center(5) }}|{{ ['a', 'b']|join(',') }}"
        "{{ 'a-b'|replace('-', '+') }}{{ 'x' ~ 1 ~ [1, 2] }}\n",
    )
    policy.resources('[[file]]\npath = "/etc/ok"\ntemplate = "ok.j2"\n')
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 0, err
    assert (root / "etc/ok").read_text() == (
        "ababab 20.0 MB 18446744073709551616    42 499500   x  |a,ba+bx1[1, 2]\n"
    )


def _special(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()  # the name stays, a socket nobody listens on
    elif kind == "device":
        os.symlink("/dev/zero", path)  # a symlink to one: followed, then refused
    else:
        raise AssertionError(kind)


SPECIAL_KINDS = {"fifo": "a FIFO", "socket": "a socket", "device": "a character device"}


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
@pytest.mark.parametrize(
    ("rel", "toml", "message"),
    [
        ("policy/main.toml", None, "policy/main.toml: not a regular file"),
        ("undistro.toml", None, "undistro.toml: not a regular file"),
        (
            "templates/t.j2",
            'template = "t.j2"',
            "file:/etc/x: field 'template': templates/t.j2: not a regular file",
        ),
        (
            "files/src",
            'source = "src"',
            "file:/etc/x: field 'source': files/src: not a regular file",
        ),
    ],
)
def test_special_files_in_a_policy_are_refused_never_opened(
    policy: PolicyDir, refused: Refused, kind: str, rel: str, toml: str | None, message: str
) -> None:
    if toml is not None:
        policy.resources(f'[[file]]\npath = "/etc/x"\n{toml}\n')
    target = policy.path / rel
    target.unlink(missing_ok=True)
    _special(kind, target)
    (line,) = refused(within=10)
    assert message in line
    assert line.endswith(f"not a regular file ({SPECIAL_KINDS[kind]})")


def test_a_fifo_included_by_a_template_is_named(policy: PolicyDir, refused: Refused) -> None:
    policy.write("templates/t.j2", "{% include 'inc/f.j2' %}")
    _special("fifo", policy.path / "templates/inc/f.j2")
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "t.j2"\n')
    (line,) = refused(within=10)
    assert line.endswith("templates/t.j2: cannot include 'inc/f.j2': not a regular file (a FIFO)")


@pytest.mark.parametrize("name", ["../undistro.toml", "/etc/passwd", "a/../../x"])
def test_include_outside_names_the_refused_template(
    policy: PolicyDir, refused: Refused, name: str
) -> None:
    policy.write("templates/t.j2", f"{{% include '{name}' %}}")
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "t.j2"\n')
    (line,) = refused()
    assert line.endswith(f"templates/t.j2: cannot include '{name}': must stay inside templates/")


def test_include_of_a_missing_template_names_it(policy: PolicyDir, refused: Refused) -> None:
    policy.write("templates/t.j2", "{% include 'nope.j2' %}")
    policy.resources('[[file]]\npath = "/etc/x"\ntemplate = "t.j2"\n')
    (line,) = refused()
    assert line.endswith("templates/t.j2: included template not found: templates/nope.j2")


def test_a_symlink_loop_in_the_policy_is_refused(policy: PolicyDir, refused: Refused) -> None:
    policy.resources('[[file]]\npath = "/etc/x"\ncontent = "x"\n')
    # Two loops: a naive walk (or glob '**') doubles its work at each turn.
    os.symlink("..", policy.path / "policy/a")
    os.symlink("..", policy.path / "policy/b")
    (line,) = refused(within=10)
    assert line == (
        "policy/a: a directory reached a second time through a symlink"
        " (a loop, or a second name for it): a policy must be a tree"
    )


@pytest.mark.parametrize(
    "toml",
    [
        f'[[file]]\npath = "/etc/x"\nmode = "{"7" * 3_000_000}"\n',
        f'[[file]]\npath = "/etc/x"\nensure = "{"a b " * 750_000}"\n',
        f'[[file]]\npath = "/{"d" * 3_000_000}"\n',
        f'[[file]]\npath = "/etc/x"\n"{"k" * 100_000}" = 1\n',
    ],
    ids=["mode", "spaced", "path", "key"],
)
def test_refusals_cut_long_values(policy: PolicyDir, refused: Refused, toml: str) -> None:
    policy.resources(toml)
    (line,) = refused()
    assert "…" in line  # refused() checked it is at most 300 characters


# -- found at validation, not half way through an apply ----------------------

PATH_CASES = [
    (
        f'[[file]]\npath = "/etc/{"n" * 256}/x"\n',
        "file:/etc/nnn",
        "field 'path': a path component is 256 bytes long, more than NAME_MAX (255)",
    ),
    (
        f'[[file]]\npath = "/etc/{"n" * 256}"\n',
        "file:/etc/nnn",
        "field 'path': a path component is 256 bytes long, more than NAME_MAX (255)",
    ),
    (
        '[[file]]\npath = "/' + "/".join(["d" * 200] * 21) + '"\n',
        "file:/ddd",
        "more than PATH_MAX (4095)",
    ),
    (
        f'[[symlink]]\npath = "/etc/l"\ntarget = "{"t" * 5000}"\n',
        "symlink:/etc/l",
        "field 'target': is 5000 bytes long, more than PATH_MAX (4095)",
    ),
    (
        '[[file]]\npath = "/etc/motd"\n[[file]]\npath = "/etc/motd/x"\n',
        "file:/etc/motd/x",
        "path /etc/motd/x is inside /etc/motd, which file:/etc/motd manages as a file:"
        " only a directory can hold other paths",
    ),
    (
        '[[symlink]]\npath = "/srv/link"\ntarget = "/host"\n[[file]]\npath = "/srv/link/x"\n',
        "file:/srv/link/x",
        "path /srv/link/x is inside /srv/link, which symlink:/srv/link manages as a symlink",
    ),
    (
        '[[user]]\nname = "alice"\n[[directory]]\npath = "/etc/passwd"\n',
        "directory:/etc/passwd",
        "path /etc/passwd is also written by user:alice, which edits that file itself",
    ),
    (
        '[[group]]\nname = "g"\n[[file]]\npath = "/etc/group/x"\n',
        "file:/etc/group/x",
        "path /etc/group/x is inside /etc/group, which group:g writes as a file",
    ),
]


@pytest.mark.parametrize(
    ("text", "rid", "message"), PATH_CASES, ids=[c[2][:50] for c in PATH_CASES]
)
def test_path_problems_are_found_before_anything_changes(
    policy: PolicyDir, refused: Refused, text: str, rid: str, message: str
) -> None:
    # Declared first, so an engine that found the problem only when it got
    # there would already have written it.
    policy.resources('[[file]]\npath = "/aaa-first"\ncontent = "x"\n', rel="policy/0.toml")
    policy.resources(text)
    lines = refused()
    assert len(lines) == 1
    assert lines[0].startswith("policy/main.toml: ")
    assert rid in lines[0]
    assert message in lines[0]


def test_names_at_the_limits_are_accepted(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    policy.resources(
        f'[[directory]]\npath = "/{"d" * 255}"\n'
        f'[[file]]\npath = "/{"d" * 255}/{"f" * 223}"\ncontent = "x"\n'
    )
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 0, err
    assert (root / ("d" * 255) / ("f" * 223)).read_text() == "x"


def test_a_refusal_at_apply_says_why_once(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    (root / "etc").mkdir()
    (root / "etc/d").symlink_to(root.parent)
    policy.resources('[[directory]]\npath = "/etc/d"\n')
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 1
    (error,) = [line for line in out.splitlines() if "error:" in line]
    assert error.count("is a symlink") == 1, error

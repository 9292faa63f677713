"""Fuzzing the loader and the template sandbox: no input may end in anything
but a loaded policy or a proper refusal.

A proper refusal (see ``conftest.refused``): exit status 2, only one-line
``undistro:`` messages of at most 300 characters, no traceback, no hang,
nothing changed on disk. Hypothesis runs derandomized (a fixed seed, no
example database) with bounded example counts, so CI sees the same few
hundred cases every time in well under 30 s; the render limits are lowered
for the run (the guards scale with them) to keep each case fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PolicyDir, RunCli
from tests.policy.conftest import LINE_MAX, no_hang, snapshot
from undistro.errors import PolicyError
from undistro.policy import load_node
from undistro.policy._loader import compile_policy

DEMO = Path(__file__).resolve().parents[2] / "examples/demo"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _proper(problems: list[str]) -> None:
    assert problems
    for p in problems:
        assert "\n" not in p and len(p) <= LINE_MAX - len("undistro: "), p[:400]


# -- structured documents and raw text, straight into the loader ---------------

_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["/etc/x", "0644", "present", "absent", "file:/etc/x", "root", "a b", "../x"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "path",
        "content",
        "mode",
        "owner",
        "group",
        "ensure",
        "requires",
        "notify",
        "before",
        "name",
        "command",
        "target",
        "purge",
        "uid",
        "gid",
        "members",
        "groups",
        "home",
        "creates",
        "unless",
        "returns",
        "timeout",
        "source",
        "template",
        "vars",
        "force",
        "system",
        "shell",
        "xyz",
    ]
)
_tables = st.dictionaries(_keys, _values, max_size=6)
_documents = st.dictionaries(
    st.sampled_from(["file", "directory", "symlink", "user", "group", "exec", "bogus"]),
    st.one_of(st.lists(_tables, max_size=3), _values),
    max_size=3,
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _dump(doc: dict[str, object]) -> str:
    """Real TOML: arrays of tables as [[type]], everything else inline."""
    head, tables = [], []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            for table in value:
                assert isinstance(table, dict)
                tables.append(f"[[{json.dumps(key)}]]")
                tables.extend(f"{json.dumps(k)} = {_toml(v)}" for k, v in table.items())
        else:
            head.append(f"{json.dumps(key)} = {_toml(value)}")
    return "\n".join(head + tables) + "\n"


@settings(FUZZ, max_examples=300)
@given(doc=_documents)
def test_fuzzed_policies_never_raise_anything_but_policy_error(
    policy: PolicyDir, root: Path, doc: dict[str, object]
) -> None:
    policy.write("policy/main.toml", _dump(doc))
    node = load_node(str(root))
    try:
        compile_policy(str(policy), node, node.facts())
    except PolicyError as exc:
        _proper(exc.problems)


@settings(FUZZ, max_examples=200)
@given(text=st.text(max_size=200))
def test_fuzzed_bytes_never_raise_anything_but_policy_error(
    policy: PolicyDir, root: Path, text: str
) -> None:
    policy.write("policy/main.toml", text)
    node = load_node(str(root))
    with contextlib.suppress(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    try:
        compile_policy(str(policy), node, node.facts())
    except PolicyError as exc:
        _proper(exc.problems)


# -- hostile mutations of examples/demo, through the CLI ------------------------

_BIG = st.sampled_from([10**6, 10**7, 2**24 + 1, 10**9, 10**12, 2**62])
_SMALL = st.integers(0, 300)


@st.composite
def _template_bodies(draw: st.DrawFn) -> str:
    """A template fragment: a bomb, an include of something odd, or fine."""
    n, m, k = draw(_BIG), draw(_SMALL), draw(st.integers(1, 70))
    return draw(
        st.sampled_from(
            [
                f"{{{{ 'a' * {n} }}}}",
                f"{{{{ [1, 2] * {n} }}}}",
                f"{{{{ {m} ** {n} }}}}",
                f"{{{{ ({m} + 2) ** ({m} * {n}) }}}}",
                f"{{% for i in range({n}) %}}{{% for j in range({n}) %}}{{% endfor %}}{{% endfor %}}",
                f"{{% for i in range({m * 1000}) %}}{{% for j in range({m * 1000}) %}}x"
                f"{{% endfor %}}{{% endfor %}}",
                f"{{% set ns = namespace(s='ab') %}}{{% for i in range({k}) %}}"
                f"{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}{{{{ ns.s|length }}}}",
                f"{{{{ 'x'|center({n}) }}}}{{{{ 'x'|indent({n}) }}}}",
                f"{{{{ 'x'.ljust({n}) }}}}{{{{ 'x'.zfill({n}) }}}}",
                f"{{{{ '%{n}d' % 1 }}}}{{{{ '{{:>{n}}}'.format(1) }}}}",
                f"{{{{ lipsum({n}) }}}}",
                f"{{% macro f(n) %}}{{% if n %}}{{{{ f(n-1) }}}}{{{{ f(n-1) }}}}{{% else %}}"
                f"{{{{ 'x' * {m * 1000} }}}}{{% endif %}}{{% endmacro %}}{{{{ f({k}) }}}}",
                f"{{{{ ['x' * {m * 10**5}] * {n} }}}}",
                f"{{% set a = ['x' * {m * 10**5}] %}}{{{{ 'z' ~ ([a] * {k}) }}}}{{{{ (a * {k})|join }}}}",
                f"{{{{ ('x' * {m * 1000})|replace('', 'y' * {m * 1000}) }}}}",
                "{% include 'bomb.j2' %}",
                "{% include '../undistro.toml' %}",
                "{% include '/etc/passwd' %}",
                "{% include 'special.j2' %}",
                "{% include 'missing.j2' %}",
                "{{ " + "(" * m + "1" + ")" * m + " }}",
                "{{ nosuchvar }}",
                "{% if %}",
                "{{ app_name }} on {{ facts.hostname }}\n",
            ]
        )
    )


def _nested(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return "{ a = " * depth + "1" + " }" * depth


_SPECIAL_KINDS = ["fifo", "socket", "device", "loop", "directory"]


def _make_special(kind: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "loop":
        os.symlink(".", path)
    else:
        path.mkdir()


@st.composite
def _mutations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """1-3 hostile edits of the demo policy."""
    ingredients = st.one_of(
        st.tuples(
            st.just("nest"),
            st.sampled_from(["policy", "manifest", "resource"]),
            st.sampled_from([5, 31, 33, 200, 900, 3000]),
            st.sampled_from(["array", "table"]),
        ),
        st.tuples(st.just("template"), st.sampled_from(["motd.j2", "bomb.j2"]), _template_bodies()),
        st.tuples(
            st.just("special"),
            st.sampled_from(
                [
                    "policy/base.toml",
                    "undistro.toml",
                    "templates/motd.j2",
                    "templates/special.j2",
                    "files/10-defaults.conf",
                    "policy/extra.toml",
                    "policy/sub",
                ]
            ),
            st.sampled_from(_SPECIAL_KINDS),
        ),
        st.tuples(
            st.just("long"),
            st.sampled_from(["mode", "path", "ensure", "key", "owner", "target"]),
            st.sampled_from([81, 300, 5000, 3_000_000]),
            st.booleans(),
        ),
        st.tuples(
            st.just("path"),
            st.sampled_from(["component", "name", "total", "parent", "symlink", "account"]),
            st.integers(-2, 2),
        ),
        st.tuples(
            st.just("bytes"),
            st.integers(0, 10_000),
            st.sampled_from(["[[", "]]", '"', "'''", "=", "\n[[file]]\n", "\x00", "\\u0000", "{"]),
        ),
    )
    return draw(st.lists(ingredients, min_size=1, max_size=3))


def _regular(path: Path) -> bool:
    """Whether ``path`` may be written by the test: an earlier edit of the
    same case may have made a FIFO there, and writing one blocks."""
    return not path.is_symlink() and (path.is_file() or not path.exists())


def _apply(base: Path, edits: list[tuple[str, Any]]) -> None:
    # Resources appended to base.toml; it is always selected (no tags given).
    extra: list[str] = []
    for edit in edits:
        kind = edit[0]
        if kind == "nest":
            _, where, depth, shape = edit
            if where == "policy":
                extra.append(f"x = {_nested(depth, shape)}")
            elif where == "manifest":
                manifest = base / "undistro.toml"
                if not _regular(manifest) or not manifest.exists():
                    continue
                manifest.write_text(
                    manifest.read_text().replace(
                        "[vars]\n", f"[vars]\ndeep = {_nested(depth, shape)}\n"
                    )
                )
            else:
                extra.append(
                    f'[[file]]\npath = "/etc/nest"\ntemplate = "motd.j2"\n'
                    f"vars = {{ a = {_nested(depth, shape)} }}"
                )
        elif kind == "template":
            _, name, body = edit
            if not _regular(base / "templates" / name):
                continue
            (base / "templates" / name).write_text(body)
            if name == "bomb.j2":
                extra.append('[[file]]\npath = "/etc/bomb"\ntemplate = "bomb.j2"')
        elif kind == "special":
            _, rel, what = edit
            _make_special(what, base / rel)
            if rel == "templates/special.j2":
                extra.append('[[file]]\npath = "/etc/special"\ntemplate = "special.j2"')
        elif kind == "long":
            _, field, n, spaced = edit
            value = ("ab " * (n // 3 + 1))[:n] if spaced else "7" * n
            if field == "key":
                extra.append(f'[[file]]\npath = "/etc/long"\n"{value}" = 1')
            elif field == "path":
                extra.append(f'[[file]]\npath = "/{value.replace(" ", "_")}"\ncontent = "x"')
            elif field == "target":
                extra.append(f'[[symlink]]\npath = "/etc/long"\ntarget = "{value}"')
            else:
                extra.append(f'[[file]]\npath = "/etc/long"\n{field} = "{value}"')
        elif kind == "path":
            _, case, delta = edit
            extra.append(_path_case(case, delta))
        elif kind == "bytes":
            _, at, fragment = edit
            target = base / "policy/base.toml"
            if target.is_file() and not target.is_symlink():
                text = target.read_text()
                at %= len(text) + 1
                target.write_text(text[:at] + fragment + text[at:])
    if extra:
        target = base / "policy/base.toml"
        if target.is_file() and not target.is_symlink():
            with open(target, "a") as f:
                f.write("\n" + "\n\n".join(extra) + "\n")


def _path_case(case: str, delta: int) -> str:
    if case == "component":
        return f'[[directory]]\npath = "/srv/{"c" * (255 + delta)}"'
    if case == "name":
        return f'[[file]]\npath = "/srv/{"n" * (223 + delta)}"\ncontent = "x"'
    if case == "total":
        parts = ["d" * 200] * 20 + ["e" * (95 + delta * 10)]
        return f'[[file]]\npath = "/{"/".join(parts)}"\ncontent = "x"'
    if case == "parent":
        return '[[file]]\npath = "/etc/motd/x"\ncontent = "x"'
    if case == "symlink":
        return '[[file]]\npath = "/etc/undistro-demo/current.conf/x"\ncontent = "x"'
    return '[[user]]\nname = "fuzz"\n[[directory]]\npath = "/etc/passwd"'


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    # Hypothesis reuses function-scoped fixtures across examples: each
    # example gets a directory of its own.
    top = Path(tempfile.mkdtemp(prefix="undistro-fuzz-"))
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@settings(FUZZ, max_examples=150)
@given(edits=_mutations())
def test_hostile_mutations_of_the_demo_load_or_are_refused_properly(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch, edits: list[tuple[str, Any]]
) -> None:
    # Lowered limits keep each case quick; the guards are the same code.
    monkeypatch.setattr("undistro.policy._templates.MAX_SECONDS", 0.5, raising=False)
    monkeypatch.setattr("undistro.policy._templates.MAX_OUTPUT", 1024 * 1024, raising=False)
    with _scratch() as top:
        base, root = top / "policy", top / "root"
        shutil.copytree(DEMO, base, symlinks=True)
        root.mkdir()
        with no_hang(15):  # the case's own setup must not wedge the suite either
            _apply(base, edits)
        before = snapshot(base)
        if os.environ.get("FUZZ_STATS"):
            with open(os.environ["FUZZ_STATS"], "a") as f:
                f.write(f"START {edits!r}"[:600] + "\n")
        with no_hang(15):
            code, out, err = cli("apply", base, "--root", root)
        assert "Traceback" not in err
        assert snapshot(base) == before
        if os.environ.get("FUZZ_STATS"):
            with open(os.environ["FUZZ_STATS"], "a") as f:
                first = err.splitlines()[0][:150] if err else ""
                f.write(f"STAT {code} {[e[0] for e in edits]} {first}\n")
        if code == 0:
            return  # it loaded (and applied: a change the policy asked for)
        assert (code, out) == (2, ""), (edits, code, out[-2000:], err[:2000])
        lines = err.splitlines()
        assert lines
        for line in lines:
            assert line.startswith("undistro: ") and len(line) <= LINE_MAX, line[:400]
        assert os.listdir(root) == []

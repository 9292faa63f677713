"""Selection of policy files per node, the compiled cache, and a fuzzed loader."""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PolicyDir
from undistro.errors import PolicyError
from undistro.policy import load_node, load_policy
from undistro.policy._loader import compile_policy


def ids(
    policy_dir: PolicyDir, root: Path, tags: tuple[str, ...] = (), hostname: str | None = None
) -> list[str]:
    node = load_node(str(root), extra_tags=tags)
    if hostname:
        node.hostname = hostname
    return list(compile_policy(str(policy_dir), node, node.facts()).resources)


def test_apply_rules_select_files_by_tag_and_hostname(policy: PolicyDir, root: Path) -> None:
    policy.write(
        "undistro.toml",
        """
        name = "sel"
        [[apply]]
        files = ["policy/base.toml"]
        [[apply]]
        files = ["policy/web/*.toml"]
        tags = ["web"]
        [[apply]]
        files = ["policy/db.toml"]
        hosts = ["db-*"]
        """,
    )
    policy.resources('[[file]]\npath = "/base"\n', "policy/base.toml")
    policy.resources('[[file]]\npath = "/web"\n', "policy/web/site.toml")
    policy.resources('[[file]]\npath = "/db"\n', "policy/db.toml")
    assert ids(policy, root) == ["file:/base"]
    assert ids(policy, root, ("web",)) == ["file:/base", "file:/web"]
    assert ids(policy, root, hostname="db-01") == ["file:/base", "file:/db"]


def test_node_config_tags_and_vars_reach_templates(policy: PolicyDir, root: Path) -> None:
    (root / "etc/undistro").mkdir(parents=True)
    (root / "etc/undistro/node.toml").write_text('tags = ["web"]\n[vars]\ncolour = "blue"\n')
    policy.write("undistro.toml", 'name = "v"\n[vars]\ncolour = "red"\nsize = 3\n')
    policy.write("templates/t.j2", "{{ colour }} {{ size }} {{ facts.tags | join(',') }}\n")
    policy.resources('[[file]]\npath = "/t"\ntemplate = "t.j2"\n')
    node = load_node(str(root))
    res = compile_policy(str(policy), node, node.facts()).resources["file:/t"]
    assert res.data == b"blue 3 web\n"


def test_cache_is_used_until_any_input_moves(policy: PolicyDir, root: Path) -> None:
    policy.write("templates/t.j2", "one\n")
    policy.resources('[[file]]\npath = "/t"\ntemplate = "t.j2"\n')
    node = load_node(str(root))
    facts = node.facts()
    cache = str(root / "state")
    first = load_policy(str(policy), node, facts, cache_dir=cache)
    again = load_policy(str(policy), node, facts, cache_dir=cache)
    assert again.digest == first.digest
    assert os.path.exists(os.path.join(cache, "policy.cache"))

    policy.write("templates/t.j2", "two\n")  # a template, not a policy file
    changed = load_policy(str(policy), node, facts, cache_dir=cache)
    assert changed.digest != first.digest
    assert changed.resources["file:/t"].data == b"two\n"

    other_facts = {**facts, "hostname": "elsewhere"}
    assert load_policy(str(policy), node, other_facts, cache_dir=cache).digest != changed.digest


def test_corrupt_cache_is_ignored(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[file]]\npath = "/t"\ncontent = "x"\n')
    node = load_node(str(root))
    cache = root / "state"
    cache.mkdir()
    (cache / "policy.cache").write_bytes(b"garbage")
    policy_obj = load_policy(str(policy), node, node.facts(), cache_dir=str(cache))
    assert list(policy_obj.resources) == ["file:/t"]


# -- fuzzing: no input may end in anything but a PolicyError ------------------

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


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_documents)
def test_fuzzed_policies_never_raise_anything_but_policy_error(
    policy: PolicyDir, root: Path, doc: dict[str, object]
) -> None:
    policy.write("policy/main.toml", _dump(doc))
    node = load_node(str(root))
    try:
        compile_policy(str(policy), node, node.facts())
    except PolicyError as exc:
        assert exc.problems and all("\n" not in p for p in exc.problems)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_fuzzed_bytes_never_raise_anything_but_policy_error(
    policy: PolicyDir, root: Path, text: str
) -> None:
    policy.write("policy/main.toml", text)
    node = load_node(str(root))
    with contextlib.suppress(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with contextlib.suppress(PolicyError):
        compile_policy(str(policy), node, node.facts())

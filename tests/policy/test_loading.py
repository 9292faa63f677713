"""Selection of policy files per node and the compiled cache (the fuzzed
loader is in test_fuzz.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import PolicyDir
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

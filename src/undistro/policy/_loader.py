"""Loading a policy directory: all of it is validated, or none of it is used.

Layout::

    undistro.toml       name, variables, which policy files apply to which node
    policy/*.toml       resources, as arrays of tables per type ([[file]], ...)
    templates/          Jinja2 templates for file resources
    files/              static sources for file resources

Every problem found is reported as one line naming the file, the resource id
and the field; nothing is touched unless there is no problem at all.

The loader is a boundary: whatever the policy holds, it raises only
:class:`PolicyError` (MemoryError, RecursionError and OSError included, each
made one line), with every quoted value cut to a readable length. Inputs are
read through :mod:`._read` (regular files only, bounded sizes), templates
render under the limits of :mod:`._templates`, and everything that can only
be seen across resources (paths that nest or collide, names too long) is
checked by :mod:`._checks` before anything runs.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import tomllib
from collections.abc import Mapping
from typing import Any

from undistro.engine._graph import CycleError, build_graph
from undistro.errors import PolicyError, ValidationError, clip_line
from undistro.policy._checks import check_paths
from undistro.policy._model import Policy
from undistro.policy._node import Node
from undistro.policy._read import MAX_DEPTH, MIB, read_regular, too_deep, walk
from undistro.policy._templates import TemplateRenderer
from undistro.resources import TYPES, Resource, resource_class

MANIFEST = "undistro.toml"
_MANIFEST_KEYS = {"name", "description", "vars", "apply"}
_APPLY_KEYS = {"files", "tags", "hosts"}
_MAX_ERRORS = 50
MAX_TOML = 16 * MIB  # one policy file; 10,000 resources take ~1 MB
MAX_SOURCE = 256 * MIB  # one files/ source, held in memory and in the cache


class _Inputs:
    """What resources may read beside the policy while being prepared."""

    def __init__(self, policy_dir: str, renderer: TemplateRenderer) -> None:
        self.policy_dir = policy_dir
        self.files_dir = os.path.join(policy_dir, "files")
        self.renderer = renderer

    def read_source(self, relpath: str) -> bytes:
        path = _inside(self.files_dir, relpath, "source")
        try:
            return read_regular(path, MAX_SOURCE)
        except ValueError as exc:
            raise ValueError(f"files/{relpath}: {exc}") from None
        except (FileNotFoundError, NotADirectoryError):
            raise ValueError(f"source not found: files/{relpath}") from None
        except IsADirectoryError:
            raise ValueError(f"source is a directory: files/{relpath}") from None
        except OSError as exc:
            raise ValueError(f"cannot read files/{relpath}: {exc.strerror}") from None

    def render_template(self, relpath: str, extra: Mapping[str, Any]) -> str:
        _inside(self.renderer.templates_dir, relpath, "template")
        return self.renderer.render(relpath, extra)

    def policy_path(self, relpath: str) -> str:
        return os.path.normpath(_inside(self.policy_dir, relpath, "policy"))


def compile_policy(policy_dir: str, node: Node, facts: Mapping[str, Any]) -> Policy:
    """Parse and validate ``policy_dir`` for this node. Raises PolicyError
    listing every problem found (up to a limit), and nothing else."""
    policy_dir = os.path.abspath(policy_dir)
    try:
        return _compile(policy_dir, node, facts)
    except PolicyError as exc:
        problems = list(dict.fromkeys(clip_line(p) for p in exc.problems))
        raise PolicyError(problems) from None
    except MemoryError:
        raise PolicyError(f"{policy_dir}: out of memory while loading the policy") from None
    except RecursionError:
        raise PolicyError(f"{policy_dir}: policy nested too deeply to load") from None
    except OSError as exc:
        raise PolicyError(
            clip_line(f"{exc.filename or policy_dir}: cannot load the policy: {exc.strerror}")
        ) from None


_READ_DIRS = frozenset({"policy", "templates", "files"})


def _compile(policy_dir: str, node: Node, facts: Mapping[str, Any]) -> Policy:
    if not os.path.isdir(policy_dir):
        raise PolicyError(f"{policy_dir}: policy directory not found")
    # Only what the loader reads must be a tree: a policy directory may hold
    # other things (a .git, a test's scratch root) that are none of its business.
    loops = walk(policy_dir, _READ_DIRS)[1]
    if loops:
        raise PolicyError(
            f"{loops[0]}: a directory reached a second time through a symlink"
            " (a loop, or a second name for it): a policy must be a tree"
        )
    manifest = _read_toml(policy_dir, MANIFEST)
    name, policy_vars, rules = _check_manifest(manifest)
    policy_vars = {**policy_vars, **node.vars}
    files = _select_files(policy_dir, rules, node)

    renderer = TemplateRenderer(
        os.path.join(policy_dir, "templates"), {**policy_vars, "vars": policy_vars, "facts": facts}
    )
    try:
        resources, origin, errors = _prepare(policy_dir, files, _Inputs(policy_dir, renderer))
    finally:
        renderer.close()
    managed = check_paths(resources, origin, node.root, errors)
    if errors:
        raise PolicyError(errors[:_MAX_ERRORS])

    try:
        graph = build_graph(resources)
    except KeyError as exc:
        rid, key, target = exc.args
        raise PolicyError(
            f"{origin[rid]}: {rid}: field '{key}': unknown resource '{target}'"
        ) from None
    except CycleError as exc:
        raise PolicyError(f"{origin[exc.cycle[0]]}: {exc}") from None
    ordered = {rid: resources[rid] for rid in graph.order}
    for rid, res in ordered.items():
        try:
            res.bind(managed, ordered)
        except ValidationError as exc:
            errors.append(f"{origin[rid]}: {rid}: {exc}")
    if errors:
        raise PolicyError(errors[:_MAX_ERRORS])
    return Policy(name, policy_dir, ordered, graph, files, policy_vars, managed)


def _prepare(
    policy_dir: str, files: list[str], inputs: _Inputs
) -> tuple[dict[str, Resource], dict[str, str], list[str]]:
    errors: list[str] = []
    resources: dict[str, Resource] = {}
    origin: dict[str, str] = {}
    for rel in files:
        for res in _parse_file(policy_dir, rel, errors):
            where = f"{rel}: {res.id}"
            if res.id in resources:
                errors.append(f"{where}: duplicate id (first declared in {origin[res.id]})")
                continue
            try:
                res.prepare(inputs)
            except ValidationError as exc:
                errors.append(f"{where}: {exc}")
                continue
            resources[res.id] = res
            origin[res.id] = rel
        if len(errors) >= _MAX_ERRORS:
            break
    return resources, origin, errors


# -- manifest -----------------------------------------------------------------


def _check_manifest(data: dict[str, Any]) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    where = MANIFEST
    unknown = sorted(set(data) - _MANIFEST_KEYS)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(_MANIFEST_KEYS))})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}: field 'name': a non-empty string is required")
    policy_vars = data.get("vars", {})
    if not isinstance(policy_vars, dict):
        raise PolicyError(f"{where}: field 'vars': expected a table")
    rules = data.get("apply", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise PolicyError(f"{where}: field 'apply': expected an array of tables ([[apply]])")
    for i, rule in enumerate(rules):
        bad = sorted(set(rule) - _APPLY_KEYS)
        if bad:
            raise PolicyError(
                f"{where}: apply[{i}]: unknown key '{bad[0]}' (known: files, hosts, tags)"
            )
        for key in _APPLY_KEYS:
            value = rule.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise PolicyError(f"{where}: apply[{i}]: field '{key}': expected a list of strings")
        if not rule.get("files"):
            raise PolicyError(
                f"{where}: apply[{i}]: field 'files': at least one pattern is required"
            )
    return name, policy_vars, rules


def _select_files(policy_dir: str, rules: list[dict[str, Any]], node: Node) -> list[str]:
    if not rules:
        found = glob.glob("policy/**/*.toml", root_dir=policy_dir, recursive=True)
        return sorted(found)
    chosen: dict[str, None] = {}
    for i, rule in enumerate(rules):
        tags, hosts = rule.get("tags", []), rule.get("hosts", [])
        if tags and not set(tags) & set(node.tags):
            continue
        if hosts and not any(fnmatch.fnmatchcase(node.hostname, h) for h in hosts):
            continue
        for pattern in rule["files"]:
            if os.path.isabs(pattern) or ".." in pattern.split("/"):
                raise PolicyError(
                    f"{MANIFEST}: apply[{i}]: files pattern {pattern!r} must stay inside the policy"
                )
            if pattern.count("**") > 2:
                # Each '**' walks the whole tree again below the last one.
                raise PolicyError(
                    f"{MANIFEST}: apply[{i}]: files pattern {pattern!r} has more than two '**'"
                )
            matches = sorted(glob.glob(pattern, root_dir=policy_dir, recursive=True))
            if not matches:
                raise PolicyError(
                    f"{MANIFEST}: apply[{i}]: files pattern {pattern!r} matches no file"
                )
            chosen.update(dict.fromkeys(m for m in matches if m.endswith(".toml")))
    return list(chosen)


# -- policy files ---------------------------------------------------------------


def _parse_file(policy_dir: str, rel: str, errors: list[str]) -> list[Resource]:
    try:
        data = _read_toml(policy_dir, rel)
    except PolicyError as exc:
        errors.extend(exc.problems)
        return []
    out: list[Resource] = []
    for type_name, tables in data.items():
        if type_name not in TYPES:
            errors.append(
                f"{rel}: unknown resource type '{type_name}' (known: {', '.join(sorted(TYPES))})"
            )
            continue
        if not isinstance(tables, list):
            errors.append(f"{rel}: '{type_name}' must be an array of tables: write [[{type_name}]]")
            continue
        cls = resource_class(type_name)
        for i, table in enumerate(tables):
            try:
                out.append(cls.from_table(table, source=rel))
            except ValidationError as exc:
                errors.append(f"{rel}: {_provisional_id(cls, table, i)}: {exc}")
    return out


def _provisional_id(cls: type[Resource], table: Any, index: int) -> str:
    if isinstance(table, dict):
        name = table.get("name", table.get(cls.name_key))
        if isinstance(name, str) and name:
            return f"{cls.type_name}:{name}"
    return f"{cls.type_name}[{index}]"


def _read_toml(policy_dir: str, rel: str) -> dict[str, Any]:
    path = os.path.join(policy_dir, rel)
    try:
        data = tomllib.loads(read_regular(path, MAX_TOML).decode("utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{rel}: not found in {policy_dir}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{rel}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{rel}: not valid UTF-8") from None
    except RecursionError:
        raise PolicyError(f"{rel}: nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # not a regular file, too large
        raise PolicyError(f"{rel}: {exc}") from None
    except IsADirectoryError:
        raise PolicyError(f"{rel}: a directory, not a file") from None
    except OSError as exc:
        raise PolicyError(f"{rel}: cannot read: {exc.strerror}") from None
    if too_deep(data, MAX_DEPTH):
        raise PolicyError(f"{rel}: nested more than {MAX_DEPTH} levels deep")
    return data


def _inside(base: str, relpath: str, what: str) -> str:
    if os.path.isabs(relpath) or ".." in relpath.replace("\\", "/").split("/"):
        raise ValueError(
            f"{what} path must be relative and stay inside the policy, got {relpath!r}"
        )
    return os.path.join(base, relpath)

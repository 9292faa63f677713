"""Loading a policy directory: all of it is validated, or none of it is used.

Layout::

    undistro.toml       name, variables, which policy files apply to which node
    policy/*.toml       resources, as arrays of tables per type ([[file]], ...)
    templates/          Jinja2 templates for file resources
    files/              static sources for file resources

Every problem found is reported as one line naming the file, the resource id
and the field; nothing is touched unless there is no problem at all.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import tomllib
from collections.abc import Mapping
from typing import Any

from undistro.engine._graph import CycleError, build_graph
from undistro.errors import PolicyError, ValidationError
from undistro.policy._model import Policy
from undistro.policy._node import Node
from undistro.policy._templates import TemplateRenderer
from undistro.resources import TYPES, Resource, resource_class

MANIFEST = "undistro.toml"
_MANIFEST_KEYS = {"name", "description", "vars", "apply"}
_APPLY_KEYS = {"files", "tags", "hosts"}
_MAX_ERRORS = 50


class _Inputs:
    """What resources may read beside the policy while being prepared."""

    def __init__(self, policy_dir: str, renderer: TemplateRenderer) -> None:
        self.policy_dir = policy_dir
        self.files_dir = os.path.join(policy_dir, "files")
        self.renderer = renderer

    def read_source(self, relpath: str) -> bytes:
        path = _inside(self.files_dir, relpath, "source")
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
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
    listing every problem found (up to a limit)."""
    policy_dir = os.path.abspath(policy_dir)
    if not os.path.isdir(policy_dir):
        raise PolicyError(f"{policy_dir}: policy directory not found")
    manifest = _read_toml(policy_dir, MANIFEST)
    name, policy_vars, rules = _check_manifest(manifest)
    policy_vars = {**policy_vars, **node.vars}
    files = _select_files(policy_dir, rules, node)

    renderer = TemplateRenderer(
        os.path.join(policy_dir, "templates"), {**policy_vars, "vars": policy_vars, "facts": facts}
    )
    inputs = _Inputs(policy_dir, renderer)
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

    managed: dict[str, str] = {}
    for rid, res in resources.items():
        for path in res.managed_paths():
            other = managed.get(path)
            if other is not None:
                where = f"{origin[rid]}: {rid}"
                errors.append(f"{where}: path {path} is also managed by {other} ({origin[other]})")
            managed[path] = rid
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
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PolicyError(f"{rel}: not found in {policy_dir}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{rel}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{rel}: not valid UTF-8") from None
    except OSError as exc:
        raise PolicyError(f"{rel}: cannot read: {exc.strerror}") from None


def _inside(base: str, relpath: str, what: str) -> str:
    if os.path.isabs(relpath) or ".." in relpath.replace("\\", "/").split("/"):
        raise ValueError(
            f"{what} path must be relative and stay inside the policy, got {relpath!r}"
        )
    return os.path.join(base, relpath)

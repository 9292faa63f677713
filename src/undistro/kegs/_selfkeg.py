"""The agent itself as a keg: its own package tree, hashed, with a recipe.

``undistro`` is not fetched from anywhere: the source of its keg is the
package directory of the running agent (or a given one), packed into a
tarball whose bytes depend only on the files' names, modes and contents
(sorted members, owner 0, mtime 0, gzip without a timestamp). The tarball
enters the source cache by its SHA-256 and a recipe naming that hash is
written beside it, so the same tree always gives the same keg path and an
edited tree a new one. The recipe's ``bin/undistro`` runs the agent with the
keg CPython, isolated (``-I``) from the environment, with its own
site-packages on ``sys.path``, where the dependency kegs' packages are
linked in: the runtime closure is that one keg's closure
(examples/runtime, docs/image-runtime.md).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile

import undistro
from undistro.kegs._sources import SourceCache

PYTHON_DEPS = ("jinja2", "markupsafe")
"""What the agent imports beyond the standard library for a policy without
fleet (measured: ``undistro apply examples/demo``)."""

_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def pack_tree(package_dir: str, top: str) -> bytes:
    """A reproducible .tar.gz of ``package_dir`` under ``top/undistro/``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, rel in _files(package_dir):
            info = tarfile.TarInfo(f"{top}/undistro/{rel}")
            info.size = os.path.getsize(path)
            info.mode = 0o644
            info.mtime = 0
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return gzip.compress(raw.getvalue(), mtime=0)


def _files(package_dir: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(_SKIP_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append((path, os.path.relpath(path, package_dir)))
    return sorted(found, key=lambda item: item[1])


def write_self_recipe(recipes_dir: str, cache: SourceCache, package_dir: str | None = None) -> str:
    """Pack the agent's package tree into ``cache`` and write
    ``recipes_dir/undistro.toml`` naming it; returns the recipe's path.
    Use it with the recipes of ``examples/runtime`` (a second ``--recipes``)."""
    package_dir = package_dir or os.path.dirname(os.path.abspath(undistro.__file__))
    version = undistro.__version__
    data = pack_tree(package_dir, f"undistro-{version}")
    sha = cache.add_stream(io.BytesIO(data))
    os.makedirs(recipes_dir, exist_ok=True)
    path = os.path.join(recipes_dir, "undistro.toml")
    url = f"file://{os.path.abspath(cache.path(sha))}"
    text = _RECIPE.format(version=version, url=url, sha=sha, deps=_deps_toml())
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _deps_toml() -> str:
    return "".join(f'{name} = "*"\n' for name in PYTHON_DEPS)


# {{ }} are the recipe's own placeholders once this template is formatted.
_RECIPE = """\
# Written by undistro.kegs.write_self_recipe from the agent's own package
# tree: the sha256 is that tree's reproducible tarball. Do not edit.
name = "undistro"
description = "The undistro agent, run by the keg CPython"
license = "Apache-2.0"

[versions."{version}"]
url = "{url}"
sha256 = "{sha}"

[dependencies.run]
python = "3.11"
{deps}
[build]
system = "commands"
env = {{ SITE = "{{destdir}}{{prefix}}/lib/python3.11/site-packages" }}
commands = [
  "mkdir -p $SITE {{destdir}}{{prefix}}/bin && cp -r undistro $SITE/",
  "{{deps.python.prefix}}/bin/python3.11 -I -m compileall -q \
--invalidation-mode unchecked-hash -s {{destdir}} $SITE",
  # One site-packages with everything: the agent starts its own helpers as
  # `python -m undistro…` with PYTHONPATH = this directory, so the
  # dependencies must be found there too (links into their kegs).
  "for dep in {dep_prefixes}; do ln -s $dep/lib/python3.11/site-packages/* $SITE/; done",
  '''cat > {{destdir}}{{prefix}}/bin/undistro <<'SHIM'
#!{{deps.python.prefix}}/bin/python3.11 -I
import sys
sys.path[0:0] = ["{{prefix}}/lib/python3.11/site-packages"]
from undistro.cli import main
sys.exit(main())
SHIM''',
  "chmod 755 {{destdir}}{{prefix}}/bin/undistro",
]
"""
_RECIPE = _RECIPE.replace(
    "{dep_prefixes}", " ".join(f"{{{{deps.{name}.prefix}}}}" for name in PYTHON_DEPS)
)

"""Building resolved packages into the store, dependencies first.

Each build: verify and unpack the source into a temp dir, run the rendered
steps in the sandbox with a clean environment (only the dependencies'
prefixes on PATH, CPATH, LIBRARY_PATH, PKG_CONFIG_PATH and the rpath), install
with ``DESTDIR`` into a staging directory beside the store, write
``.keg.json``, drop the write bits and rename the finished prefix into place.
The rename is the commit: a failed or killed build leaves at most a
dot-named staging directory (removed on failure), never a store entry.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from undistro._progress import QUIET, Bars
from undistro.errors import BuildError
from undistro.kegs._closure import scan_references
from undistro.kegs._fs import fsync_dir
from undistro.kegs._platform import Platform
from undistro.kegs._recipe import show_value
from undistro.kegs._resolve import Resolution, Resolved
from undistro.kegs._sandbox import Sandbox, make_sandbox
from undistro.kegs._sources import Mirror, SourceCache
from undistro.kegs._steps import render, substitute
from undistro.kegs._store import (
    BUILD_STAGING,
    META_NAME,
    STORE_TRASH,
    KegMeta,
    Store,
    keg_hash,
    make_read_only,
    make_writable,
    store_lock,
)
from undistro.kegs._tarsafe import extract_source

_BASE_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_STEP = "==> "  # marks each recipe command in the build log


@dataclass(frozen=True, slots=True)
class PlannedKeg:
    """A resolved package with its hash and final store path."""

    node: Resolved
    hash: str
    path: str
    recipe_hash: str
    present: bool


@dataclass(frozen=True, slots=True)
class BuiltKeg:
    name: str
    version: str
    path: str
    built: bool  # False: it was already in the store
    seconds: float


class Builder:
    """Builds what a resolution needs into a store.

    ``jobs`` defaults to the number of cores; ``isolate=False`` is for
    debugging a recipe only (the log says the build was not isolated).
    """

    def __init__(
        self,
        store: Store,
        cache: SourceCache,
        platform: Platform,
        *,
        mirrors: Sequence[Mirror] = (),
        jobs: int | None = None,
        log_dir: str | None = None,
        isolate: bool = True,
        progress: Callable[[str], None] | None = None,
        bars: Bars = QUIET,
    ) -> None:
        self.store = store
        self.cache = cache
        self.platform = platform
        self.mirrors = tuple(mirrors)
        self.jobs = jobs or os.cpu_count() or 1
        self.log_dir = log_dir or store.physical("/var/log/undistro/builds")
        self.isolate = isolate
        self.progress = progress or (lambda _line: None)
        self.bars = bars  # undistro._progress: drawn only when a command asks

    # -- what would be built --------------------------------------------------

    def plan(self, resolution: Resolution) -> dict[str, PlannedKeg]:
        """Hash and path of every package, dependencies first (a keg's hash
        includes its dependencies' hashes, so a new zlib moves pngcheck too)."""
        planned: dict[str, PlannedKeg] = {}
        for node in resolution.order():
            recipe_hash = node.recipe.recipe_hash(node.version)
            source = node.recipe.source(node.version)
            inputs = {
                # the prefix is compiled in: another store is another build
                "store": self.store.directory,
                "name": node.name,
                "version": str(node.version),
                "recipe": recipe_hash,
                "sources": [source.sha256],
                "variants": dict(node.variants),
                "platform": self.platform.as_dict(),
                "build_deps": {d: planned[d].hash for d in node.build_deps},
                "run_deps": {d: planned[d].hash for d in node.run_deps},
            }
            hash_ = keg_hash(inputs)
            path = self.store.path_for(hash_, node.name, str(node.version))
            planned[node.name] = PlannedKeg(node, hash_, path, recipe_hash, self.store.exists(path))
        return planned

    # -- building ---------------------------------------------------------------

    def build(self, resolution: Resolution) -> dict[str, BuiltKeg]:
        """Build every missing keg, dependencies first; the result maps each
        package name to its store path. Raises BuildError on the first failure
        (kegs finished before it stay: they are complete and valid)."""
        planned = self.plan(resolution)
        for keg in planned.values():  # fetch everything first: fail before building
            if not keg.present:
                source = keg.node.recipe.source(keg.node.version)
                self.cache.fetch(source, self.mirrors, self.bars)
        out: dict[str, BuiltKeg] = {}
        missing = sum(1 for keg in planned.values() if not keg.present)
        with (
            store_lock(self.store.physical(self.store.directory), exclusive=False),
            self.bars.steps("building", missing) as step,
        ):
            for name, keg in planned.items():
                version = str(keg.node.version)
                if self.store.exists(keg.path):
                    out[name] = BuiltKeg(name, version, keg.path, False, 0.0)
                    continue
                step(f"{name} {version}")
                self.progress(f"building {name} {version} → {keg.path}")
                started = time.monotonic()
                self._build_one(keg, planned)
                out[name] = BuiltKeg(name, version, keg.path, True, time.monotonic() - started)
        return out

    def _build_one(self, keg: PlannedKeg, planned: Mapping[str, PlannedKeg]) -> None:
        node = keg.node
        label = f"{node.name} {node.version}"
        physical_store = self.store.physical(self.store.directory)
        os.makedirs(physical_store, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        log_path = os.path.join(self.log_dir, os.path.basename(keg.path) + ".log")
        workdir = tempfile.mkdtemp(prefix="undistro-build-")
        staging = tempfile.mkdtemp(prefix=BUILD_STAGING, dir=physical_store)
        try:
            self._discard_partial(keg.path)
            srcdir = self._unpack(node, workdir)
            sandbox = make_sandbox(
                self.store.directory, physical_store, workdir, staging, isolate=self.isolate
            )
            # Where the sandbox sees the staging dir (the store is at its final
            # path inside it, unless isolation could not be had under --root).
            seen_staging = (
                f"{self.store.directory}/{os.path.basename(staging)}"
                if sandbox.store_visible
                else staging
            )
            values, env = self._environment(keg, planned, sandbox, seen_staging, workdir)
            commands = render(node.recipe.build, values, self.platform, node.variants, label)
            script = os.path.join(workdir, "build.sh")
            with open(script, "w", encoding="utf-8") as f:
                f.write("set -e\n")
                for command in commands:
                    f.write(f"printf '%s\\n' {shlex.quote(_STEP + command)}\n{command}\n")
            self._run(sandbox, ["/bin/sh", script], env, srcdir, log_path, label)
            if os.path.lexists(self.store.physical(keg.path)) and not self.store.exists(keg.path):
                # Only an unisolated build can get here (isolated, the store
                # is read-only): it wrote the final prefix itself.
                raise BuildError(
                    f"{label}: the build wrote {keg.path} itself instead of under "
                    f"{{destdir}}{{prefix}} (does it honour DESTDIR?); nothing was added "
                    f"to the store; log: {log_path}"
                )
            output = os.path.join(staging, keg.path.lstrip("/"))
            if not os.path.isdir(output):
                raise BuildError(
                    f"{label}: the install step put nothing under {keg.path} "
                    f"(does it honour DESTDIR?); log: {log_path}"
                )
            self._finish(keg, planned, output)
        except BaseException:
            # Isolated, a build cannot write the store outside its staging
            # directory; unisolated it can, and what it put at the final
            # path is not a keg: it goes, so nothing was added.
            self._discard_partial(keg.path)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            _remove_tree(staging)

    def _discard_partial(self, path: str) -> None:
        """Remove whatever is at the final path ``path`` if it is not a
        finished keg — an earlier build wrote it and failed — so it neither
        blocks the rename nor is taken for a keg. A finished keg (the same
        inputs built by someone else) is left alone."""
        final = self.store.physical(path)
        if not os.path.lexists(final) or self.store.exists(path):
            return
        trash = os.path.join(
            os.path.dirname(final), f"{STORE_TRASH}{os.path.basename(final)}-{os.getpid()}"
        )
        os.rename(final, trash)
        self.progress(f"removed {path}: left by a build that failed, not a keg")
        _remove_tree(trash)

    def _unpack(self, node: Resolved, workdir: str) -> str:
        source = node.recipe.source(node.version)
        archive = os.path.join(workdir, "source.archive")
        self.cache.copy_out(source.sha256, archive)
        top = os.path.join(workdir, "src")
        extract_source(archive, top, source.filename)
        os.unlink(archive)
        entries = os.listdir(top)
        if len(entries) == 1 and os.path.isdir(os.path.join(top, entries[0])):
            top = os.path.join(top, entries[0])
        srcdir = os.path.join(top, node.recipe.build.subdir)
        if not os.path.isdir(srcdir):
            raise BuildError(
                f"{node.name}: build.subdir {node.recipe.build.subdir!r} not in source"
            )
        return srcdir

    def _environment(
        self,
        keg: PlannedKeg,
        planned: Mapping[str, PlannedKeg],
        sandbox: Sandbox,
        destdir: str,
        workdir: str,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Placeholder values and the clean environment of one build."""
        node = keg.node
        deps = _closure(node.name, planned, include_build=True)
        runtime = _closure(node.name, planned, include_build=False)

        def seen(path: str) -> str:
            return path if sandbox.store_visible else self.store.physical(path)

        values = {
            "prefix": keg.path,
            "destdir": destdir,
            "jobs": str(self.jobs),
            "name": node.name,
            "version": str(node.version),
        }
        values.update({f"variants.{k}": show_value(v) for k, v in node.variants.items()})
        for dep in deps:
            values[f"deps.{dep.node.name}.prefix"] = seen(dep.path)
            values[f"deps.{dep.node.name}.version"] = str(dep.node.version)
        prefixes = [seen(d.path) for d in deps]
        rpath = [f"{keg.path}/lib"] + [f"{d.path}/lib" for d in runtime]
        home = os.path.join(workdir, "home")
        os.makedirs(home)
        env = {
            "PATH": ":".join([*(f"{p}/bin" for p in prefixes), _BASE_PATH]),
            "HOME": home,
            "TMPDIR": workdir,
            "LC_ALL": "C",
            "TZ": "UTC",
            "SOURCE_DATE_EPOCH": "1",
            "CFLAGS": "-O2",
            "CXXFLAGS": "-O2",
            "CPPFLAGS": " ".join(f"-I{p}/include" for p in prefixes),
            "LDFLAGS": " ".join(
                [*(f"-L{p}/lib" for p in prefixes), *(f"-Wl,-rpath,{r}" for r in rpath)]
            ),
            "CPATH": ":".join(f"{p}/include" for p in prefixes),
            "LIBRARY_PATH": ":".join(f"{p}/lib" for p in prefixes),
            "PKG_CONFIG_PATH": ":".join(
                f"{p}/{sub}/pkgconfig" for p in prefixes for sub in ("lib", "share")
            ),
            "LD_RUN_PATH": ":".join(rpath),
            "CMAKE_PREFIX_PATH": ":".join(prefixes),
        }
        for key, text in node.recipe.build.env.items():
            env[key] = substitute(text, values, f"{node.name}: build.env.{key}")
        return values, env

    def _run(
        self,
        sandbox: Sandbox,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str,
        log_path: str,
        label: str,
    ) -> None:
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"# {label}: {sandbox.note}\n")
            log.flush()
            proc = subprocess.run(
                sandbox.command(argv, env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise BuildError(
                f"{label}: build failed (exit {proc.returncode}) at `{_last_command(log_path)}`; "
                f"nothing was added to the store; log: {log_path}"
            )

    def _finish(self, keg: PlannedKeg, planned: Mapping[str, PlannedKeg], output: str) -> None:
        node = keg.node
        candidates = {d.hash: d.path for d in _closure(node.name, planned, include_build=True)}
        found, _ = scan_references(output, candidates, self.store.directory)
        references = {candidates[h] for h in found}
        meta = KegMeta(
            name=node.name,
            version=str(node.version),
            hash=keg.hash,
            recipe_hash=keg.recipe_hash,
            variants=dict(node.variants),
            platform=self.platform.as_dict(),
            run_deps=tuple(planned[d].path for d in node.run_deps),
            references=tuple(sorted(references)),
            sources=(node.recipe.source(node.version).sha256,),
            build_deps=tuple(planned[d].path for d in node.build_deps),
        )
        with open(os.path.join(output, META_NAME), "w", encoding="utf-8") as f:
            f.write(meta.to_json())
            f.flush()
            os.fsync(f.fileno())
        make_read_only(output)
        _verify_staged(output, meta)
        final = self.store.physical(keg.path)
        self._discard_partial(keg.path)
        try:
            os.rename(output, final)
        except OSError:
            if not self.store.exists(keg.path):
                raise
            # Someone else built the same inputs first: theirs is as good.
        fsync_dir(os.path.dirname(final))


def _verify_staged(output: str, meta: KegMeta) -> None:
    """The staged keg is whole before it may take its final name: its
    record reads back as written and nothing in it is writable."""
    with open(os.path.join(output, META_NAME), encoding="utf-8") as f:
        if KegMeta.from_json(f.read()) != meta:
            raise BuildError(f"{meta.name} {meta.version}: {META_NAME} did not read back")
    for dirpath, _dirnames, filenames in os.walk(output):
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
            st = os.lstat(entry)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o222:
                raise BuildError(f"{meta.name} {meta.version}: {entry} is still writable")


def _closure(
    name: str, planned: Mapping[str, PlannedKeg], *, include_build: bool
) -> list[PlannedKeg]:
    """The dependencies a build of ``name`` sees: its direct build and run
    dependencies and, transitively, their run dependencies."""
    node = planned[name].node
    todo = list(node.run_deps) + (list(node.build_deps) if include_build else [])
    seen: dict[str, PlannedKeg] = {}
    while todo:
        dep = todo.pop(0)
        if dep in seen or dep == name:
            continue
        seen[dep] = planned[dep]
        todo.extend(planned[dep].node.run_deps)
    return list(seen.values())


def _last_command(log_path: str) -> str:
    last = "?"
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(_STEP):
                    last = line[len(_STEP) :].strip()
    except OSError:
        pass
    return last if len(last) <= 120 else last[:117] + "..."


def _remove_tree(path: str) -> None:
    if os.path.lexists(path):
        make_writable(path)
        shutil.rmtree(path, ignore_errors=True)

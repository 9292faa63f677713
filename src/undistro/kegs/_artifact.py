"""Binary cache: pack kegs into signed artifacts, install them verified.

A cache is a directory (or the same tree served over HTTP) holding, per keg::

    <hash>-<name>-<version>.tar.zst        the keg's tree, zstd-compressed tar
    <hash>-<name>-<version>.manifest.json  signed manifest (below)
    index.json                             base names by name, for lookups

The manifest file is ``{"manifest": TEXT, "key": PUB, "signature": SIG}``:
the manifest is carried as the exact text that was signed, so verifying
never depends on re-serialising JSON. The manifest gives the keg's
identity, recipe hash, runtime closure, the artifact's size and SHA-256 and
every file's type, mode, size and SHA-256.

Install order, so that nothing unverified ever enters the store: verify
every manifest of the closure → download each artifact into a temp dir
inside the store (same filesystem) while hashing it → extract it safely,
checking each file against the manifest → seal it read-only → rename it
into place, dependencies first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from undistro.errors import ArtifactError, KegError
from undistro.kegs._closure import (
    INSTALL_STAGING,
    Keg,
    closure,
    is_keg_basename,
    read_keg,
    store_kegs,
)
from undistro.kegs._fs import atomic_write, fsync_dir, remove_tree
from undistro.kegs._signing import Signature, load_signing_key, sign, verify
from undistro.kegs._store import DEFAULT_STORE, store_lock
from undistro.kegs._tarsafe import describe, extract, seal

FORMAT = "undistro-keg/1"
INDEX = "index.json"
ZSTD_LEVEL = 10
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Packed:
    basename: str
    artifact: str
    manifest: str
    size: int


# -- pack ---------------------------------------------------------------------


def pack(store_paths: Sequence[str], key_file: str, out_dir: str) -> list[Packed]:
    """Pack each keg and every keg of its runtime closure into ``out_dir``,
    dependencies first: an artifact is installable only with its closure.

    Every keg and its closure is checked before anything is written.
    """
    key = load_signing_key(key_file)
    try:
        todo = _with_closures(store_paths)
    except KegError as exc:
        raise ArtifactError(f"cannot pack: {exc}") from None
    os.makedirs(out_dir, exist_ok=True)
    done = []
    for keg, deps in todo:
        files = describe(keg.path)
        artifact = os.path.join(out_dir, f"{keg.basename}.tar.zst")
        digest, size = _write_tarball(keg.path, files, artifact)
        manifest = {
            "format": FORMAT,
            "name": keg.name,
            "version": keg.version,
            "hash": keg.hash,
            "recipe_hash": keg.recipe_hash,
            "basename": keg.basename,
            "closure": deps,
            "artifact": {"file": os.path.basename(artifact), "size": size, "sha256": digest},
            "files": files,
        }
        text = json.dumps(manifest, indent=1, sort_keys=True)
        sig = sign(text.encode(), key)
        envelope = {"manifest": text, "key": sig.key, "signature": sig.signature}
        manifest_path = os.path.join(out_dir, f"{keg.basename}.manifest.json")
        atomic_write(manifest_path, json.dumps(envelope).encode())
        _add_to_index(out_dir, keg.basename, keg.name, keg.version)
        done.append(Packed(keg.basename, artifact, manifest_path, size))
    return done


def _with_closures(store_paths: Sequence[str]) -> list[tuple[Keg, list[str]]]:
    """The kegs to pack: each one asked for and its closure, once, with the
    base names each needs, dependencies first (a keg's closure is a strict
    superset of each dependency's)."""
    found: dict[str, tuple[Keg, list[str]]] = {}
    for path in store_paths:
        keg = read_keg(path)
        store = os.path.dirname(keg.path)
        index = store_kegs(store)
        for name in sorted(closure(store, [keg.basename], index)):
            member = os.path.join(store, name)
            if member not in found:
                deps = sorted(closure(store, [name], index) - {name})
                found[member] = (read_keg(member), deps)
    return sorted(found.values(), key=lambda e: (len(e[1]), e[0].basename))


def _write_tarball(root: str, files: dict[str, dict[str, Any]], out: str) -> tuple[str, int]:
    """Deterministic tar (sorted, owner 0, mtime 0) → zstd → ``out``."""
    import zstandard

    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as raw, _HashingWriter(raw) as hashed:
            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
            with (
                cctx.stream_writer(cast(IO[bytes], hashed), closefd=False) as zst,
                tarfile.open(fileobj=zst, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name, entry in files.items():
                    info = tarfile.TarInfo(name)
                    info.mtime = 0
                    full = os.path.join(root, name)
                    if entry["type"] == "dir":
                        info.type, info.mode = tarfile.DIRTYPE, entry["mode"]
                        tar.addfile(info)
                    elif entry["type"] == "symlink":
                        info.type, info.linkname, info.mode = (
                            tarfile.SYMTYPE,
                            entry["target"],
                            0o777,
                        )
                        tar.addfile(info)
                    else:
                        info.size, info.mode = entry["size"], entry["mode"]
                        with open(full, "rb") as f:
                            tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
            digest, size = hashed.hexdigest(), hashed.size
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return digest, size


class _HashingWriter:
    """A write-only file that hashes what passes through to ``raw``."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _add_to_index(out_dir: str, basename: str, name: str, version: str) -> None:
    path = os.path.join(out_dir, INDEX)
    try:
        with open(path, "rb") as f:
            index = json.load(f)
    except FileNotFoundError:
        index = {"format": FORMAT, "kegs": {}}
    index["kegs"][basename] = {"name": name, "version": version}
    atomic_write(path, json.dumps(index, indent=1, sort_keys=True).encode())


# -- install --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    basename: str
    closure: tuple[str, ...]
    artifact_file: str
    artifact_size: int
    artifact_sha256: str
    files: dict[str, dict[str, Any]]
    data: dict[str, Any]


def install(
    ref: str,
    source: str,
    store: str,
    trusted: set[str],
    *,
    final_store: str = DEFAULT_STORE,
) -> list[str]:
    """Install the keg ``ref`` (a name, name-version, hash or base name) and
    its closure from the cache ``source`` into ``store``; returns the base
    names newly installed (already present ones are skipped).

    ``final_store`` is where the store is on the running system: absolute
    symlinks into a dependency are checked against it.
    """
    cache = open_cache(source)
    basename = resolve(cache, ref)
    manifests: dict[str, Manifest] = {}
    todo = [basename]
    while todo:
        name = todo.pop()
        if name in manifests:
            continue
        manifests[name] = load_manifest(cache, name, trusted)
        todo.extend(manifests[name].closure)
    os.makedirs(store, exist_ok=True)
    with store_lock(store, exclusive=False):
        present = set(store_kegs(store).values())
        wanted = [m for n, m in manifests.items() if n not in present]
        # a keg's closure is a strict superset of each dependency's closure
        wanted.sort(key=lambda m: (len(m.closure), m.basename))
        staging = os.path.join(store, f"{INSTALL_STAGING}{os.getpid()}")
        remove_tree(staging)
        os.mkdir(staging, 0o700)
        try:
            for m in wanted:
                _stage(cache, m, staging, final_store)
            installed = [m.basename for m in wanted if _move_in(staging, m.basename, store)]
            fsync_dir(store)
        finally:
            remove_tree(staging)
    return installed


def _move_in(staging: str, basename: str, store: str) -> bool:
    """Rename a verified keg into the store. Another installer may have put
    the same store path there meanwhile (same hash, same content): fine."""
    target = os.path.join(store, basename)
    try:
        os.rename(os.path.join(staging, basename), target)
    except OSError:
        if os.path.isfile(os.path.join(target, ".keg.json")):
            return False
        raise
    return True


def _stage(cache: Cache, m: Manifest, staging: str, final_store: str) -> None:
    import zstandard

    what = m.basename
    blob = os.path.join(staging, f"{m.basename}.tar.zst")
    with open(blob, "w+b") as f:
        digest = cache.download(m.artifact_file, f, m.artifact_size)
        if digest != m.artifact_sha256:
            raise ArtifactError(f"{what}: artifact hash differs from the signed manifest")
        f.seek(0)
        with zstandard.ZstdDecompressor().stream_reader(f) as stream:
            dest = os.path.join(staging, m.basename)
            try:
                extract(
                    stream,
                    dest,
                    m.files,
                    store_dir=final_store,
                    allowed_kegs={m.basename, *m.closure},
                    what=what,
                )
            except zstandard.ZstdError as exc:
                raise ArtifactError(f"{what}: damaged archive: {exc}") from None
    os.unlink(blob)
    try:
        keg = read_keg(dest)
    except KegError as exc:
        raise ArtifactError(f"{what}: {exc}") from None
    if (keg.name, keg.version, keg.hash) != (m.data["name"], m.data["version"], m.data["hash"]):
        raise ArtifactError(f"{what}: .keg.json does not match the manifest")
    seal(dest, m.files)


def load_manifest(cache: Cache, basename: str, trusted: set[str]) -> Manifest:
    """Fetch, verify and parse the manifest of ``basename``."""
    what = f"{basename}.manifest.json"
    if not is_keg_basename(basename):
        raise ArtifactError(f"{what}: {basename!r} is not a store path name")
    try:
        envelope = json.loads(cache.read(what))
        text, sig = envelope["manifest"], Signature(envelope["key"], envelope["signature"])
        if not all(isinstance(x, str) for x in (text, sig.key, sig.signature)):
            raise TypeError("manifest, key and signature must be strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{what}: malformed: {exc}") from None
    verify(text.encode(), sig, trusted, what)
    try:
        data = json.loads(text)
        art = data["artifact"]
        m = Manifest(
            basename=data["basename"],
            closure=tuple(data["closure"]),
            artifact_file=art["file"],
            artifact_size=int(art["size"]),
            artifact_sha256=art["sha256"],
            files=data["files"],
            data=data,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{what}: malformed manifest: {exc}") from None
    if data.get("format") != FORMAT or m.basename != basename:
        raise ArtifactError(f"{what}: not the manifest of {basename}")
    if m.artifact_file != f"{basename}.tar.zst":
        raise ArtifactError(f"{what}: names an unexpected artifact {m.artifact_file!r}")
    return m


def resolve(cache: Cache, ref: str) -> str:
    """A cache entry's base name from a name, name-version, hash or base name."""
    try:
        index = json.loads(cache.read(INDEX))["kegs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{cache.location}: bad {INDEX}: {exc}") from None
    if ref in index:
        return ref
    hits = sorted(
        b
        for b, e in index.items()
        if ref in (b[:32], e.get("name"), f"{e.get('name')}-{e.get('version')}")
    )
    if not hits:
        raise ArtifactError(f"no keg matching {ref!r} in {cache.location}")
    if len(hits) > 1:
        raise ArtifactError(f"{ref!r} is ambiguous in {cache.location}: {', '.join(hits[:3])}")
    return str(hits[0])


# -- caches ---------------------------------------------------------------------


class Cache:
    """A binary cache: a local directory or an HTTP(S) base URL."""

    def __init__(self, location: str) -> None:
        self.location = location

    def read(self, name: str) -> bytes:
        """A small file (manifest, index), read whole."""
        with self._open(name) as f:
            return f.read(1 << 26)

    def download(self, name: str, out: IO[bytes], max_size: int) -> str:
        """Copy ``name`` into ``out`` (at most ``max_size`` bytes); its SHA-256."""
        digest = hashlib.sha256()
        total = 0
        with self._open(name) as f:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
                if total > max_size:
                    raise ArtifactError(f"{name}: larger than the signed manifest says")
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[IO[bytes]]:
        if "/" in name or name.startswith("."):
            raise ArtifactError(f"{self.location}: refusing cache entry name {name!r}")
        if self.location.startswith(("http://", "https://")):
            import urllib.error
            import urllib.request

            url = f"{self.location.rstrip('/')}/{name}"
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    yield resp
            except urllib.error.HTTPError as exc:
                raise ArtifactError(f"{url}: HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise ArtifactError(f"{url}: {exc}") from None
            return
        path = os.path.join(self.location, name)
        try:
            f = open(path, "rb")  # noqa: SIM115 — yielded, closed below
        except OSError as exc:
            raise ArtifactError(f"{path}: {exc.strerror}") from None
        with f:
            yield f


def open_cache(location: str) -> Cache:
    if not location.startswith(("http://", "https://")) and not os.path.isdir(location):
        raise ArtifactError(f"{location}: not a cache directory or http(s) URL")
    return Cache(location)

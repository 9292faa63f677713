"""Extract a keg tarball without trusting it, checking it against its manifest.

The signed manifest already vouches for the archive's SHA-256, so this is
the second wall, not the first: even a tarball signed by a trusted key must
not write outside its directory. Each member must

- have a plain relative name (no ``/`` at the start, no ``..``, no ``.``);
- be a directory, a regular file or a symlink (no hard links, devices,
  fifos);
- sit in a directory this archive created (so nothing is written through
  a symlink);
- if a symlink, point inside the keg, or at a keg of its own closure by its
  absolute store path;
- be listed in the manifest with the same type, size, mode and hash.

Files are created with ``O_EXCL | O_NOFOLLOW``; a duplicate member fails.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Mapping
from typing import IO, Any

from undistro.errors import ArtifactError
from undistro.kegs._fs import fsync_dir

_CHUNK = 1 << 20


def extract(
    stream: IO[bytes],
    dest: str,
    files: Mapping[str, Mapping[str, Any]],
    *,
    store_dir: str,
    allowed_kegs: set[str],
    what: str,
) -> None:
    """Extract the tar ``stream`` into the new directory ``dest``.

    ``files`` is the manifest's table (relative path → type, mode, size,
    sha256 or target); ``allowed_kegs`` the base names absolute symlinks may
    point into (the keg itself and its closure) under ``store_dir``.
    """
    os.mkdir(dest, 0o755)
    dirs = {""}
    seen: set[str] = set()
    links: list[str] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                name = _check_name(member.name, what)
                if name in seen:
                    raise ArtifactError(f"{what}: {name!r} appears twice in the archive")
                seen.add(name)
                parent = os.path.dirname(name)
                if parent not in dirs:
                    raise ArtifactError(
                        f"{what}: {name!r} is not inside a directory of the archive"
                    )
                expected = files.get(name)
                if expected is None:
                    raise ArtifactError(f"{what}: {name!r} is not in the manifest")
                path = os.path.join(dest, name)
                if member.isdir():
                    _expect(expected, "dir", name, what)
                    os.mkdir(path, 0o700)
                    dirs.add(name)
                elif member.isreg():
                    _expect(expected, "file", name, what)
                    if member.size != expected.get("size"):
                        raise ArtifactError(f"{what}: {name!r} size differs from the manifest")
                    source = archive.extractfile(member)
                    assert source is not None  # a regular member always has data
                    digest = _write(source, path)
                    if digest != expected.get("sha256"):
                        raise ArtifactError(f"{what}: {name!r} hash differs from the manifest")
                elif member.issym():
                    _check_link(name, member.linkname, store_dir, allowed_kegs, what)
                    _expect(expected, "symlink", name, what)
                    if member.linkname != expected.get("target"):
                        raise ArtifactError(f"{what}: {name!r} target differs from the manifest")
                    os.symlink(member.linkname, path)
                    links.append(name)
                elif member.islnk():
                    raise ArtifactError(f"{what}: {name!r} is a hard link; not allowed")
                else:
                    raise ArtifactError(
                        f"{what}: {name!r} is a device or special file; not allowed"
                    )
                if not member.issym():
                    mode = expected.get("mode")
                    if not isinstance(mode, int) or (member.mode & 0o777) != mode:
                        raise ArtifactError(f"{what}: {name!r} mode differs from the manifest")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{what}: damaged archive: {exc}") from None
    missing = sorted(set(files) - seen)
    if missing:
        raise ArtifactError(f"{what}: {missing[0]!r} is in the manifest but not in the archive")
    _check_chains(dest, links, store_dir, allowed_kegs, what)


def seal(root: str, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Give every entry its manifest mode without write bits (store paths are
    read-only) and make the directories durable; file data was synced as it
    was written. Deepest first, so a directory is sealed after its content."""
    for name in sorted(files, key=lambda n: n.count("/"), reverse=True):
        entry = files[name]
        if entry["type"] != "symlink":
            os.chmod(os.path.join(root, name), entry["mode"] & 0o555)
        if entry["type"] == "dir":
            fsync_dir(os.path.join(root, name))
    os.chmod(root, 0o555)
    fsync_dir(root)


def describe(root: str) -> dict[str, dict[str, Any]]:
    """The manifest table of the tree at ``root`` (sorted, parents first)."""
    table: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                table[rel] = {"type": "symlink", "target": os.readlink(full)}
            elif stat.S_ISDIR(st.st_mode):
                table[rel] = {"type": "dir", "mode": st.st_mode & 0o777}
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                table[rel] = {
                    "type": "file",
                    "mode": st.st_mode & 0o777,
                    "size": st.st_size,
                    "sha256": digest,
                }
            else:
                raise ArtifactError(f"{full}: special files cannot be packed")
    return dict(sorted(table.items(), key=lambda kv: _walk_order(kv[0])))


def _walk_order(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))


def _check_name(name: str, what: str) -> str:
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name:
        raise ArtifactError(f"{what}: unsafe path {name!r} in the archive")
    if any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(f"{what}: unsafe path {name!r} in the archive")
    return name


def _check_link(name: str, target: str, store_dir: str, allowed: set[str], what: str) -> None:
    if os.path.isabs(target):
        norm = os.path.normpath(target)
        prefix = store_dir.rstrip("/") + "/"
        keg = norm[len(prefix) :].split("/", 1)[0] if norm.startswith(prefix) else ""
        if keg not in allowed:
            raise ArtifactError(f"{what}: symlink {name!r} -> {target!r} escapes the keg")
        return
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise ArtifactError(f"{what}: symlink {name!r} -> {target!r} escapes the keg")


def _check_chains(
    dest: str, links: list[str], store_dir: str, allowed: set[str], what: str
) -> None:
    """Each link alone stays inside; a chain of them (``a -> b/..`` with
    ``b -> ..``) might not. Resolve every link through the extracted tree."""
    real_dest = os.path.realpath(dest)
    for name in links:
        resolved = os.path.realpath(os.path.join(dest, name))
        if resolved == real_dest or resolved.startswith(real_dest + "/"):
            continue
        if os.path.isabs(os.readlink(os.path.join(dest, name))):
            continue  # checked against the closure by _check_link
        _check_link(name, resolved, store_dir, allowed, what)


def _expect(entry: Mapping[str, Any], kind: str, name: str, what: str) -> None:
    if entry.get("type") != kind:
        raise ArtifactError(
            f"{what}: {name!r} is a {kind} but the manifest says {entry.get('type')}"
        )


def _write(source: IO[bytes], path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()

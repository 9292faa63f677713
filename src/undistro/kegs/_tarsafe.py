"""Extract tarballs without trusting them: keg artifacts and build sources.

The project's own extractor, not ``TarFile.extractall(filter="data")``: that
filter is missing from Debian 12's python3 (3.11.2), and an artifact needs
more than it gives (a manifest to match).

**Artifacts** (:func:`extract`). The signed manifest already vouches for the
archive's SHA-256, so this is the second wall, not the first: even a tarball
signed by a trusted key must not write outside its directory. Each member must

- have a plain relative name (no ``/`` at the start, no ``..``, no ``.``);
- be a directory, a regular file or a symlink (no hard links, devices,
  fifos);
- sit in a directory this archive created (so nothing is written through
  a symlink);
- if a symlink, point inside the keg, or at a keg of its own closure by its
  absolute store path;
- be listed in the manifest with the same type, size, mode and hash.

Files are created with ``O_EXCL | O_NOFOLLOW``; a duplicate member fails.

**Sources** (:func:`extract_source`). An upstream tarball is pinned by its
SHA-256 but was made by anyone, with whatever tar they had: directory
entries may be missing, a member may repeat, a file may be a hard link to
another. The walls are the same — plain relative names, nothing written
through a symlink, links that stay inside, no devices or fifos — and the
modes are made sane (no setuid/setgid/sticky, no group/other write; the
owner may read and write, so the build can patch), with owner root and the
archive's mtimes kept (make compares them: a ``configure`` newer than its
``configure.ac`` must stay newer).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from undistro.errors import ArtifactError, SourceError
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


def extract_source(archive: str, dest: str, what: str) -> None:
    """Unpack the source tarball ``archive`` (gzip, bzip2, xz or plain; or a
    Debian ``.deb``, whose data member is unpacked) into the new directory
    ``dest``; a refused member raises SourceError naming it."""
    os.mkdir(dest, 0o755)
    kinds: dict[str, str] = {"": "dir"}  # what this archive made at each name
    dir_times: list[tuple[str, float]] = []
    links: list[str] = []
    try:
        with (
            _source_stream(archive, what) as (stream, rooted),
            tarfile.open(fileobj=stream, mode="r|*") as tar,
        ):
            for member in tar:
                if member.isdir() and member.name in (".", "./"):
                    continue
                name = _check_name(member.name, what, SourceError)
                _make_parents(dest, name, kinds, what)
                path = os.path.join(dest, name)
                old = kinds.get(name)
                if member.isdir():
                    if old is None:
                        os.mkdir(path, 0o700)
                    elif old != "dir":
                        raise SourceError(f"{what}: {name!r} is a directory and a file")
                    kinds[name] = "dir"
                    os.chmod(path, (member.mode & 0o755) | 0o700)
                    dir_times.append((path, member.mtime))
                    continue
                if old == "dir":
                    raise SourceError(f"{what}: {name!r} is a directory and a file")
                if old is not None:  # tar's rule: a later member replaces an earlier one
                    os.unlink(path)
                if member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None  # a regular member always has data
                    _write(source, path, sync=False)
                    os.chmod(path, _file_mode(member.mode))
                    kinds[name] = "file"
                elif member.issym():
                    target = member.linkname
                    if rooted and os.path.isabs(target):
                        # A package's tree is rooted at /: its /lib/x is our lib/x.
                        target = os.path.relpath(target.lstrip("/"), os.path.dirname(name) or ".")
                    if not target or os.path.isabs(target) or _leaves(name, target):
                        raise SourceError(
                            f"{what}: symlink {name!r} -> {target!r} leaves the source tree"
                        )
                    os.symlink(target, path)
                    kinds[name] = "symlink"
                    links.append(name)
                elif member.islnk():
                    target = _check_name(member.linkname, what, SourceError)
                    if kinds.get(target) != "file":
                        raise SourceError(
                            f"{what}: hard link {name!r} -> {target!r} is not to a file"
                            " the archive made before it"
                        )
                    os.link(os.path.join(dest, target), path, follow_symlinks=False)
                    kinds[name] = "file"
                else:
                    raise SourceError(f"{what}: {name!r} is a device or fifo; not allowed")
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    except SourceError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"{what}: cannot unpack: {exc}") from None
    # Each link alone stays inside; a chain of them (``d/a -> b/..`` with
    # ``d/b -> ..``) might not: resolve every one through the tree.
    top = os.path.realpath(dest)
    for name in links:
        resolved = os.path.realpath(os.path.join(dest, name))
        if resolved != top and not resolved.startswith(top + "/"):
            raise SourceError(f"{what}: symlink {name!r} leaves the source tree through a link")
    for path, mtime in reversed(dir_times):  # last: writing into a directory moves its mtime
        os.utime(path, (mtime, mtime))


class _Slice:
    """``size`` bytes of ``f`` from where it stands: one member of an ar archive."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data


@contextlib.contextmanager
def _source_stream(archive: str, what: str) -> Iterator[tuple[Any, bool]]:
    """The tar stream of a source: the file itself, or for a Debian binary
    package (``.deb``, an ar archive) its ``data.tar.*`` member — how a keg
    takes a prebuilt library (glibc) from Debian as a pinned package, not
    from the host's /usr. The flag says the tree is rooted at ``/`` (a
    package's absolute symlinks point into the package itself)."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            f.seek(0)
            yield f, False
            return
        while header := f.read(60):
            if len(header) != 60 or header[58:60] != b"`\n":
                raise SourceError(f"{what}: a broken ar archive header")
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(header[48:58].decode("ascii").strip())
            except ValueError:
                raise SourceError(f"{what}: a broken ar member size") from None
            if name.startswith("data.tar"):
                yield _Slice(f, size), True
                return
            f.seek(size + size % 2, os.SEEK_CUR)
        raise SourceError(f"{what}: an ar archive without a data.tar member (not a .deb)")


def _make_parents(dest: str, name: str, kinds: dict[str, str], what: str) -> None:
    """Create the missing parent directories of ``name`` (archives often
    list no directory entries), never through anything but a directory the
    archive itself made — so nothing is written through a symlink."""
    parts = name.split("/")[:-1]
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        kind = kinds.get(sub)
        if kind is None:
            os.mkdir(os.path.join(dest, sub), 0o755)
            kinds[sub] = "dir"
        elif kind != "dir":
            raise SourceError(f"{what}: {name!r} would be written through the {kind} {sub!r}")


def _file_mode(mode: int) -> int:
    """No setuid/setgid/sticky, no group/other write; the owner may read and
    write; others may execute only what the owner may."""
    mode = (mode & 0o755) | 0o600
    return mode if mode & 0o100 else mode & ~0o111


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


def _check_name(name: str, what: str, error: type[Exception] = ArtifactError) -> str:
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name:
        raise error(f"{what}: unsafe path {name!r} in the archive")
    if any(p in ("", ".", "..") for p in parts):
        raise error(f"{what}: unsafe path {name!r} in the archive")
    return name


def _leaves(name: str, target: str) -> bool:
    """Whether the relative link ``name -> target`` points outside the top."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
    return resolved == ".." or resolved.startswith("../")


def _check_link(name: str, target: str, store_dir: str, allowed: set[str], what: str) -> None:
    if os.path.isabs(target):
        norm = os.path.normpath(target)
        prefix = store_dir.rstrip("/") + "/"
        keg = norm[len(prefix) :].split("/", 1)[0] if norm.startswith(prefix) else ""
        if keg not in allowed:
            raise ArtifactError(f"{what}: symlink {name!r} -> {target!r} escapes the keg")
        return
    if _leaves(name, target):
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


def _write(source: IO[bytes], path: str, *, sync: bool = True) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if sync:  # a keg must survive a power cut; a build's sources need not
            out.flush()
            os.fsync(out.fileno())
    return digest.hexdigest()

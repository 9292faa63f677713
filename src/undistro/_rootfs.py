"""Every path operation under ``--root`` goes through here.

A :class:`RootFS` opens the root once as a directory fd and resolves paths
*as if the root were* ``/`` — the semantics of ``openat2(RESOLVE_IN_ROOT)``,
done portably, component by component with ``O_PATH | O_NOFOLLOW``:

- a symlink on the way is read and followed *inside* the root: an absolute
  target starts again at the root, a relative one at the link's directory;
- ``..`` never climbs above the root;
- more than 40 links on one path is ``ELOOP``;
- the last component is never followed: the operation (``stat``, ``open``,
  ``rename``, ``chmod``, ``mkdir``, ``symlink``, ``unlink``) is made on it
  with ``dir_fd=`` its resolved parent.

A caller may name *guarded* directories (those the policy declares): if one
of them turns out to be a symlink, the operation is refused instead of
following it — a declared directory replaced by a link is drift to report,
never a way to write elsewhere.

Parents are resolved once per run: the fd of each directory is cached by the
path it was asked as, so a no-op run still costs one ``fstatat`` per file.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from collections.abc import Iterable, Iterator

from undistro.errors import UndistroError

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_HOPS = 40
_CACHE_LIMIT = 256  # directory fds kept per run; well under RLIMIT_NOFILE
_NAME_MAX = 255

TEMP_SUFFIX = ".undistro-tmp"
"""Every temp file undistro writes beside a managed path is named
``.<name>~<pid>-<random>-<serial>.undistro-tmp``: unique per writer, and found again by
its prefix and suffix when a killed run left one behind."""


class PathRefused(UndistroError, PermissionError):
    """A path under the root cannot be used safely (a symlink out of the
    root, a link where a directory is declared, a hard-linked file, a FIFO or
    device where a file is declared). The message is one line for a person."""


_writer: str | None = None  # this process's part of every temp name
_serial = itertools.count()


def _new_writer() -> None:
    global _writer
    _writer = None


os.register_at_fork(after_in_child=_new_writer)


def temp_name(name: str) -> str:
    """A fresh temp name for a write beside ``name``, at most NAME_MAX bytes
    whatever the length of ``name``: the pid and a random tag (taken once
    per process, not two syscalls per file) and a serial number."""
    global _writer
    if _writer is None:
        _writer = f"{os.getpid()}-{os.urandom(3).hex()}"
    token = f"~{_writer}-{next(_serial):x}{TEMP_SUFFIX}"
    room = _NAME_MAX - 1 - len(token)
    stem = os.fsencode(name)[:room]
    return "." + os.fsdecode(stem) + token


def is_temp_name(name: str) -> bool:
    """Whether ``name`` looks like a temp file of an atomic write (ours, or
    the fixed ``.NAME.undistro-tmp`` of earlier versions)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def is_temp_of(temp: str, final: str) -> bool:
    """Whether ``temp`` is a name :func:`temp_name` (in any process) gives a
    write of ``final``: the agent drops exactly the rename of such a name
    onto ``final`` as its own repair."""
    if not is_temp_name(temp):
        return False
    if temp == f".{final}{TEMP_SUFFIX}":  # earlier versions' fixed name
        return True
    cut = temp.rfind("~")
    if cut <= 1:
        return False
    stem = temp[1:cut]
    # A long name is cut so that the temp name fits NAME_MAX exactly.
    return stem == final or (final.startswith(stem) and len(os.fsencode(temp)) == _NAME_MAX)


def describe_mode(st_mode: int) -> str:
    """What kind of thing an lstat found, for a person."""
    for test, word in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(st_mode):
            return word
    return "special file"


class RootFS:
    """Path operations confined to one root. Paths are absolute and
    normalised, as the policy writes them (``/etc/motd``); messages show them
    rebased (``ROOT/etc/motd``). Thread-safe; :meth:`close` (or garbage
    collection) releases the cached directory fds."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._prefix = "" if self.root == "/" else self.root
        # The root itself may be reached through links: the caller named it.
        self._rootfd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self._rootfd)
        self._root_id = (st.st_dev, st.st_ino)
        # policy directory path ("" for the root) -> (fd, the directories on
        # the way that were symlinks, by their policy path)
        self._dirs: dict[str, tuple[int, tuple[str, ...]]] = {"": (self._rootfd, ())}
        self._lock = threading.Lock()

    def __enter__(self) -> RootFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._forget()
            if self._rootfd >= 0:
                os.close(self._rootfd)
                self._rootfd = -1
            self._dirs.clear()

    def __del__(self) -> None:
        if getattr(self, "_rootfd", -1) >= 0:
            self.close()

    def shown(self, path: str) -> str:
        """``path`` as a person sees it: rebased under the root."""
        return self._prefix + path

    # -- reading ----------------------------------------------------------

    def lstat(self, path: str, guard: tuple[str, ...] = ()) -> os.stat_result:
        """``lstat`` of ``path``; FileNotFoundError/NotADirectoryError when it
        (or a parent) is missing, PathRefused when a guarded parent is a link."""
        parent, _, name = path.rpartition("/")
        with self._lock:
            fd, links = self._dirs.get(parent) or self._dir(parent, False)
            if links and guard:
                self._check(links, guard)
            try:
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                exc.filename = self.shown(path)
                raise

    def readlink(self, path: str, guard: tuple[str, ...] = ()) -> str:
        with self._lock, self._named(path):
            fd, name = self._parent(path, guard)
            return os.readlink(name, dir_fd=fd)

    def read(self, path: str, guard: tuple[str, ...] = (), *, limit: int | None = None) -> bytes:
        """The content of the regular file at ``path``; a link, FIFO, socket
        or device there is refused without opening it."""
        fd = self.open_regular(path, guard)
        try:
            chunks: list[bytes] = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    def open_regular(self, path: str, guard: tuple[str, ...] = ()) -> int:
        """A read-only fd on the regular file at ``path``, checked to be one
        (through an ``O_PATH`` fd first, so a FIFO or device is never opened)."""
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                st = os.fstat(pfd)
                if not stat.S_ISREG(st.st_mode):
                    what = describe_mode(st.st_mode)
                    raise PathRefused(f"{self.shown(path)} is a {what}, not a file")
                return _reopen(pfd, dfd, name, os.O_RDONLY, st)
            finally:
                os.close(pfd)

    def listdir(self, path: str, guard: tuple[str, ...] = ()) -> list[str]:
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            fd = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd
            )
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    # -- writing ----------------------------------------------------------

    def open(
        self,
        path: str,
        flags: int,
        mode: int = 0o600,
        *,
        guard: tuple[str, ...] = (),
        parents: bool = False,
    ) -> int:
        """``os.open`` of ``path`` (never following a link there); with
        ``parents`` missing directories on the way are made (0755)."""
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard, create=parents)
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)

    def create_temp(self, path: str, guard: tuple[str, ...] = ()) -> tuple[int, str]:
        """A new, empty, exclusive temp file (mode 0600) beside ``path``,
        making missing parents: its fd and its path."""
        parent = path.rpartition("/")[0]
        tmp = f"{parent}/{temp_name(path.rpartition('/')[2])}"
        fd = self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, guard=guard, parents=True)
        return fd, tmp

    def replace(self, tmp: str, path: str, guard: tuple[str, ...] = ()) -> None:
        """Rename ``tmp`` over ``path`` (same directory: one ``renameat``)."""
        if tmp.rpartition("/")[0] != path.rpartition("/")[0]:
            raise ValueError(f"{tmp} and {path} are not in one directory")
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            os.rename(tmp.rpartition("/")[2], name, src_dir_fd=dfd, dst_dir_fd=dfd)

    def unlink(self, path: str, guard: tuple[str, ...] = ()) -> None:
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            os.unlink(name, dir_fd=dfd)

    def rmtree(self, path: str, guard: tuple[str, ...] = ()) -> None:
        """Remove the directory tree at ``path`` without following any link
        in it (``shutil.rmtree``'s fd-based walk)."""
        import shutil  # costs bz2 and lzma: only when removing a tree

        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            shutil.rmtree(name, dir_fd=dfd)
            self._forget()

    def mkdir(
        self, path: str, mode: int, uid: int = -1, gid: int = -1, guard: tuple[str, ...] = ()
    ) -> None:
        """Make the directory ``path`` (and missing parents, 0755) with
        exactly ``mode`` (not filtered by the umask) and owner."""
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard, create=True)
            os.mkdir(name, mode, dir_fd=dfd)
            self._set_meta(dfd, name, path, mode, uid, gid)

    def symlink(
        self, target: str, path: str, uid: int = -1, gid: int = -1, guard: tuple[str, ...] = ()
    ) -> None:
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard, create=True)
            os.symlink(target, name, dir_fd=dfd)
            if uid != -1 or gid != -1:
                os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)

    def set_meta(
        self,
        path: str,
        mode: int | None = None,
        uid: int = -1,
        gid: int = -1,
        *,
        guard: tuple[str, ...] = (),
    ) -> os.stat_result:
        """chmod/chown the file or directory at ``path`` in place — never a
        link there, and never a regular file with more than one hard link
        (changing it would change the other names too: replace it instead).
        Returns the new ``lstat``."""
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            return self._set_meta(dfd, name, path, mode, uid, gid)

    def lchown(self, path: str, uid: int, gid: int, guard: tuple[str, ...] = ()) -> None:
        """chown the link itself at ``path``."""
        with self._lock, self._named(path):
            dfd, name = self._parent(path, guard)
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)

    def fsync_dir(self, path: str) -> None:
        """fsync the directory ``path`` (after renames in it)."""
        with self._lock:
            fd, _ = self._dirs.get(path) or self._dir(path, False)
            rfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.fsync(rfd)
        finally:
            os.close(rfd)

    def syncfs(self, directories: Iterable[str]) -> None:
        """One ``syncfs`` per file system holding any of ``directories``."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        seen: set[int] = set()
        for directory in directories:
            try:
                with self._lock:
                    fd, _ = self._dirs.get(directory) or self._dir(directory, False)
                    dev = os.fstat(fd).st_dev
                    if dev in seen:
                        continue
                    seen.add(dev)
                    rfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            try:
                if libc.syncfs(rfd) != 0:
                    os.sync()
            finally:
                os.close(rfd)

    def changed_tree(self) -> None:
        """Directories were made, removed or replaced by a link: resolve
        parents afresh from now on."""
        with self._lock:
            self._forget()

    # -- resolution -------------------------------------------------------

    @contextlib.contextmanager
    def _named(self, path: str) -> Iterator[None]:
        """Errors name the whole rebased path, not the last component."""
        try:
            yield
        except PathRefused:
            raise
        except OSError as exc:
            if not str(exc.filename or "/").startswith("/"):
                exc.filename = self.shown(path)
            raise

    def _parent(self, path: str, guard: tuple[str, ...], create: bool = False) -> tuple[int, str]:
        parent, _, name = path.rpartition("/")
        if not name or name in (".", ".."):
            raise PathRefused(f"{self.shown(path)}: not a path undistro manages")
        fd, links = self._dirs.get(parent) or self._dir(parent, create)
        if links and guard:
            self._check(links, guard)
        return fd, name

    def _check(self, links: tuple[str, ...], guard: tuple[str, ...]) -> None:
        for link in links:
            if link in guard:
                raise PathRefused(
                    f"{self.shown(link)} is a symlink, but the policy declares a directory "
                    "there: not following it"
                )

    def _dir(self, path: str, create: bool) -> tuple[int, tuple[str, ...]]:
        """The fd of directory ``path`` ("" is the root), walking from the
        longest prefix already resolved and caching each step."""
        hit = self._dirs.get(path)
        if hit is not None:
            return hit
        if self._rootfd < 0:
            raise ValueError(f"{self.root}: this RootFS is closed")
        if len(self._dirs) >= _CACHE_LIMIT:
            self._forget()
        base = path
        while True:
            base = base.rpartition("/")[0]
            hit = self._dirs.get(base)
            if hit is not None:
                break
        fd, links = hit
        hops = [0]
        for name in path[len(base) + 1 :].split("/"):
            base = f"{base}/{name}"
            child, was_link = self._child(fd, name, create, hops, base)
            if was_link:
                links = (*links, base)
            fd = child
            self._dirs[base] = (fd, links)
        return fd, links

    def _child(
        self, dfd: int, name: str, create: bool, hops: list[int], shown: str
    ) -> tuple[int, bool]:
        """An owned ``O_PATH`` fd of the directory ``name`` in ``dfd``,
        following a link there inside the root; and whether it was a link."""
        if name in ("", "."):
            return os.dup(dfd), False
        if name == "..":
            return self._up(dfd), False
        for attempt in (0, 1):
            try:
                return os.open(name, _DIR, dir_fd=dfd), False
            except FileNotFoundError:
                if not create or attempt:
                    raise FileNotFoundError(
                        errno.ENOENT, os.strerror(errno.ENOENT), self.shown(shown)
                    ) from None
                # Made meanwhile, or a dangling link: looked at below.
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=dfd)
            except NotADirectoryError:
                break
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.shown(shown))
        hops[0] += 1
        if hops[0] > _MAX_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), self.shown(shown))
        target = os.readlink(name, dir_fd=dfd)
        start = self._rootfd if target.startswith("/") else dfd
        fd = os.dup(start)
        try:
            for part in target.split("/"):
                if part in ("", "."):
                    continue
                nxt, _ = self._child(fd, part, create, hops, shown)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, True

    def _up(self, dfd: int) -> int:
        """The parent of ``dfd``, but the root is its own parent."""
        st = os.fstat(dfd)
        if (st.st_dev, st.st_ino) == self._root_id:
            return os.dup(self._rootfd)
        return os.open("..", _DIR, dir_fd=dfd)

    def _forget(self) -> None:
        for fd, _ in self._dirs.values():
            if fd != self._rootfd:
                os.close(fd)
        self._dirs = {"": (self._rootfd, ())}

    def _set_meta(
        self,
        dfd: int,
        name: str,
        path: str,
        mode: int | None,
        uid: int,
        gid: int,
    ) -> os.stat_result:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            st = os.fstat(pfd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise PathRefused(
                    f"{self.shown(path)} is a {describe_mode(st.st_mode)}: not changing its "
                    "mode or owner"
                )
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                raise PathRefused(
                    f"{self.shown(path)} has {st.st_nlink} hard links: changing it in place "
                    "would change the other names too"
                )
            # Through the fd's magic link: the very inode just checked. Where
            # /proc is not mounted (a bare chroot), by name: it was not a
            # link an instant ago, and the parent is pinned.
            where, at = (f"/proc/self/fd/{pfd}", None) if _HAVE_PROC else (name, dfd)
            if uid != -1 or gid != -1:
                os.chown(where, uid, gid, dir_fd=at)
            if mode is not None:
                os.chmod(where, mode, dir_fd=at)
            return os.fstat(pfd)
        finally:
            os.close(pfd)


_HAVE_PROC = os.path.isdir("/proc/self/fd")


def _reopen(pfd: int, dfd: int, name: str, flags: int, st: os.stat_result) -> int:
    """Open the inode behind an ``O_PATH`` fd for real I/O (by name, never
    following a link and never blocking, where /proc is not mounted)."""
    flags |= os.O_CLOEXEC | os.O_NOCTTY
    if _HAVE_PROC:
        fd = os.open(f"/proc/self/fd/{pfd}", flags)
    else:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    got = os.fstat(fd)
    if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise PathRefused(f"{name} was replaced while being opened")
    return fd


def confined(root: str, path: str) -> str:
    """Check that ``path`` (under ``root``) stays inside ``root`` when the
    kernel resolves it — for what undistro opens by name (the state database,
    the node config). Returns ``path``; PathRefused names the symlink that
    leads out."""
    root = os.path.abspath(root)
    real_root = os.path.realpath(root)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == ".." or rel.startswith("../"):
        return path  # not under the root: the caller chose it explicitly
    current = real_root
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        step = os.path.join(current, part)
        if os.path.islink(step):
            resolved = os.path.realpath(step)
            if resolved != real_root and not resolved.startswith(real_root.rstrip("/") + "/"):
                shown = os.path.join(root, os.path.relpath(step, real_root))
                raise PathRefused(
                    f"{shown} is a symlink to {os.readlink(step)}, out of the root {root}: "
                    "refusing to use it"
                )
            current = resolved
        else:
            current = step
    return path


def sweep_temp_files(fs: RootFS, managed: Iterable[str]) -> int:
    """Remove the temp files a killed run left beside the ``managed`` paths
    (any name of the temp pattern that is not itself managed). Returns how
    many were removed."""
    wanted = set(managed)
    removed = 0
    for directory in sorted({p.rpartition("/")[0] for p in wanted}):
        try:
            names = fs.listdir(directory) if directory else os.listdir(fs.root)
        except OSError:
            continue
        for name in names:
            path = f"{directory}/{name}"
            if is_temp_name(name) and path not in wanted:
                with contextlib.suppress(OSError):
                    fs.unlink(path)
                    removed += 1
    return removed

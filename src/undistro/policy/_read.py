"""Reading what lives in a policy directory, safely.

A policy directory is input, and input can be hostile or just wrong: a FIFO
named ``policy/a.toml`` would block ``open()`` for ever (wedging the agent),
a character device may act on being opened (a watchdog starts its timer),
and a 10 GB file would be read whole into memory. So every policy input —
manifest, policy file, template, source — is read here: the path must name
a regular file (a symlink to one is followed, as git checkouts have them),
checked with ``stat`` before opening, opened with ``O_NONBLOCK`` so that a
FIFO swapped in between cannot block, checked again with ``fstat``, and
read up to a size limit.
"""

from __future__ import annotations

import errno
import os
import stat

MIB = 1024 * 1024
MAX_DEPTH = 32  # nesting of arrays and tables in TOML read as policy input


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit`` of them).

    Raises ``FileNotFoundError``/``IsADirectoryError``/``OSError`` as ``open``
    would, and ``ValueError`` with a message for a person when the path is
    not a regular file or is larger than ``limit``.
    """
    st = os.stat(path)
    _check(st, limit)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check(os.fstat(fd), limit)  # the path may have been swapped since stat
        chunks = []
        left = limit + 1  # one byte more tells a file that grew past the limit
        while left > 0:
            chunk = os.read(fd, min(left, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise ValueError(f"larger than the limit of {_size(limit)}")
    return data


def _check(st: os.stat_result, limit: int) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"not a regular file ({_kind(st.st_mode)})")
    if st.st_size > limit:
        raise ValueError(f"larger than the limit of {_size(limit)}")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a file"


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n} bytes"


def walk(
    top: str, only: frozenset[str] | None = None
) -> tuple[list[tuple[str, os.stat_result]], list[str]]:
    """Every entry under ``top`` (symlinks followed) with its ``stat``, sorted,
    and the directories reached a second time.

    A symlink back to an ancestor (``policy/loop -> ..``) would make a naive
    walk, or ``glob('**')``, go round until the path is too long — and two of
    them double the work at every turn. Each directory is entered once; the
    names that lead to one already entered are returned as loops, for the
    loader to refuse. ``only`` keeps just those names at the top.
    """
    out: list[tuple[str, os.stat_result]] = []
    loops: list[str] = []
    try:
        top_st = os.stat(top)
    except OSError:
        return out, loops
    seen = {(top_st.st_dev, top_st.st_ino)}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(top, rel)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if only is not None and not rel and entry.name not in only:
                continue
            sub = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            out.append((sub, st))
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    loops.append(sub)
                    continue
                seen.add((st.st_dev, st.st_ino))
                stack.append(sub)
    out.sort(key=lambda item: item[0])
    loops.sort()
    return out, loops


def too_deep(value: object, limit: int) -> bool:
    """Whether lists and tables nest more than ``limit`` levels in ``value``.

    Iterative, since the point is to refuse what recursion would choke on:
    past this check, code may recurse into the value (``repr``, pickle,
    Jinja2) without a RecursionError.
    """
    if not isinstance(value, dict | list):
        return False
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):  # scalars never deepen it
                stack.append((child, level + 1))
    return False

"""The source cache: archives addressed by SHA-256, never used unverified.

A source enters the cache only through :meth:`SourceCache.add_stream`,
which hashes while copying and renames into place only when the hash is the
one asked for; :meth:`SourceCache.verified` hashes again before a build uses
it, so a file changed on disk is refused rather than built.

Where a missing archive comes from is a list of :class:`Mirror` objects tried
in order — a local directory, an HTTP(S) base URL, then the recipe's own
URLs. Anything with ``label`` and ``open(source)`` can be a mirror, which is
where the fleet's peers will plug in (a peer serves blobs by hash, exactly
what ``open`` is handed).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from undistro._hash import sha256_file
from undistro._progress import QUIET, Bars
from undistro.errors import SourceError
from undistro.kegs._recipe import Source

_CHUNK = 1 << 20
_TIMEOUT = 30.0


class Mirror(Protocol):
    """Somewhere a source archive may be found; raises OSError when not there."""

    @property
    def label(self) -> str: ...

    def open(self, source: Source) -> BinaryIO: ...


@dataclass(frozen=True, slots=True)
class DirectoryMirror:
    """A local directory holding archives by file name (or ``sha256/HEX``)."""

    path: str

    @property
    def label(self) -> str:
        return self.path

    def open(self, source: Source) -> BinaryIO:
        for name in (source.filename, os.path.join("sha256", source.sha256)):
            candidate = os.path.join(self.path, name)
            if os.path.isfile(candidate):
                return open(candidate, "rb")
        raise FileNotFoundError(f"neither {source.filename} nor sha256/{source.sha256[:12]}…")


@dataclass(frozen=True, slots=True)
class UrlMirror:
    """An HTTP(S) or file:// base URL serving archives by file name."""

    base: str

    @property
    def label(self) -> str:
        return self.base

    def open(self, source: Source) -> BinaryIO:
        return open_url(self.base.rstrip("/") + "/" + urllib.parse.quote(source.filename))


@dataclass(frozen=True, slots=True)
class OriginUrl:
    """One of the URLs the recipe itself names (each tried on its own, so a
    bad copy at one does not hide a good one at the next)."""

    url: str

    @property
    def label(self) -> str:
        return self.url

    def open(self, source: Source) -> BinaryIO:
        return open_url(self.url)


def open_url(url: str) -> BinaryIO:
    """Open a local path, ``file://`` or ``http(s)://`` URL for reading."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if scheme else url
        return open(path, "rb")
    if scheme not in ("http", "https"):
        raise OSError(f"unsupported URL scheme {scheme!r}")
    from urllib import error, request  # ~15 ms with http.client and ssl: only to download

    try:
        response: BinaryIO = request.urlopen(url, timeout=_TIMEOUT)
    except error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code}") from None
    except error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    return response


def mirrors_from(specs: Iterable[str]) -> list[Mirror]:
    """Turn ``--mirror`` arguments (directories or URLs) into mirrors."""
    out: list[Mirror] = []
    for spec in specs:
        if "://" in spec:
            out.append(UrlMirror(spec))
        else:
            out.append(DirectoryMirror(os.path.abspath(spec)))
    return out


class SourceCache:
    """``DIR/sha256/HEX`` files; written atomically, read only after a check."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.blobs = os.path.join(directory, "sha256")

    def path(self, sha256: str) -> str:
        return os.path.join(self.blobs, sha256)

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self.path(sha256))

    def verified(self, sha256: str) -> str:
        """The cached file for ``sha256``, hashed again now; SourceError if
        it is missing or its content no longer matches (it is then removed)."""
        path = self.path(sha256)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise SourceError(
                f"source {sha256[:12]}… is not in the cache {self.directory}"
            ) from None
        if actual != sha256:
            os.unlink(path)
            raise SourceError(f"cached source {sha256[:12]}… was corrupted on disk; removed it")
        return path

    def add_stream(
        self,
        stream: BinaryIO,
        expected: str | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> str:
        """Copy ``stream`` in, hashing as it goes; keep it only if it hashes
        to ``expected`` (when given). Returns the SHA-256. ``advance`` hears
        each chunk's size (a progress bar)."""
        os.makedirs(self.blobs, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.blobs)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    if advance is not None:
                        advance(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise SourceError(
                    f"SHA-256 mismatch: expected {expected[:12]}…, got {actual[:12]}…"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.path(actual))
            tmp = ""
            return actual
        finally:
            if tmp:
                os.unlink(tmp)

    def add_file(self, path: str) -> str:
        try:
            with open(path, "rb") as f:
                return self.add_stream(f)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None

    def fetch(self, source: Source, mirrors: Sequence[Mirror] = (), bars: Bars = QUIET) -> str:
        """The verified cached path of ``source``, fetching it first if needed
        from ``mirrors`` in order, then from the recipe's URLs. A copy with the
        wrong hash is discarded and the next place is tried. ``bars`` shows
        each download (undistro._progress; nothing by default)."""
        if self.has(source.sha256):
            try:
                return self.verified(source.sha256)
            except SourceError:
                pass
        failures: list[str] = []
        for mirror in [*mirrors, *(OriginUrl(url) for url in source.urls)]:
            try:
                with (
                    mirror.open(source) as stream,
                    bars.transfer(source.filename, _length(stream)) as advance,
                ):
                    self.add_stream(stream, source.sha256, advance)
                return self.verified(source.sha256)
            except (OSError, SourceError) as exc:
                failures.append(f"{mirror.label}: {_reason(exc)}")
        raise SourceError(
            f"cannot fetch {source.filename} (sha256 {source.sha256[:12]}…): " + "; ".join(failures)
        )

    def copy_out(self, sha256: str, dest: str) -> None:
        """Copy a verified blob to ``dest`` (the builder unpacks the copy, so
        the hash it checked is the content it uses)."""
        digest = hashlib.sha256()
        with open(self.path(sha256), "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            os.unlink(dest)
            raise SourceError(f"cached source {sha256[:12]}… changed while being read")


def _length(stream: BinaryIO) -> int | None:
    """The size of what ``stream`` will give, if it says (HTTP, a file)."""
    headers = getattr(stream, "headers", None)
    if headers is not None:
        value = headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None
    try:
        return os.fstat(stream.fileno()).st_size or None
    except (OSError, AttributeError, ValueError):
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

"""``undistro recipe new``: a first recipe from a name and a source URL.

Nothing is downloaded. When the archive is at hand — a local path, a
``file://`` URL, or a file of that name in a mirror directory — its SHA-256
is computed, it is added to the source cache and its build system is guessed
from the file names inside; otherwise ``sha256`` is left empty for the author
to fill in, and ``recipe check`` refuses the recipe until they do.
"""

from __future__ import annotations

import os
import re
import tarfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from undistro.errors import UsageError
from undistro.kegs._recipe import NAME_RE
from undistro.kegs._sources import SourceCache

_ARCHIVE_EXT = re.compile(r"(\.orig)?\.(tar\.(gz|bz2|xz|zst|lz)|tgz|tbz2|txz|zip)$")
_VERSION_IN_NAME = re.compile(r"[-_]v?(\d+(?:\.\d+)+[a-z0-9]*)")
_MARKERS = (
    ("configure", "autotools"),
    ("CMakeLists.txt", "cmake"),
    ("meson.build", "meson"),
    ("Makefile", "make"),
)


@dataclass(frozen=True, slots=True)
class Scaffold:
    text: str
    sha256: str | None
    system: str
    version: str


def guess_version(filename: str) -> str | None:
    stem = _ARCHIVE_EXT.sub("", filename)
    matches = _VERSION_IN_NAME.findall(stem)
    for candidate in reversed(matches):
        try:
            return str(Version(candidate))
        except InvalidVersion:
            continue
    return None


def scaffold(
    name: str,
    url: str,
    *,
    version: str | None = None,
    cache: SourceCache | None = None,
    mirror_dirs: Sequence[str] = (),
) -> Scaffold:
    if not NAME_RE.match(name):
        raise UsageError(f"not a package name: {name!r} (lower-case letters, digits, + . _ -)")
    parts = urllib.parse.urlsplit(url)
    filename = os.path.basename(parts.path if parts.scheme else url)
    chosen = version or guess_version(filename)
    if chosen is None:
        raise UsageError(f"cannot tell the version from {filename!r}: give --version")
    try:
        chosen = str(Version(chosen))
    except InvalidVersion:
        raise UsageError(f"not a version: {chosen!r}") from None
    local = _local_copy(url, filename, mirror_dirs)
    sha = None
    system = "autotools"
    if local is not None:
        if cache is not None:
            sha = cache.add_file(local)
        else:
            from undistro._hash import sha256_file

            sha = sha256_file(local)
        system = _guess_system(local)
    source_url = url if parts.scheme else f"file://{os.path.abspath(url)}"
    return Scaffold(_render(name, source_url, filename, chosen, sha, system), sha, system, chosen)


def _local_copy(url: str, filename: str, mirror_dirs: Sequence[str]) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("", "file"):
        path = urllib.parse.unquote(parts.path) if parts.scheme else url
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
        return path
    for directory in mirror_dirs:
        candidate = os.path.join(directory, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def _guess_system(path: str) -> str:
    try:
        with tarfile.open(path) as tar:
            names = {m.name.split("/", 1)[-1] for m in tar.getmembers() if m.name.count("/") <= 1}
    except (tarfile.TarError, OSError):
        return "autotools"
    for marker, system in _MARKERS:
        if marker in names:
            return system
    return "commands"


def _render(name: str, url: str, filename: str, version: str, sha: str | None, system: str) -> str:
    sha_line = (
        f'sha256 = "{sha}"' if sha else 'sha256 = ""  # FILL IN (recipe check fails until then)'
    )
    # The author's next question is where the archive should come from and
    # how its hash is had; the comment answers with real forms.
    where = [
        "# Where the archive is fetched from: its upstream release URL, e.g.",
        f'#   url = "https://example.org/releases/{filename}"',
        '# or several, tried in order: urls = ["https://...", "http://mirror.example/..."].',
    ]
    if url.startswith("file://"):
        where.append(
            "# The file:// URL below names the file you gave: it works on this machine only."
        )
    where.append(
        f"# sha256: `sha256sum {filename}`, or `undistro sources add {filename}` (prints it"
        " and caches the file)."
    )
    where_text = "\n".join(where)
    build = {
        "autotools": (
            'system = "autotools"\n# configure_args = ["--disable-nls"]\n'
            "# install_args come after the template's own, so they override its variables:\n"
            '# install_args = ["sysconfdir={prefix}/etc"]'
        ),
        "cmake": 'system = "cmake"\n# configure_args = ["-DBUILD_TESTING=OFF"]',
        "meson": 'system = "meson"\n# configure_args = ["-Dtests=false"]',
        "make": (
            'system = "make"\n# make_args = ["CC=cc"]\n'
            "# install_args come after the template's own, so they override its variables:\n"
            '# install_args = ["DESTDIR={destdir}{prefix}/bin"]   (a Makefile that adds only bin/)'
        ),
        "commands": (
            'system = "commands"\ncommands = [\n'
            '  "make -j{jobs}",\n'
            '  "make install PREFIX={prefix} DESTDIR={destdir}",\n]'
        ),
    }[system]
    return f"""\
name = "{name}"
description = ""
license = ""
homepage = ""

[versions."{version}"]
{where_text}
url = "{url}"
{sha_line}

# [variants]
# static = {{ default = false, description = "static libraries only" }}

# [dependencies.build]
# pkg-config = "*"
# [dependencies.run]
# zlib = {{ version = ">=1.2", when = {{ os_family = "debian" }} }}

[build]
{build}
"""

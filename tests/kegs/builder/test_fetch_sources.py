"""scripts/fetch-example-sources fetches the tarball a recipe pins from any
Debian revision that carries it, and names the file that failed in full.

A mirror may lack the newest revision of a source package (a security
upload: zlib 1:1.2.13.dfsg-1+deb12u1 gave 404 here) while every revision
shares the upstream .orig. An ``apt-get`` placed first on PATH refuses the
revisions a test says are missing, as such a mirror does, and hands the rest
to the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import RECIPES, REPO

ZLIB_ORIG = "zlib_1.2.13.dfsg.orig.tar.bz2"
ZLIB_SHA = "71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1"


def zlib_revisions() -> list[str]:
    """The revisions of zlib whose source lists the pinned .orig, newest
    first (the order the script tries them in)."""
    out = subprocess.run(
        ["apt-cache", "showsrc", "zlib"], capture_output=True, text=True, check=False
    ).stdout
    revisions: list[str] = []
    version = ""
    for line in out.splitlines():
        if line.startswith("Version: "):
            version = line.split()[1]
        elif f" {ZLIB_SHA} " in line and version not in revisions:
            revisions.append(version)
    newest_first = subprocess.run(
        ["sort", "-rV"], input="\n".join(revisions), capture_output=True, text=True, check=True
    )
    return newest_first.stdout.split()


def run_script(tmp_path: Path, missing: list[str]) -> subprocess.CompletedProcess[str]:
    """The script on ``tmp_path/recipes`` (zlib's example recipe unless the
    test wrote one) into ``tmp_path/cache``."""
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    if not (recipes / "zlib.toml").exists():
        shutil.copy(RECIPES / "zlib.toml", recipes)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "apt-get"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >>{tmp_path}/apt.log\n'
        'for arg; do case "$arg" in zlib=*)\n'
        '  case " $MISSING " in *" ${arg#zlib=} "*)\n'
        '    echo "E: Failed to fetch http://deb.debian.org/debian/pool/main/z/zlib/'
        'zlib_${arg#zlib=}.dsc  404  Not Found [IP: 203.0.113.80 80]" >&2; exit 100;;\n'
        "  esac;;\nesac; done\n"
        'exec /usr/bin/apt-get "$@"\n'
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECIPES": str(recipes),
        "MISSING": " ".join(missing),
    }
    return subprocess.run(
        [str(REPO / "scripts" / "fetch-example-sources"), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture
def revisions(example_cache: str) -> list[str]:
    """(example_cache: the script has run once, so deb-src is configured.)"""
    found = zlib_revisions()
    assert found, "apt-cache showsrc zlib lists no revision carrying the pinned tarball"
    return found


def test_a_revision_missing_from_the_mirror_falls_back_to_one_that_has_the_tarball(
    tmp_path: Path, revisions: list[str]
) -> None:
    if len(revisions) < 2:
        pytest.skip(
            "machine limit: this machine's Debian archive lists one revision of zlib"
            f" ({revisions[0]}): none can stand in for a missing one"
        )
    proc = run_script(tmp_path, missing=revisions[:-1])  # all but the oldest
    assert proc.returncode == 0, proc.stderr
    cached = tmp_path / "cache" / "sha256" / ZLIB_SHA
    assert cached.is_file()
    tried = [line for line in (tmp_path / "apt.log").read_text().splitlines() if "source" in line]
    assert [line.split("=", 1)[1] for line in tried] == [rev.split("=")[-1] for rev in revisions]
    assert all("--download-only --tar-only" in line for line in tried)
    assert f"verified in {tmp_path / 'cache'}" in proc.stdout


def test_when_no_revision_can_be_had_the_file_that_failed_is_named_in_full(
    tmp_path: Path, revisions: list[str]
) -> None:
    proc = run_script(tmp_path, missing=revisions)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == (
        f"fetch-example-sources: could not download {ZLIB_ORIG} (sha256 {ZLIB_SHA}) "
        f"of the Debian source package zlib; tried {' '.join(revisions)}:"
    )
    for rev in revisions:  # apt's own line, whole: the URL that failed
        assert (
            f"fetch-example-sources:   zlib={rev}: E: Failed to fetch "
            f"http://deb.debian.org/debian/pool/main/z/zlib/zlib_{rev}.dsc  404  Not Found"
        ) in proc.stderr
    assert not (tmp_path / "cache" / "sha256").exists()


def test_a_pinned_tarball_no_revision_carries_is_named(
    tmp_path: Path, revisions: list[str]
) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (RECIPES / "zlib.toml").read_text().replace(ZLIB_SHA, "0" * 64)
    (recipes / "zlib.toml").write_text(text)
    proc = run_script(tmp_path, missing=[])
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        f"fetch-example-sources: {ZLIB_ORIG} (sha256 {'0' * 64}): no revision of the Debian "
        "source package zlib lists it (apt-cache showsrc zlib)"
    )

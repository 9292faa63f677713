"""Unpacking build sources with the project's own extractor (Debian 12's
python3 3.11.2 has no ``extractall(filter=...)``): hostile members are
refused, sloppy but honest tarballs unpack, modes are made sane and mtimes
kept."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from undistro.errors import SourceError
from undistro.kegs._tarsafe import extract_source

from .conftest import Synthetic


def tarball(path: Path, *members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w:gz") -> str:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def file(name: str, text: str = "x", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    return member(name, **attrs), text.encode()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    return member(name, kind, linkname=target), None


def directory(name: str, **attrs: object) -> tuple[tarfile.TarInfo, None]:
    return member(name, tarfile.DIRTYPE, **{"mode": 0o755, **attrs}), None


HOSTILE: dict[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "dot-dot": lambda out: [file("pkg/../../evil")],
    "absolute": lambda out: [file(f"{out}/evil")],
    "absolute symlink": lambda out: [link("pkg/l", str(out))],
    "escaping symlink": lambda out: [link("pkg/l", "../../..")],
    "write through a symlink": lambda out: [link("pkg/l", "."), link("pkg/l/x", "..")],
    "file through a symlink": lambda out: [
        directory("pkg/d"),
        link("pkg/out", "d"),
        file("pkg/out/evil"),
    ],
    "link chain": lambda out: [directory("d"), link("d/b", ".."), link("d/a", "b/..")],
    "hard link outside": lambda out: [link("pkg/h", "../../etc/passwd", tarfile.LNKTYPE)],
    "hard link to a symlink": lambda out: [
        link("pkg/s", "x"),
        link("pkg/h", "pkg/s", tarfile.LNKTYPE),
    ],
    "device": lambda out: [(member("pkg/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None)],
    "fifo": lambda out: [(member("pkg/fifo", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_source_members_are_refused(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tarball(tmp_path / "src.tar.gz", *HOSTILE[case](outside))
    dest = tmp_path / "work" / "src"
    dest.parent.mkdir()
    with pytest.raises(SourceError, match=r"^src\.tar\.gz: "):
        extract_source(archive, str(dest), "src.tar.gz")
    assert os.listdir(outside) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "work" / "evil").exists()


def test_a_sloppy_but_honest_tarball_unpacks_with_sane_modes_and_its_mtimes(
    tmp_path: Path,
) -> None:
    archive = tarball(
        tmp_path / "src.tar.bz2",
        directory("./"),
        # no directory entries for pkg/ or pkg/sub/: tar does not need them
        file("./pkg/configure.ac", "AC_INIT", mtime=1_000_000),
        file("./pkg/configure", "#!/bin/sh\n", mode=0o6777, mtime=2_000_000),
        file("pkg/sub/data", "old", mode=0o400),
        file("pkg/sub/data", "new", mode=0o664),  # a later member replaces it
        link("pkg/sub/again", "pkg/sub/data", tarfile.LNKTYPE),
        link("pkg/cfg", "configure"),
        link("pkg/sub/up", "../configure.ac"),
        directory("pkg/sub", mode=0o777, mtime=3_000_000),
        mode="w:bz2",
    )
    dest = tmp_path / "src"
    extract_source(archive, str(dest), "src.tar.bz2")
    pkg = dest / "pkg"
    assert (pkg / "sub" / "data").read_text() == "new"
    assert (pkg / "sub" / "again").read_text() == "new"
    assert os.readlink(pkg / "cfg") == "configure"
    assert (pkg / "sub" / "up").read_text() == "AC_INIT"
    assert stat.S_IMODE((pkg / "configure").stat().st_mode) == 0o755  # no setuid, no g/o write
    assert stat.S_IMODE((pkg / "sub" / "data").stat().st_mode) == 0o644
    assert stat.S_IMODE((pkg / "sub").stat().st_mode) == 0o755
    assert (pkg / "configure").stat().st_mtime == 2_000_000
    assert (pkg / "configure.ac").stat().st_mtime == 1_000_000
    assert (pkg / "sub").stat().st_mtime == 3_000_000


def test_a_damaged_source_archive_is_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match=r"^src\.tar\.gz: cannot unpack: "):
        extract_source(str(archive), str(tmp_path / "src"), "src.tar.gz")


def test_a_build_of_a_hostile_source_stops_before_running_anything(
    synthetic: Synthetic, tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tarball(
        tmp_path / "evil-1.0.tar.gz", file("evil-1.0/README"), link("evil-1.0/x", str(outside))
    )
    sha = synthetic.cache.add_file(archive)
    (synthetic.recipes / "evil.toml").write_text(
        f'name = "evil"\n[versions."1.0"]\nurl = "file://{archive}"\nsha256 = "{sha}"\n'
        '[build]\nsystem = "commands"\ncommands = ["touch x/ran"]\n'
    )
    code, out, err = cli(
        "keg", "build", "evil", "--recipes", synthetic.recipes,
        "--cache", synthetic.cache.directory, "--store", synthetic.store.directory,
    )  # fmt: skip
    assert code == 1, (out, err)
    assert err.strip().splitlines()[-1:] == [
        f"undistro: evil-1.0.tar.gz: symlink 'evil-1.0/x' -> '{outside}' leaves the source tree"
    ]
    assert os.listdir(outside) == []
    assert synthetic.entries() == []

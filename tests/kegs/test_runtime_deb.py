"""A Debian binary package as a keg's source (how the glibc keg takes
libc6): its data member is unpacked with the source extractor's walls, its
absolute symlinks are read as pointing into the package itself."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from undistro.errors import SourceError
from undistro.kegs._tarsafe import extract_source


def _tar(members: list[tuple[str, str | None, str]]) -> bytes:
    """(name, symlink target or None, content) members in an xz tarball."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:xz") as tar:
        for name, target, text in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
    return raw.getvalue()


def _deb(path: Path, data: bytes, *, data_name: str = "data.tar.xz") -> Path:
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", _tar([("./control", None, "Package: x\n")])),
        (data_name, data),
    ]
    out = bytearray(b"!<arch>\n")
    for name, body in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        out += body + (b"\n" if len(body) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


def test_a_deb_unpacks_its_data_member_with_rooted_symlinks(tmp_path: Path) -> None:
    deb = _deb(
        tmp_path / "x_1_amd64.deb",
        _tar(
            [
                ("./lib/x86_64-linux-gnu/libc.so.6", None, "ELF"),
                ("./lib64/ld.so", "/lib/x86_64-linux-gnu/libc.so.6", ""),
            ]
        ),
    )
    extract_source(str(deb), str(tmp_path / "out"), deb.name)
    link = tmp_path / "out/lib64/ld.so"
    assert os.readlink(link) == "../lib/x86_64-linux-gnu/libc.so.6"
    assert link.read_text() == "ELF"
    assert not (tmp_path / "out/control").exists()


def test_dpkg_deb_reads_the_same_package(tmp_path: Path) -> None:
    """The test's own .deb is a real one (so the extractor is checked
    against what dpkg makes of it, not only against itself)."""
    # dpkg-deb is part of every Debian (the floor): missing, this is not a
    # machine limit but a broken setup, and the test fails.
    assert shutil.which("dpkg-deb"), "dpkg-deb (Debian's dpkg) is not installed"
    deb = _deb(tmp_path / "x.deb", _tar([("./etc/x", None, "y")]))
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        assert tar.getnames() == ["./etc/x"]


@pytest.mark.parametrize(
    "members",
    [
        [("./lib/a", "/../../etc/passwd", "")],  # rooted, and still leaving the tree
        [("./lib/a", "../../outside", "")],
        [("../escape", None, "x")],
    ],
)
def test_a_deb_that_leaves_its_tree_is_refused(tmp_path: Path, members: list) -> None:  # type: ignore[type-arg]
    deb = _deb(tmp_path / "bad.deb", _tar(members))
    with pytest.raises(SourceError):
        extract_source(str(deb), str(tmp_path / "out"), deb.name)
    assert not (tmp_path / "outside").exists()


def test_an_ar_archive_without_data_or_broken_is_one_error(tmp_path: Path) -> None:
    deb = _deb(tmp_path / "nodata.deb", b"", data_name="other.bin")
    with pytest.raises(SourceError, match=r"without a data\.tar member"):
        extract_source(str(deb), str(tmp_path / "a"), deb.name)
    broken = tmp_path / "broken.deb"
    broken.write_bytes(b"!<arch>\n" + b"x" * 30)
    with pytest.raises(SourceError, match="broken ar"):
        extract_source(str(broken), str(tmp_path / "b"), broken.name)

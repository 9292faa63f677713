"""The swarm reference, its validation and the child's command line (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from undistro.content import SwarmError, SwarmRef, swarm_peers, swarm_ref
from undistro.content._swarm import piece_size
from undistro.fleet import Member


def test_the_torrent_is_a_function_of_the_bytes_alone(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    b.write_bytes(data)
    os.utime(b, (0, 0))
    assert swarm_ref(a) == swarm_ref(b)
    b.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert swarm_ref(a).info_hash != swarm_ref(b).info_hash


def test_libtorrent_reads_the_same_info_hash(tmp_path: Path) -> None:
    lt = pytest.importorskip("libtorrent", reason="PyPI libtorrent is a dependency")
    from undistro.content._swarm import torrent_info

    path = tmp_path / "blob"
    path.write_bytes(os.urandom(700_000))
    sha, info = torrent_info(path)
    ti = lt.torrent_info(b"d4:info" + info + b"e")
    assert str(ti.info_hashes().v1) == swarm_ref(path).info_hash
    assert ti.name() == sha and ti.total_size() == 700_000


@pytest.mark.parametrize(("size", "piece"), [(1, 256 << 10), (256 << 20, 256 << 10),
                                             (300 << 20, 512 << 10), (1 << 40, 4 << 20)])  # fmt: skip
def test_piece_sizes(size: int, piece: int) -> None:
    assert piece_size(size) == piece


@pytest.mark.parametrize(
    ("sha", "size", "ih"),
    [("x" * 64, 1, "a" * 40), ("a" * 63, 1, "a" * 40), ("a" * 64, 0, "a" * 40),
     ("a" * 64, 1, "A" * 40), ("a" * 64, 1, "../" * 13 + "a")],
)  # fmt: skip
def test_bad_references_are_refused(sha: str, size: int, ih: str) -> None:
    with pytest.raises(SwarmError):
        SwarmRef(sha, size, ih)


def test_peers_come_from_alive_members_with_a_port_tag() -> None:
    members = [
        Member("a", "10.0.0.1", 7946, "alive", {"bt": "7949"}),
        Member("me", "10.0.0.2", 7946, "alive", {"bt": "7949"}),
        Member("b", "10.0.0.3", 7946, "failed", {"bt": "7949"}),
        Member("c", "10.0.0.4", 7946, "alive", {}),
        Member("d", "10.0.0.5", 7946, "alive", {"bt": "99999"}),
        Member("e", "10.0.0.6", 7946, "alive", {"bt": "-1"}),
    ]
    assert swarm_peers(members, "10.0.0.2") == [("10.0.0.1", 7949)]


@pytest.mark.parametrize("listen", ["0.0.0.0:7949", "7949", "10.0.0.1:x", "[::]:7949"])
def test_the_child_refuses_to_listen_anywhere_but_an_address(listen: str, tmp_path: Path) -> None:
    pytest.importorskip("libtorrent", reason="PyPI libtorrent is a dependency")
    r = subprocess.run([sys.executable, "-m", "undistro.content._swarm_child",
                        f"--state={tmp_path}", f"--listen={listen}"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "fleet ADDR:PORT" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_libtorrent_never_enters_the_agent_process() -> None:
    code = "import undistro.content as c; c.Swarm; import sys; print('libtorrent' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"

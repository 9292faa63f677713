"""The one content store: verified on the way in, atomic, hostile names refused."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import undistro.content
from undistro.content import ContentError, ContentStore, HashMismatch, store_for_root


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_package_reexports_its_public_surface() -> None:
    for name in undistro.content.__all__:
        assert hasattr(undistro.content, name), name


def test_a_blob_lands_read_only_at_its_hash(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    data = b"bundle bytes" * 1000
    digest = store.add_stream(_hex(data), io.BytesIO(data))
    path = tmp_path / "content" / "sha256" / digest
    assert store.path(digest) == str(path)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.has(digest) and store.verify(digest)
    with store.open(digest) as f:
        assert f.read() == data
    assert list(store) == [digest]
    assert os.listdir(tmp_path / "content" / "tmp") == []


def test_add_bytes_and_add_file_agree(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    src = tmp_path / "x"
    src.write_bytes(b"abc")
    assert store.add_file(str(src)) == store.add_bytes(b"abc") == _hex(b"abc")
    with pytest.raises(ContentError, match="cannot read"):
        store.add_file(str(tmp_path / "missing"))


def test_a_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    with pytest.raises(HashMismatch, match="mismatch"):
        store.add_stream(_hex(b"promised"), io.BytesIO(b"delivered"))
    assert not store.has(_hex(b"promised"))
    assert list(store) == []
    assert os.listdir(tmp_path / "content" / "tmp") == []
    assert os.listdir(tmp_path / "content" / "sha256") == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../etc/passwd",
        "a" * 63,
        "A" * 64,
        "g" * 64,
        "a" * 64 + "/",
        "a" * 64 + "\n",
        "/" + "a" * 63,
        "..",
        "a" * 65,
    ],
)
def test_malformed_digests_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    store = ContentStore(str(tmp_path))
    for call in (store.path, store.has, store.open, store.verify, store.remove):
        with pytest.raises(ContentError, match="not a SHA-256"):
            call(name)
    with pytest.raises(ContentError, match="not a SHA-256"):
        store.add_stream(name, io.BytesIO(b"x"))
    assert not (tmp_path / "content").exists()


def test_a_blob_changed_on_disk_fails_verify_and_is_removed(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path))
    digest = store.add_bytes(b"good")
    path = Path(store.path(digest))
    path.chmod(0o644)
    path.write_bytes(b"evil")
    assert not store.verify(digest)
    assert not store.has(digest)
    assert not store.verify(digest)  # missing: False, not an error


def test_missing_blob_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="not in"):
        ContentStore(str(tmp_path)).open("0" * 64)


def test_store_for_root_is_under_the_root(tmp_path: Path) -> None:
    store = store_for_root(str(tmp_path))
    assert store.blobs == str(tmp_path / "var/lib/undistro/content/sha256")
    assert store_for_root(str(tmp_path), "/elsewhere").blobs == "/elsewhere/content/sha256"


_WRITER = """
import sys
from undistro.content import ContentStore
store = ContentStore(sys.argv[1])
print(store.add_stream(sys.argv[2], sys.stdin.buffer))
"""


def test_two_writers_of_one_blob_both_succeed(tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    digest = _hex(data)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), digest],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    # Interleave the writes so that all four are mid-stream at once.
    for offset in range(0, len(data), 1 << 20):
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(data[offset : offset + (1 << 20)])
            p.stdin.flush()
    outs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert {o.decode().strip() for o in outs} == {digest}
    store = ContentStore(str(tmp_path))
    assert store.verify(digest)
    assert os.listdir(store.tmp) == []


def test_kill_9_mid_write_leaves_only_a_temp_that_the_next_add_removes(tmp_path: Path) -> None:
    digest = _hex(b"never finished")
    p = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), digest], stdin=subprocess.PIPE
    )
    try:
        assert p.stdin is not None
        p.stdin.write(b"never")
        p.stdin.flush()
        store = ContentStore(str(tmp_path))
        deadline = time.monotonic() + 10
        while not (os.path.isdir(store.tmp) and os.listdir(store.tmp)):
            assert time.monotonic() < deadline, "the writer never made its temp file"
            time.sleep(0.01)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert len(os.listdir(store.tmp)) == 1
    assert not store.has(digest) and list(store) == []
    store.add_bytes(b"next")
    assert os.listdir(store.tmp) == []


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("machine limit: cannot mount a tmpfs here: " + done.stderr.decode().strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_the_store_stays_intact(tiny_fs: Path) -> None:
    store = ContentStore(str(tiny_fs))
    small = store.add_bytes(b"kept")
    big = os.urandom(1 << 20)
    with pytest.raises(ContentError) as caught:
        store.add_stream(_hex(big), io.BytesIO(big))
    assert "no space left on device" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(store) == [small] and store.verify(small)
    assert os.listdir(store.tmp) == []

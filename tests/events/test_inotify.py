"""PathWatcher against the real kernel: a timeline per case (declare, change
the world from outside, read what the watcher says)."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

import undistro.events
from tests._drift import drifts
from undistro.events import SETTLED_MASK, PathWatcher
from undistro.resources import Watch


@pytest.fixture
def watcher():
    w = PathWatcher()
    try:
        yield w
    finally:
        w.close()


def _wait(w: PathWatcher, timeout: float = 2.0) -> None:
    ready, _, _ = select.select([w.fileno()], [], [], timeout)
    assert ready, "no inotify event arrived"


def _read(w: PathWatcher):
    _wait(w)
    return w.read()


def _managed(tmp_path: Path, watcher: PathWatcher, name: str = "motd") -> Path:
    target = tmp_path / "etc" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text("hello\n")
    watcher.declare(f"file:/etc/{name}", [Watch("path", str(target))])
    assert watcher.sync() == {}
    return target


def test_public_surface() -> None:
    assert set(undistro.events.__all__) == {
        "ENTRY_MASK",
        "SETTLED_MASK",
        "Batch",
        "Inotify",
        "PathWatcher",
        "RawEvent",
        "describe",
    }


def test_idle_read_is_empty(tmp_path: Path, watcher: PathWatcher) -> None:
    _managed(tmp_path, watcher)
    batch = watcher.read()
    assert not batch
    assert batch.events == 0


@drifts
def test_change_to_managed_file_names_its_key(tmp_path, watcher, drift, flag) -> None:
    target = _managed(tmp_path, watcher)
    drift(target)
    batch = _read(watcher)
    assert list(batch.changed) == ["file:/etc/motd"]
    assert batch.changed["file:/etc/motd"].startswith(flag)
    assert batch.changed["file:/etc/motd"].endswith(str(target))


def test_sibling_changes_concern_nobody(tmp_path: Path, watcher: PathWatcher) -> None:
    _managed(tmp_path, watcher)
    (tmp_path / "etc" / "other").write_text("x")
    batch = _read(watcher)
    assert batch.events > 0
    assert not batch


def test_one_directory_watch_serves_many_keys(tmp_path: Path, watcher: PathWatcher) -> None:
    a = _managed(tmp_path, watcher, "a")
    _managed(tmp_path, watcher, "b")
    assert watcher.stats()["watched_dirs"] == 1
    watcher.read()  # b's own creation
    a.write_text("drift")
    assert list(_read(watcher).changed) == ["file:/etc/a"]


def test_burst_of_writes_is_one_check(tmp_path: Path, watcher: PathWatcher) -> None:
    target = _managed(tmp_path, watcher)
    for i in range(10_000):
        with open(target, "w") as f:
            f.write(str(i))
    batch = _read(watcher)
    assert batch.changed.keys() == {"file:/etc/motd"}
    assert batch.events > 1
    assert not watcher.read()


def test_tree_watch_sees_new_entries(tmp_path: Path, watcher: PathWatcher) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    watcher.declare("directory:/conf.d", [Watch("tree", str(conf))])
    watcher.sync()
    (conf / "stray.conf").write_text("x")
    assert _read(watcher).changed["directory:/conf.d"] == f"create {conf}/stray.conf"


def test_missing_parent_is_watched_through_its_ancestor(tmp_path: Path, watcher) -> None:
    target = tmp_path / "a" / "b" / "motd"
    watcher.declare("file:/a/b/motd", [Watch("path", str(target))])
    assert watcher.sync() == {}
    assert watcher.stats()["watched_dirs"] == 1
    (tmp_path / "a").mkdir()
    assert "file:/a/b/motd" in _read(watcher).changed
    watcher.sync()
    (tmp_path / "a" / "b").mkdir()
    assert "file:/a/b/motd" in _read(watcher).changed
    watcher.sync()
    target.write_text("x")
    assert _read(watcher).changed["file:/a/b/motd"].endswith(str(target))


def test_removed_directory_asks_for_a_rescan(tmp_path: Path, watcher) -> None:
    target = _managed(tmp_path, watcher)
    target.unlink()
    _read(watcher)
    target.parent.rmdir()
    batch = _read(watcher)
    while "file:/etc/motd" not in batch.rescan:
        batch = _read(watcher)
    assert "/etc" in batch.rescan["file:/etc/motd"]
    watcher.sync()
    target.parent.mkdir()
    assert "file:/etc/motd" in _read(watcher).changed


def test_queue_overflow_is_reported(tmp_path: Path, watcher: PathWatcher) -> None:
    _managed(tmp_path, watcher)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    for i in range(limit + 10):
        (tmp_path / "etc" / f"n{i}").touch()
    batch = _read(watcher)
    assert batch.overflow
    assert watcher.stats()["overflows"] == 1


def test_dropped_key_stops_events_and_watches(tmp_path: Path, watcher) -> None:
    target = _managed(tmp_path, watcher)
    watcher.forget("file:/etc/motd")
    watcher.sync()
    assert watcher.stats()["watched_dirs"] == 0
    target.write_text("drift")
    assert not select.select([watcher.fileno()], [], [], 0.1)[0] or not watcher.read()


def test_settled_mask_ignores_half_written_files(tmp_path: Path, watcher) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    watcher.declare("policy", [Watch("tree", str(policy))], mask=SETTLED_MASK)
    watcher.sync()
    fd = os.open(policy / "a.toml", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"[file.x]")
    assert not select.select([watcher.fileno()], [], [], 0.1)[0] or not watcher.read()
    os.close(fd)
    assert _read(watcher).changed["policy"].startswith("close_write")


@pytest.mark.skipif(os.geteuid() != 0, reason="machine limit: not root, cannot drop to 'nobody'")
def test_refused_watch_is_reported_not_ignored() -> None:
    """The kernel refuses a watch on a directory we may not read: the key
    comes back as a failure (the agent then checks and journals it)."""
    import json
    import shutil
    import tempfile

    top = tempfile.mkdtemp(prefix="undistro-refused-")
    os.chmod(top, 0o755)
    secret = os.path.join(top, "secret")
    os.mkdir(secret, 0o700)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # as nobody, which may see 'secret' but not read it
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            w = PathWatcher()
            w.declare("file:/x", [Watch("path", os.path.join(secret, "x"))])
            os.write(write_fd, json.dumps([w.sync(), w.stats()["unwatched_keys"]]).encode())
            code = 0
        finally:
            os._exit(code)
    try:
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            failures, unwatched = json.loads(pipe.read())
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        shutil.rmtree(top)
    assert failures == {"file:/x": f"cannot watch {secret}: Permission denied"}
    assert unwatched == 1


def test_own_repair_rename_is_recognised_not_a_change(tmp_path: Path, watcher) -> None:
    target = _managed(tmp_path, watcher)
    tmp = target.with_name(f".{target.name}.undistro-tmp")
    tmp.write_text("hello\n")
    os.rename(tmp, target)  # what the engine's flush does
    batch = _read(watcher)
    assert batch.events > 0 and not batch
    assert watcher.stats()["own_writes"] == 1
    # Someone else's write right after is a change, as is their own rename.
    target.write_text("drift\n")
    assert list(_read(watcher).changed) == ["file:/etc/motd"]
    other = target.with_name(".motd.editor-tmp")
    other.write_text("x\n")
    os.rename(other, target)
    assert _read(watcher).changed["file:/etc/motd"].startswith("moved_to")


def test_rename_from_another_files_temp_name_is_a_change(tmp_path: Path, watcher) -> None:
    target = _managed(tmp_path, watcher)
    tmp = target.with_name(".issue.undistro-tmp")  # ours, but for another file
    tmp.write_text("x\n")
    os.rename(tmp, target)
    assert list(_read(watcher).changed) == ["file:/etc/motd"]


def test_editor_scratch_files_do_not_concern_the_policy(tmp_path: Path, watcher) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    watcher.declare("@policy", [Watch("tree", str(policy))], mask=SETTLED_MASK, scratch=False)
    watcher.declare("tree-user", [Watch("tree", str(policy))], mask=SETTLED_MASK)
    assert watcher.sync() == {}
    for name in ("sedAb12Cd", ".#main.toml", "main.toml~", ".main.toml.swp", "4913"):
        (policy / name).write_text("scratch\n")
        (policy / name).unlink()
    batch = _read(watcher)
    assert "@policy" not in batch.changed
    assert "tree-user" in batch.changed  # only keys that opt out ignore them
    (policy / "sedXy34Zw").write_text("edited\n")
    os.rename(policy / "sedXy34Zw", policy / "main.toml")  # sed -i's final step
    batch = _read(watcher)
    assert batch.changed["@policy"] == f"moved_to {policy / 'main.toml'}"


def test_directory_created_while_its_ancestor_is_being_watched_is_not_missed(
    tmp_path: Path, watcher
) -> None:
    target = tmp_path / "etc" / "app" / "app.conf"
    watcher.declare("file:/etc/app/app.conf", [Watch("path", str(target))])
    real_add = watcher._ino.add_watch

    def racing_add(path: str, mask: int) -> int:
        if path == str(tmp_path):  # the ancestor: someone creates etc/app right now
            target.parent.mkdir(parents=True, exist_ok=True)
        return real_add(path, mask)

    watcher._ino.add_watch = racing_add  # type: ignore[method-assign]
    assert watcher.sync() == {}
    assert str(target.parent) in watcher._wd_of  # placed deeper after all
    target.write_text("x\n")
    assert list(_read(watcher).changed) == ["file:/etc/app/app.conf"]


@pytest.mark.parametrize(
    ("temp", "final", "own"),
    [
        (".motd~123-abcdef-1f.undistro-tmp", "motd", True),
        (".motd.undistro-tmp", "motd", True),  # earlier versions' fixed name
        (".motdx~123-abcdef-1.undistro-tmp", "motd", False),
        (".motd~123-abcdef-1.tmp", "motd", False),
        ("motd~123-abcdef-1.undistro-tmp", "motd", False),
    ],
)
def test_own_temp_names_are_what_the_writer_makes(temp: str, final: str, own: bool) -> None:
    from undistro.events._inotify import is_own_temp

    assert is_own_temp(temp, final) is own


def test_own_temp_of_a_name_at_name_max() -> None:
    from undistro._rootfs import temp_name
    from undistro.events._inotify import is_own_temp

    long = "n" * 255
    temp = temp_name(long)
    assert len(temp.encode()) == 255 and is_own_temp(temp, long)
    assert is_own_temp(temp_name("motd"), "motd")

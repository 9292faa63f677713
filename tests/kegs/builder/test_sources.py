"""The source cache: content-addressed, verified on the way in and on the
way out; mirrors tried in order, a real HTTP server on 127.0.0.1 included."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from undistro import cli
from undistro.errors import SourceError
from undistro.kegs import DirectoryMirror, Source, SourceCache, UrlMirror, mirrors_from

PAYLOAD = b"the real archive\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a directory; shut down after."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def source(*urls: str, sha: str = SHA) -> Source:
    return Source(tuple(urls), sha)


def test_fetch_over_http_verifies_and_caches(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    (served / "pkg-1.0.tar.gz").write_bytes(PAYLOAD)
    cache = SourceCache(str(tmp_path / "cache"))
    path = cache.fetch(source(f"{base}/pkg-1.0.tar.gz"))
    assert path == str(tmp_path / "cache" / "sha256" / SHA)
    assert Path(path).read_bytes() == PAYLOAD
    assert os.stat(path).st_mode & 0o222 == 0
    (served / "pkg-1.0.tar.gz").unlink()  # now it comes from the cache
    assert cache.fetch(source(f"{base}/pkg-1.0.tar.gz")) == path


def test_a_wrong_copy_never_enters_the_cache(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    (served / "pkg-1.0.tar.gz").write_bytes(b"tampered")
    cache = SourceCache(str(tmp_path / "cache"))
    with pytest.raises(SourceError) as info:
        cache.fetch(source(f"{base}/pkg-1.0.tar.gz", f"{base}/missing.tar.gz"))
    message = str(info.value)
    assert "SHA-256 mismatch" in message and "HTTP 404" in message
    assert "\n" not in message
    assert os.listdir(tmp_path / "cache" / "sha256") == []


def test_mirrors_are_tried_in_order(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    served, base = http_dir
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "pkg-1.0.tar.gz").write_bytes(b"stale copy")
    (served / "pkg-1.0.tar.gz").write_bytes(PAYLOAD)
    cache = SourceCache(str(tmp_path / "cache"))
    mirrors = [
        DirectoryMirror(str(bad_dir)),
        DirectoryMirror(str(tmp_path / "nope")),
        UrlMirror(base),
    ]
    # the origin URL is unreachable; the third mirror has the right bytes
    path = cache.fetch(source("http://127.0.0.1:9/pkg-1.0.tar.gz"), mirrors)
    assert Path(path).read_bytes() == PAYLOAD


def test_directory_mirror_by_hash_and_file_urls(tmp_path: Path) -> None:
    blobs = tmp_path / "m" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / SHA).write_bytes(PAYLOAD)
    cache = SourceCache(str(tmp_path / "cache"))
    assert cache.fetch(source("https://e.org/other-name.tgz"), mirrors_from([str(tmp_path / "m")]))
    local = tmp_path / "local.tgz"
    local.write_bytes(PAYLOAD)
    cache2 = SourceCache(str(tmp_path / "cache2"))
    assert Path(cache2.fetch(source(f"file://{local}"))).read_bytes() == PAYLOAD


def test_corruption_in_the_cache_is_caught_before_use(tmp_path: Path) -> None:
    cache = SourceCache(str(tmp_path / "cache"))
    local = tmp_path / "pkg.tgz"
    local.write_bytes(PAYLOAD)
    sha = cache.add_file(str(local))
    blob = Path(cache.path(sha))
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot")
    with pytest.raises(SourceError, match="corrupted on disk; removed it"):
        cache.verified(sha)
    assert not blob.exists()
    # the next fetch goes back to the mirrors and heals the cache
    assert Path(cache.fetch(source(f"file://{local}"))).read_bytes() == PAYLOAD
    with pytest.raises(SourceError, match="not in the cache"):
        cache.verified("0" * 64)


def test_sources_cli_add_and_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.kegs"])
    archive = tmp_path / "dl" / "pkg-1.0.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(PAYLOAD)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "pkg.toml").write_text(
        f'name = "pkg"\n[versions."1.0"]\nurl = "https://e.invalid/pkg-1.0.tar.gz"\n'
        f'sha256 = "{SHA}"\n[build]\nsystem = "make"\n'
    )
    cache = str(tmp_path / "cache")
    fetch = ["sources", "fetch", "--recipes", str(recipes), "--cache", cache]
    assert cli.main([*fetch, "--mirror", str(tmp_path / "empty")]) == 1
    assert "cannot fetch pkg-1.0.tar.gz" in capsys.readouterr().err
    assert cli.main([*fetch, "--mirror", str(archive.parent)]) == 0
    assert "fetched  pkg 1.0" in capsys.readouterr().out
    assert cli.main(["sources", "add", "--cache", cache, str(archive)]) == 0
    assert capsys.readouterr().out.startswith(SHA)
    assert cli.main(["sources", "add", "--cache", cache, str(tmp_path / "missing")]) == 1

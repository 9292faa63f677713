"""Pack → install between two roots; every forged or tampered input refused
with one line and nothing entering the store."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import zstandard

from undistro.errors import ArtifactError
from undistro.kegs.artifacts import generate_keypair, install, load_public_key, pack
from undistro.kegs.generations import DEFAULT_PROFILE, Profile, store_of

MakeKeg = Callable[..., str]
STORE = "/opt/undistro/store"


@pytest.fixture
def signer(tmp_path: object) -> tuple[str, set[str]]:
    key = os.path.join(str(tmp_path), "cache.key")
    generate_keypair(key, "test cache")
    return key, {load_public_key(f"{key}.pub")}


@pytest.fixture
def other_root(tmp_path: object) -> str:
    path = os.path.join(str(tmp_path), "root2")
    os.makedirs(path)
    return path


@pytest.fixture
def cache(tmp_path: object) -> str:
    return os.path.join(str(tmp_path), "cache")


def app_and_zlib(keg: MakeKeg, root: str) -> tuple[str, str]:
    zlib = keg("zlib", "1.3", {"lib/libz.so.1": b"\x7fELF zlib" * 100, "include/zlib.h": "h"})
    final = zlib[len(root) :]
    app = keg(
        "app",
        "1",
        {"bin/app": f"#!/bin/sh\nexec {final}/lib/libz.so.1\n", "share/doc/app/README": "r"},
        links={"lib/libz.so": f"{final}/lib/libz.so.1", "bin/app-alias": "app"},
    )
    return app, zlib


def store_entries(root: str) -> list[str]:
    store = store_of(root)
    if not os.path.isdir(store):
        return []
    return sorted(n for n in os.listdir(store) if n != ".gc.lock")


def tree(path: str) -> dict[str, tuple[int, str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                body = "-> " + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    body = hashlib.sha256(f.read()).hexdigest()
            else:
                body = "dir"
            out[os.path.relpath(full, path)] = (st.st_mode, body)
    return out


def test_keygen_refuses_to_overwrite(signer: tuple[str, set[str]]) -> None:
    key, _ = signer
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    with pytest.raises(ArtifactError, match="exists; refusing to overwrite"):
        generate_keypair(key)


def test_pack_then_install_into_a_second_root(
    root: str, other_root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, trusted = signer
    app, zlib = app_and_zlib(keg, root)
    packed = pack([zlib, app], key, cache)
    assert [p.basename for p in packed] == [os.path.basename(zlib), os.path.basename(app)]
    with open(packed[1].manifest, "rb") as f:
        manifest = json.loads(json.load(f)["manifest"])
    assert manifest["closure"] == [os.path.basename(zlib)]
    store2 = store_of(other_root)
    installed = install("app", cache, store2, trusted)
    assert installed == [os.path.basename(zlib), os.path.basename(app)]
    for original in (zlib, app):
        copy = os.path.join(store2, os.path.basename(original))
        assert tree(copy) == tree(original)
        assert not os.stat(copy).st_mode & 0o222
    assert install(os.path.basename(app)[:32], cache, store2, trusted) == []
    profile = Profile(os.path.join(other_root, DEFAULT_PROFILE[1:]), root=other_root)
    assert profile.build_and_switch([os.path.join(store2, os.path.basename(app))]) == 1


def test_install_over_http(
    root: str, other_root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, trusted = signer
    app, zlib = app_and_zlib(keg, root)
    pack([zlib, app], key, cache)
    with serve(cache) as url:
        installed = install("app-1", url, store_of(other_root), trusted)
    assert len(installed) == 2


@functools.cache
def _handler(directory: str) -> type[SimpleHTTPRequestHandler]:
    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=directory, **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    return Quiet


@contextlib.contextmanager
def serve(directory: str) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- refusals -------------------------------------------------------------------


def refused(other_root: str, cache: str, trusted: set[str], ref: str, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as err:
        install(ref, cache, store_of(other_root), trusted)
    assert "\n" not in str(err.value)
    assert store_entries(other_root) == []


def test_tampered_artifact_is_refused(
    root: str, other_root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, trusted = signer
    _app, zlib = app_and_zlib(keg, root)
    blob = pack([zlib], key, cache)[0].artifact
    with open(blob, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 1]))
    refused(other_root, cache, trusted, "zlib", "artifact hash differs from the signed manifest")


def test_tampered_manifest_is_refused(
    root: str, other_root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, trusted = signer
    _app, zlib = app_and_zlib(keg, root)
    path = pack([zlib], key, cache)[0].manifest
    with open(path) as f:
        envelope = json.load(f)
    envelope["manifest"] = envelope["manifest"].replace('"1.3"', '"1.4"')
    with open(path, "w") as f:
        json.dump(envelope, f)
    refused(other_root, cache, trusted, "zlib", "bad signature")


def test_unknown_key_and_no_key_are_refused(
    root: str,
    other_root: str,
    keg: MakeKeg,
    cache: str,
    signer: tuple[str, set[str]],
    tmp_path: object,
) -> None:
    _, trusted = signer
    stranger = os.path.join(str(tmp_path), "stranger.key")
    generate_keypair(stranger)
    _app, zlib = app_and_zlib(keg, root)
    pack([zlib], stranger, cache)
    refused(other_root, cache, trusted, "zlib", "signed by an untrusted key")
    refused(other_root, cache, set(), "zlib", "no trusted keys configured")


def test_missing_and_ambiguous_names(
    root: str, other_root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, trusted = signer
    one = keg("lua", "5.3", {"bin/lua5.3": "3"})
    two = keg("lua", "5.4", {"bin/lua5.4": "4"})
    pack([one, two], key, cache)
    refused(other_root, cache, trusted, "python", "no keg matching 'python'")
    refused(other_root, cache, trusted, "lua", "'lua' is ambiguous")
    assert install("lua-5.4", cache, store_of(other_root), trusted) == [os.path.basename(two)]


BASENAME = "a" * 32 + "-evil-1"


def forge(cache: str, key: str, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    """Sign, with a trusted key, an archive that lists exactly these members:
    the hash check passes, so only the extraction rules can stop it."""
    from undistro.kegs._signing import load_signing_key, sign

    files: dict[str, dict[str, object]] = {}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            name = info.name
            if info.isdir():
                files[name] = {"type": "dir", "mode": info.mode}
            elif info.issym():
                files[name] = {"type": "symlink", "target": info.linkname}
            else:
                digest = hashlib.sha256(data or b"").hexdigest()
                entry = {"type": "file", "mode": info.mode, "size": info.size, "sha256": digest}
                files[name] = entry
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, f"{BASENAME}.tar.zst"), "wb") as f:
        f.write(blob)
    manifest = {
        "format": "undistro-keg/1",
        "name": "evil",
        "version": "1",
        "hash": "a" * 32,
        "recipe_hash": "",
        "basename": BASENAME,
        "closure": [],
        "artifact": {
            "file": f"{BASENAME}.tar.zst",
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        },
        "files": files,
    }
    text = json.dumps(manifest)
    sig = sign(text.encode(), load_signing_key(key))
    envelope = {"manifest": text, "key": sig.key, "signature": sig.signature}
    with open(os.path.join(cache, f"{BASENAME}.manifest.json"), "w") as f:
        json.dump(envelope, f)
    with open(os.path.join(cache, "index.json"), "w") as f:
        json.dump({"kegs": {BASENAME: {"name": "evil", "version": "1"}}}, f)


def member(
    name: str, kind: bytes = tarfile.REGTYPE, target: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info, (b"payload" if kind == tarfile.REGTYPE else None)


BIN = member("bin", tarfile.DIRTYPE, mode=0o755)

EVIL = {
    "dotdot": ([member("../evil")], "unsafe path '../evil'"),
    "absolute": ([member("/tmp/evil")], "unsafe path '/tmp/evil'"),
    "inner-dotdot": ([BIN, member("bin/../../evil")], "unsafe path"),
    "escaping-symlink": ([BIN, member("bin/x", tarfile.SYMTYPE, "../../etc")], "escapes the keg"),
    "absolute-symlink": ([member("passwd", tarfile.SYMTYPE, "/etc/passwd")], "escapes the keg"),
    "symlink-chain": (
        [BIN, member("bin/up", tarfile.SYMTYPE, ".."), member("esc", tarfile.SYMTYPE, "bin/up/..")],
        "symlink 'esc' .* escapes the keg",
    ),
    "write-through-symlink": (
        [BIN, member("sub", tarfile.SYMTYPE, "bin"), member("sub/x")],
        "'sub/x' is not inside a directory of the archive",
    ),
    "device": ([member("null", tarfile.CHRTYPE)], "'null' is a device or special file"),
    "hard-link": ([BIN, member("bin/a"), member("bin/h", tarfile.LNKTYPE, "bin/a")], "hard link"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_tarballs_are_refused_even_when_signed(
    case: str, other_root: str, cache: str, signer: tuple[str, set[str]], tmp_path: object
) -> None:
    key, trusted = signer
    members, match = EVIL[case]
    forge(cache, key, members)
    refused(other_root, cache, trusted, "evil", match)
    assert not os.path.lexists("/tmp/evil")
    assert not os.path.lexists(os.path.join(str(tmp_path), "evil"))


def test_an_index_cannot_smuggle_a_path(
    other_root: str, cache: str, signer: tuple[str, set[str]]
) -> None:
    """index.json is unsigned: a name from it must still be a store name."""
    _, trusted = signer
    os.makedirs(cache)
    with open(os.path.join(cache, "index.json"), "w") as f:
        json.dump({"kegs": {"../../etc/x": {"name": "x", "version": "1"}}}, f)
    refused(other_root, cache, trusted, "x", "is not a store path name")


def test_pack_refuses_a_hole_in_the_closure_and_a_wrong_key(
    root: str, keg: MakeKeg, cache: str, signer: tuple[str, set[str]]
) -> None:
    key, _ = signer
    dep = keg("zlib", "1.3", {"lib/libz.so": "z"})
    app = keg("app", "1", {"bin/app": "x"}, run_deps=(dep,))
    os.chmod(dep, 0o755)
    os.rename(dep, dep + ".moved")
    with pytest.raises(ArtifactError, match=r"cannot pack: .*-app-1 needs .*-zlib-1\.3"):
        pack([app], key, cache)
    with pytest.raises(ArtifactError, match="not an undistro secret key"):
        pack([app], f"{key}.pub", cache)
    assert not os.path.exists(cache)

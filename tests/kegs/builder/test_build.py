"""Builds: real upstream software from the example recipes (built once per
session), and tiny synthetic packages for variants, failures, isolation and
``--root``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from undistro import cli
from undistro.errors import BuildError
from undistro.kegs import (
    META_NAME,
    Builder,
    RecipeBook,
    SourceCache,
    Store,
    detect,
    parse_request,
    resolve,
    store_lock,
)

from .conftest import RECIPES, BuiltStore, Synthetic, remove_store


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def meta(path: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(Path(path, META_NAME).read_text())
    return result


# -- real software -----------------------------------------------------------------


def test_hello_is_built_from_its_upstream_tarball(built: BuiltStore) -> None:
    keg = built.kegs["hello"]
    assert keg.built and keg.path.startswith(built.store.directory + "/")
    name = os.path.basename(keg.path)
    assert name.endswith("-hello-2.10") and len(name.split("-")[0]) == 32
    assert run(f"{keg.path}/bin/hello") == "Hello, world!\n"
    data = meta(keg.path)
    assert data["name"] == "hello" and data["version"] == "2.10"
    assert data["hash"] == name[:32]
    assert data["variants"] == {"nls": False}
    assert data["platform"] == detect().as_dict()
    assert data["sources"] == ["31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"]
    # read-only, all the way down
    for dirpath, _dirnames, filenames in os.walk(keg.path):
        for entry in [dirpath] + [os.path.join(dirpath, n) for n in filenames]:
            assert os.lstat(entry).st_mode & 0o222 == 0, entry
    log = Path(built.log_dir, name + ".log").read_text()
    assert log.startswith("# hello 2.10: isolated: no network")


def test_lua_53_and_54_live_side_by_side(built: BuiltStore) -> None:
    lua53, lua54 = built.kegs["lua@5.3"], built.kegs["lua@5.4"]
    assert lua53.path != lua54.path
    assert lua53.path.endswith("-lua-5.3.6") and lua54.path.endswith("-lua-5.4.4")
    assert run(f"{lua53.path}/bin/lua", "-e", "print(_VERSION)") == "Lua 5.3\n"
    assert run(f"{lua54.path}/bin/lua", "-e", "print(_VERSION)") == "Lua 5.4\n"
    # built for its own prefix: modules are looked for inside the keg
    path = run(f"{lua54.path}/bin/lua", "-e", "print(package.path)")
    assert f"{lua54.path}/share/lua/5.4/?.lua" in path
    assert set(built.store.entries()) >= {lua53.path, lua54.path}


def test_pngcheck_runs_against_the_zlib_keg_it_was_built_with(
    built: BuiltStore, tmp_path: Path
) -> None:
    pngcheck, zlib_keg = built.kegs["pngcheck"], built.kegs["pngcheck:zlib"]
    binary = f"{pngcheck.path}/bin/pngcheck"
    # the dynamic loader resolves libz to the keg, not to the host's /lib
    ldd = run("ldd", binary)
    assert f"libz.so.1 => {zlib_keg.path}/lib/libz.so.1" in ldd
    assert "Compiled with zlib 1.2.13; using zlib 1.2.13." in run(binary, "-h")
    data = meta(pngcheck.path)
    assert data["run_deps"] == [zlib_keg.path]
    assert data["references"] == [zlib_keg.path]  # found by scanning the binary
    png = tmp_path / "dot.png"
    png.write_bytes(_one_pixel_png())
    assert "OK: " in run(binary, str(png))


def test_building_again_reuses_the_store(built: BuiltStore) -> None:
    builder = Builder(built.store, built.cache, detect(), log_dir=built.log_dir)
    resolution = resolve([parse_request("pngcheck")], RecipeBook([str(RECIPES)]), detect())
    again = builder.build(resolution)
    assert again["pngcheck"].path == built.kegs["pngcheck"].path
    assert not any(k.built for k in again.values())


def _one_pixel_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


# -- synthetic packages ----------------------------------------------------------------

FLAVOURS = """\
[variants]
flavour = { default = "plain", values = ["plain", "spicy"] }
shout = false

[build]
system = "commands"
commands = [
  "mkdir -p {destdir}{prefix}/share",
  "echo {variants.flavour} > {destdir}{prefix}/share/flavour",
  { run = "echo LOUD > {destdir}{prefix}/share/shout", when = { variants = { shout = true } } },
]
"""


def test_variants_give_distinct_store_paths(synthetic: Synthetic) -> None:
    synthetic.package("soup", FLAVOURS)
    plain = synthetic.build("soup")["soup"].path
    spicy = synthetic.build("soup", "flavour=spicy")["soup"].path
    loud = synthetic.build("soup", "shout=true")["soup"].path
    assert len({plain, spicy, loud}) == 3
    assert Path(plain, "share/flavour").read_text() == "plain\n"
    assert Path(spicy, "share/flavour").read_text() == "spicy\n"
    assert Path(loud, "share/shout").read_text() == "LOUD\n"
    assert not Path(plain, "share/shout").exists()
    assert meta(loud)["variants"] == {"flavour": "plain", "shout": True}
    # the same request again names the same path
    assert synthetic.build("soup", "shout=true")["soup"].path == loud


def test_a_failed_build_leaves_nothing_in_the_store(synthetic: Synthetic) -> None:
    synthetic.package(
        "broken",
        '[build]\nsystem = "commands"\ncommands = [\n'
        '  "mkdir -p {destdir}{prefix}/bin",\n'
        '  "echo half > {destdir}{prefix}/bin/half",\n'
        '  "echo about to fail; exit 7",\n]\n',
    )
    with pytest.raises(BuildError) as info:
        synthetic.build("broken")
    message = str(info.value)
    assert "broken 1.0: build failed (exit 7) at `echo about to fail; exit 7`" in message
    assert "nothing was added to the store" in message
    assert synthetic.entries() == []  # not even a staging directory
    log = message.rsplit("log: ", 1)[1]
    assert "about to fail" in Path(log).read_text()


def test_an_install_that_ignores_destdir_is_refused(synthetic: Synthetic) -> None:
    synthetic.package(
        "stray", '[build]\nsystem = "commands"\ncommands = ["mkdir -p {destdir}/elsewhere"]\n'
    )
    with pytest.raises(BuildError, match="the install step put nothing under"):
        synthetic.build("stray")
    assert synthetic.entries() == []


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's loopback; builds must not reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_builds_have_no_network(synthetic: Synthetic, listener: int) -> None:
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {listener}), 2)\""
    synthetic.package(
        "phone",
        '[build]\nsystem = "commands"\ncommands = [\n'
        f"  {json.dumps(probe)},\n"
        '  "mkdir -p {destdir}{prefix}",\n]\n',
    )
    with pytest.raises(BuildError, match="build failed"):
        synthetic.build("phone")
    assert synthetic.entries() == []
    # the same recipe, unisolated, does reach the listener: the check can fail
    assert synthetic.build("phone", isolate=False)["phone"].built


def test_clean_environment_with_dependency_prefixes(synthetic: Synthetic) -> None:
    synthetic.package(
        "base",
        '[build]\nsystem = "commands"\ncommands = [\n'
        '  "mkdir -p {destdir}{prefix}/bin {destdir}{prefix}/include",\n'
        "  \"printf '#!/bin/sh\\\\necho from-base\\\\n' > {destdir}{prefix}/bin/base-tool\",\n"
        '  "chmod +x {destdir}{prefix}/bin/base-tool",\n'
        "  \"echo '#define BASE 42' > {destdir}{prefix}/include/base.h\",\n]\n",
    )
    synthetic.package(
        "top",
        '[dependencies.build]\nbase = "*"\n\n[build]\nsystem = "commands"\n'
        "commands = [\n"
        '  "mkdir -p {destdir}{prefix}/share",\n'
        '  "base-tool > {destdir}{prefix}/share/tool-said",\n'
        '  "env | sort > {destdir}{prefix}/share/env",\n'
        "  \"printf '#include <base.h>\\\\nint v = BASE;\\\\n' | cc -E - | tail -1"
        ' > {destdir}{prefix}/share/cpp",\n]\n',
    )
    os.environ["UNDISTRO_TEST_LEAK"] = "1"
    try:
        result = synthetic.build("top")
    finally:
        del os.environ["UNDISTRO_TEST_LEAK"]
    top, base = result["top"].path, result["base"].path
    assert Path(top, "share/tool-said").read_text() == "from-base\n"
    assert Path(top, "share/cpp").read_text() == "int v = 42;\n"
    env = Path(top, "share/env").read_text()
    assert "UNDISTRO_TEST_LEAK" not in env
    assert f"PATH={base}/bin:/usr/bin:/bin" in env
    assert f"CPATH={base}/include\n" in env
    # a build dependency is not a run dependency unless the files refer to it
    data = meta(top)
    assert data["run_deps"] == [] and data["build_deps"] == [base]
    assert data["references"] == [base]  # PATH and CPATH were written to share/env


def test_under_root_a_keg_is_built_for_its_final_path(tmp_path: Path) -> None:
    recipes, root = tmp_path / "recipes", tmp_path / "root"
    recipes.mkdir()
    root.mkdir()
    syn = Synthetic(
        recipes, SourceCache(str(tmp_path / "cache")), Store(root=str(root)), tmp_path, tmp_path
    )
    syn.package(
        "base",
        '[build]\nsystem = "commands"\ncommands = [\n'
        '  "mkdir -p {destdir}{prefix}/share",\n'
        '  "echo base-data > {destdir}{prefix}/share/base.txt",\n]\n',
    )
    syn.package(
        "top",
        '[dependencies.run]\nbase = "*"\n\n[build]\nsystem = "commands"\ncommands = [\n'
        '  "mkdir -p {destdir}{prefix}/share",\n'
        '  "cat {deps.base.prefix}/share/base.txt > {destdir}{prefix}/share/copied",\n'
        '  "echo {prefix} > {destdir}{prefix}/share/prefix",\n'
        '  "test -d {prefix} || echo no-prefix-yet > {destdir}{prefix}/share/note",\n]\n',
    )
    try:
        result = syn.build("top")
        final = result["top"].path
        assert final.startswith("/opt/undistro/store/")
        on_disk = root / final.lstrip("/")
        assert (on_disk / "share/prefix").read_text() == final + "\n"
        # the dependency was seen at its final path inside the build
        assert (on_disk / "share/copied").read_text() == "base-data\n"
        assert meta(str(on_disk))["run_deps"] == [result["base"].path]
        assert not os.path.exists(final)  # nothing on the host's /opt
        assert syn.store.entries() == sorted([final, result["base"].path])
    finally:
        remove_store(str(root / "opt/undistro/store"))


def test_keg_cli_build_and_list(
    synthetic: Synthetic,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.kegs"])
    synthetic.package("soup", FLAVOURS)
    root = tmp_path / "root"
    root.mkdir()
    common = [
        "--recipes",
        str(synthetic.recipes),
        "--root",
        str(root),
        "--cache",
        synthetic.cache.directory,
    ]
    try:
        assert cli.main(["keg", "build", "soup", "--variant", "flavour=spicy", *common]) == 0
        out = capsys.readouterr().out
        assert out.startswith("/opt/undistro/store/") and "built in" in out
        assert cli.main(["keg", "list", "--root", str(root)]) == 0
        listing = capsys.readouterr().out
        assert "soup" in listing and "flavour=spicy shout=false" in listing
        # bad input: one line, exit 2, nothing built
        assert cli.main(["keg", "build", "soup@>>1", *common]) == 2
        assert cli.main(["keg", "build", "soup", "--variant", "flavour=mild", *common]) == 1
        assert "variant 'flavour' is one of plain, spicy, got mild" in capsys.readouterr().err
        assert len(Store(root=str(root)).entries()) == 1
    finally:
        remove_store(str(root / "opt/undistro/store"))


def test_a_build_waits_while_the_store_is_being_collected(synthetic: Synthetic) -> None:
    synthetic.package("soup", FLAVOURS)
    store_dir = synthetic.store.physical(synthetic.store.directory)
    done: list[str] = []
    with store_lock(store_dir, exclusive=True):  # what gc holds
        worker = threading.Thread(target=lambda: done.append(synthetic.build("soup")["soup"].path))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and synthetic.store.entries() == []
    worker.join(30)
    assert done and synthetic.store.entries() == done


def test_the_store_directory_is_part_of_the_hash(synthetic: Synthetic, tmp_path: Path) -> None:
    synthetic.package("soup", FLAVOURS)
    book = RecipeBook([str(synthetic.recipes)])
    resolution = resolve([parse_request("soup")], book, detect())
    here = synthetic.builder().plan(resolution)["soup"]
    other = Builder(Store(str(tmp_path / "elsewhere")), synthetic.cache, detect()).plan(resolution)
    assert os.path.basename(here.path) != os.path.basename(other["soup"].path)


HELLO_C = '#include <stdio.h>\nint main(void) { puts("hi from " WHO); return 0; }\n'


@pytest.mark.parametrize(
    ("system", "files", "args"),
    [
        (
            "cmake",
            {
                "CMakeLists.txt": "cmake_minimum_required(VERSION 3.10)\nproject(hi C)\n"
                "add_executable(hi hi.c)\ninstall(TARGETS hi DESTINATION bin)\n",
                "hi.c": HELLO_C,
            },
            'configure_args = ["-DCMAKE_C_FLAGS=-DWHO=\\\\\\"cmake\\\\\\""]',
        ),
        (
            "make",
            {
                "Makefile": "hi: hi.c\n\t$(CC) $(CFLAGS) -DWHO='\"make\"' -o hi hi.c\n"
                "install: hi\n\tinstall -Dm755 hi $(DESTDIR)$(PREFIX)/bin/hi\n",
                "hi.c": HELLO_C,
            },
            "",
        ),
    ],
)
def test_build_system_templates(
    synthetic: Synthetic, system: str, files: dict[str, str], args: str
) -> None:
    if shutil.which(system) is None:
        pytest.skip(f"{system} is not installed")
    synthetic.package("hi", f'[build]\nsystem = "{system}"\n{args}\n', files=files)
    path = synthetic.build("hi")["hi"].path
    assert run(f"{path}/bin/hi") == f"hi from {system}\n"

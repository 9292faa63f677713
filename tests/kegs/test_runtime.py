"""The agent's runtime as kegs: CPython from its upstream tarball, the
libraries it loads, jinja2/markupsafe and undistro itself — and nothing of
the build machine's /usr at run time, shown by running it chrooted into a
directory that holds only the closure the kegs' scan found.

The first test of a run pays the CPython build (tests/kegs/_runtime.py
keeps the store in .cache/runtime-root, so later runs build nothing).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._runtime import (
    REPO,
    STORE,
    Runtime,
    build_runtime,
    chroot_argv,
    closure_root,
    in_chroot,
)

pytestmark = pytest.mark.slow

PACKAGES = ("glibc", "zlib", "libffi", "sqlite", "python", "markupsafe", "jinja2", "undistro")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """Pays the runtime build (CPython ~4-8 min) the first time in a checkout."""
    if shutil.which("unshare") is None or shutil.which("tclsh") is None:
        pytest.skip("unshare and tclsh (SQLite's build) are needed: .ci/apt/image-runtime.txt")
    return build_runtime(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="module")
def chroot(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = closure_root(runtime, tmp_path_factory.mktemp("closure") / "root")
    shutil.copytree(REPO / "examples" / "demo", root / "policy")
    (root / "target").mkdir()
    yield root


def test_the_closure_scan_finds_every_runtime_keg_by_its_hash(runtime: Runtime) -> None:
    names = {name.split("-", 1)[1].rsplit("-", 1)[0] for name in runtime.closure}
    assert names == set(PACKAGES)
    python = runtime.physical(runtime.kegs["python"]) / "bin" / "python3.11"
    interp = subprocess.run(
        ["readelf", "-l", str(python)], capture_output=True, text=True, check=True
    ).stdout
    assert f"{runtime.kegs['glibc']}/lib/ld-linux-x86-64.so.2" in interp


def test_every_elf_file_of_the_closure_needs_only_libraries_of_the_closure(
    runtime: Runtime,
) -> None:
    provided = {
        lib.name
        for name in runtime.closure
        for lib in (runtime.physical(f"{STORE}/{name}") / "lib").glob("*.so*")
    }
    for name in runtime.closure:
        for path in runtime.physical(f"{STORE}/{name}").rglob("*"):
            if path.is_symlink() or not path.is_file() or path.read_bytes()[:4] != b"\x7fELF":
                continue
            dynamic = subprocess.run(
                ["readelf", "-d", str(path)], capture_output=True, text=True, check=True
            ).stdout
            needed = {
                line.split("[", 1)[1].rstrip("]")
                for line in dynamic.splitlines()
                if "(NEEDED)" in line
            }
            assert needed <= provided, f"{path}: {sorted(needed - provided)} not in the closure"
            assert "/usr/" not in dynamic, f"{path}: an rpath into the host's /usr"


def test_python_runs_chrooted_into_the_closure_alone(runtime: Runtime, chroot: Path) -> None:
    python = f"{runtime.kegs['python']}/bin/python3.11"
    assert not (chroot / "usr").exists() and not (chroot / "lib").exists()
    code = (
        "import asyncio, sqlite3, json, hashlib, ctypes, zlib, sys\n"
        "db = sqlite3.connect(':memory:'); db.execute('create table t (x)')\n"
        "assert hashlib.sha256(b'').hexdigest().startswith('e3b0c442')\n"
        "assert zlib.decompress(zlib.compress(b'x' * 100)) == b'x' * 100\n"
        "libc = ctypes.CDLL(None, use_errno=True); assert libc.getpid() > 0\n"
        "asyncio.run(asyncio.sleep(0))\n"
        "print(sys.prefix, sqlite3.sqlite_version)\n"
    )
    proc = in_chroot(chroot, [python, "-I", "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [runtime.kegs["python"], "3.40.1"]


def test_every_extension_module_of_the_keg_python_imports_chrooted(
    runtime: Runtime, chroot: Path
) -> None:
    """A module linked against something of the host's /usr would fail
    here: nothing but the closure is in the root."""
    dynload = runtime.physical(runtime.kegs["python"]) / "lib/python3.11/lib-dynload"
    modules = sorted(p.name.split(".", 1)[0] for p in dynload.glob("*.so"))
    assert {"_ctypes", "_sqlite3", "zlib", "_json", "_asyncio"} <= set(modules)
    assert "_ssl" not in modules and "_hashlib" not in modules  # no OpenSSL: see the recipe
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    proc = in_chroot(
        chroot, [f"{runtime.kegs['python']}/bin/python3.11", "-I", "-c", code, *modules]
    )
    assert proc.returncode == 0, proc.stderr


def test_undistro_applies_the_demo_policy_chrooted_into_the_closure(
    runtime: Runtime, chroot: Path
) -> None:
    first = in_chroot(chroot, [runtime.entry, "apply", "/policy", "--root", "/target"])
    assert first.returncode == 0, first.stderr + first.stdout
    assert "0 failed" in first.stdout and "repaired" in first.stdout
    assert (chroot / "target/etc/motd").is_file()
    again = in_chroot(chroot, [runtime.entry, "apply", "/policy", "--root", "/target"])
    assert again.returncode == 0, again.stderr
    assert " 0 repaired" in again.stdout and "0 failed" in again.stdout


def test_a_bad_command_line_is_one_line_in_the_chroot_too(runtime: Runtime, chroot: Path) -> None:
    proc = in_chroot(chroot, [runtime.entry, "apply", "/no-such-policy", "--root", "/target"])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _wait(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_agent_runs_chrooted_and_repairs_drift_on_an_event(
    runtime: Runtime, chroot: Path
) -> None:
    """The resident agent (asyncio without ssl, inotify, SQLite state) on
    the keg runtime alone: it converges, then repairs a tampered file."""
    target = chroot / "agent-target"
    target.mkdir()
    motd = target / "etc/motd"
    argv = chroot_argv(chroot, [runtime.entry, "agent", "/policy", "--root", "/agent-target"])
    agent = subprocess.Popen(
        argv, env={}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert _wait(motd.is_file, 60), "the agent did not converge"
        wanted = motd.read_text()
        motd.write_text("tampered\n")
        assert _wait(lambda: motd.read_text() == wanted, 20), "drift was not repaired"
        assert agent.poll() is None
    finally:
        agent.kill()  # --kill-child: the namespace's PID 1 dies with it
        output, _ = agent.communicate(timeout=30)
    assert "Traceback" not in output, output

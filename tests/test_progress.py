"""Progress bars: drawn by rich on a terminal, absent (and rich not even
imported) on a pipe and in the agent's library paths."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.kegs.builder.conftest import make_tarball, remove_store
from undistro._progress import QUIET, Terminal, for_terminal

# Prints whether rich was imported, after running the CLI in-process.
PROBE = textwrap.dedent("""
    import sys
    from undistro.cli import main
    code = main(sys.argv[1:])
    print(f"rich imported: {'rich' in sys.modules}", file=sys.stderr, flush=True)
    sys.exit(code)
""")


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """One tiny package whose 4 MB source comes from a file:// URL."""
    book = tmp_path / "recipes"
    book.mkdir()
    tarball = tmp_path / "big-1.0.tar.gz"
    sha = make_tarball(tarball, "big-1.0", {"README": os.urandom(3 << 20).hex()})
    (book / "big.toml").write_text(
        f'name = "big"\n\n[versions."1.0"]\nurl = "file://{tarball}"\nsha256 = "{sha}"\n\n'
        '[build]\nsystem = "commands"\ncommands = [\n'
        '  "mkdir -p {destdir}{prefix}/share",\n  "cp README {destdir}{prefix}/share/",\n]\n'
    )
    yield book
    remove_store(str(tmp_path / "store"))


def _argv(tmp: Path, *command: str) -> list[str]:
    common = ["--recipes", str(tmp / "recipes"), "--cache", str(tmp / "cache")]
    if command[0] == "keg":
        common += ["--store", str(tmp / "store"), "--no-gc-root", "--no-isolate"]
    return [sys.executable, "-c", PROBE, *command, *common]


def _on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; all it drew."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("UNDISTRO_PROGRESS", None)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise AssertionError("the command drew nothing for 60 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(30)
    return code, out.decode(errors="replace")


def test_a_download_and_a_build_draw_bars_on_a_terminal(tmp_path: Path, recipes: Path) -> None:
    code, drawn = _on_a_terminal(_argv(tmp_path, "sources", "fetch"))
    assert code == 0, drawn
    assert "big-1.0.tar.gz" in drawn and "MB" in drawn and "━" in drawn  # the bar
    assert "\x1b[" in drawn and "rich imported: True" in drawn
    assert "1 sources verified" in drawn  # the command's own lines stay

    code, drawn = _on_a_terminal(_argv(tmp_path, "keg", "build", "big"))
    assert code == 0, drawn
    assert "building big 1.0" in drawn and "0/1" in drawn  # the steps bar
    assert "rich imported: True" in drawn


def test_nothing_is_drawn_on_a_pipe_and_rich_is_not_imported(tmp_path: Path, recipes: Path) -> None:
    for command in (("sources", "fetch"), ("keg", "build", "big")):
        proc = subprocess.run(_argv(tmp_path, *command), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        both = proc.stdout + proc.stderr
        assert "\x1b" not in both and "━" not in both and "\r" not in both
        assert "rich imported: False" in proc.stderr


def test_off_on_request_and_on_dumb_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as tty:
            monkeypatch.setenv("TERM", "xterm")
            assert isinstance(for_terminal(tty), Terminal)
            monkeypatch.setenv("UNDISTRO_PROGRESS", "0")
            assert for_terminal(tty) is QUIET
            monkeypatch.delenv("UNDISTRO_PROGRESS")
            monkeypatch.setenv("TERM", "dumb")
            assert for_terminal(tty) is QUIET
    finally:
        os.close(master)
        os.close(slave)


def test_the_agent_and_the_library_never_import_rich_even_on_a_terminal(
    tmp_path: Path, recipes: Path
) -> None:
    """The builder and the source cache, as the agent's [[keg]] uses them
    (no bars given), with stdout a terminal: nothing drawn, rich not loaded."""
    script = textwrap.dedent(f"""
        import sys
        import undistro.agent, undistro.agent._daemon, undistro.content._page
        import undistro.fleet._member, undistro.resources.keg
        from undistro.kegs import Builder, RecipeBook, SourceCache, Store, detect, parse_request, resolve
        book = RecipeBook([{str(recipes)!r}])
        resolution = resolve([parse_request("big")], book, detect())
        builder = Builder(Store({str(tmp_path / "store")!r}), SourceCache({str(tmp_path / "c2")!r}),
                          detect(), log_dir={str(tmp_path / "logs")!r}, isolate=False)
        builder.build(resolution)
        print(f"rich imported: {{'rich' in sys.modules}}", flush=True)
    """)
    code, drawn = _on_a_terminal([sys.executable, "-c", script])
    assert code == 0, drawn
    assert "rich imported: False" in drawn
    assert "━" not in drawn and "\x1b[" not in drawn

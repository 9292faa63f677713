"""Service output lands in size-rotated log files, drained from a fifo on the loop."""

from __future__ import annotations

from pathlib import Path

from undistro.supervisor import BuiltinBackend, ServiceSpec
from undistro.supervisor._logs import RotatingLog

from .builtin_harness import Harness


def test_stdout_and_stderr_are_logged_and_rotated(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script(
            "chatty.py",
            "for i in range(200):\n"
            "    stream = sys.stderr if i % 2 else sys.stdout\n"
            "    stream.write('line %03d %s\\n' % (i, 'x' * 80))\n"
            "    stream.flush()\n",
            python=True,
        )

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("chatty", (svc,), readiness="exit", log_max_bytes=4096, log_keep=2)
            await sup.start(spec)
            await sup.stop("chatty")  # flushes what the fifo still holds

        h.run(body)
        live = h.logs / "chatty.log"
        rotated = [h.logs / "chatty.log.1", h.logs / "chatty.log.2"]
        assert not (h.logs / "chatty.log.3").exists()
        files = [*reversed(rotated), live]
        for path in files:
            text = path.read_text()
            assert 0 < len(text) <= 4096 + 86 and text.endswith("\n")
        lines = "".join(p.read_text() for p in files).splitlines()
        numbers = [int(line.split()[1]) for line in lines]
        # The newest lines survive, in order, with stderr's odd lines among stdout's even ones.
        assert numbers == list(range(numbers[0], 200))
        assert numbers[0] > 0 and len(numbers) > 2 * (4096 // 90)  # two full files and the live one


def test_rotation_keeps_a_line_whole_and_splits_only_giant_ones(tmp_path: Path) -> None:
    log = RotatingLog(str(tmp_path / "x.log"), max_bytes=10, keep=1)
    log.write(b"abc\ndefgh\nij")  # 12 bytes: cut after "defgh\n"
    log.write(b"0123456789ABCDEF")  # longer than a file: split where it must
    log.write(b"abcdefgh")
    log.write(b"ijkl\nmn\n")  # the line a pipe read cut is finished past the limit
    log.close()
    assert (tmp_path / "x.log.1").read_bytes() == b"abcdefghijkl\n"
    assert (tmp_path / "x.log").read_bytes() == b"mn\n"
    log = RotatingLog(str(tmp_path / "z.log"), max_bytes=10, keep=1)
    log.write(b"abc\ndefgh\nij")
    log.write(b"0123456789ABCDEF")
    log.close()
    assert (tmp_path / "z.log.1").read_bytes() == b"0123456789"
    assert (tmp_path / "z.log").read_bytes() == b"ABCDEF"
    log = RotatingLog(str(tmp_path / "y.log"), max_bytes=8, keep=0)
    log.write(b"1234567\n")
    log.write(b"abc\n")
    log.close()
    assert (tmp_path / "y.log").read_bytes() == b"abc\n"
    assert not (tmp_path / "y.log.1").exists()

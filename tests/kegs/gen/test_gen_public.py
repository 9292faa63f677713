"""The public surface of generations and artifacts, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

from undistro.kegs import artifacts, generations


def test_public_modules_export_what_they_list() -> None:
    for module in (generations, artifacts):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
        assert sorted(module.__all__) == sorted(set(module.__all__))


def test_generations_do_not_load_crypto_or_compression() -> None:
    """The agent switches generations often and packs rarely: PyNaCl and
    zstandard load only when an artifact is touched."""
    code = (
        "import sys, undistro.kegs.generations, undistro.commands.gen\n"
        "print(sorted(m for m in ('nacl', 'zstandard', 'urllib.request') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=None
    ).stdout
    assert out.strip() == "[]"

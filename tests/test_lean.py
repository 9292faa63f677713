"""The agent's footprint is a feature: a cached no-op apply must not import
what only other paths need (asyncio +10 MB, Jinja2 +5 MB, OpenSSL via
hashlib +3.6 MB, TOML, dataclasses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PolicyDir

HEAVY = [
    "asyncio",
    "jinja2",
    "hashlib",
    "_hashlib",
    "tomllib",
    "dataclasses",
    "ssl",
    "json",
    "difflib",
]


def test_cached_no_op_apply_imports_nothing_heavy(policy: PolicyDir, root: Path) -> None:
    policy.write("templates/t.j2", "{{ facts.hostname }}\n")
    policy.resources(
        '[[file]]\npath = "/a"\ncontent = "a"\n[[file]]\npath = "/t"\ntemplate = "t.j2"\n'
        '[[directory]]\npath = "/d"\n[[symlink]]\npath = "/l"\ntarget = "a"\n'
    )
    args = ["apply", str(policy), "--root", str(root), "-q"]
    subprocess.run([sys.executable, "-m", "undistro.cli", *args], check=True, capture_output=True)
    probe = (
        "import sys\n"
        "from undistro.cli import main\n"
        f"code = main({args!r})\n"
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.splitlines()[-1] == "0 []"


def test_sha256_matches_hashlib() -> None:
    import hashlib

    from undistro._hash import sha256_hex

    for data in (b"", b"abc", bytes(range(256)) * 1000):
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()

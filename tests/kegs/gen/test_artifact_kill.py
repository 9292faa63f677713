"""kill -9 during installs: a store path is complete or absent, never partial."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from undistro.kegs.artifacts import generate_keypair, install, load_public_key, pack

MakeKeg = Callable[..., str]

LOOP = """
import itertools, os, sys
from undistro.kegs.artifacts import install
cache, stores, key = sys.argv[1], sys.argv[2], sys.argv[3]
print("ready", flush=True)
for i in itertools.count():
    install("big", cache, os.path.join(stores, str(i)), {key})
"""


def _tree(path: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


@pytest.mark.slow
def test_kill_9_during_installs_leaves_complete_kegs_or_none(
    keg: MakeKeg, tmp_path: object
) -> None:
    base = str(tmp_path)
    files = {f"lib/part{i}.so": os.urandom(64 * 1024) for i in range(24)}
    big = keg("big", "1", files)
    key = os.path.join(base, "k")
    generate_keypair(key)
    cache = os.path.join(base, "cache")
    pack([big], key, cache)
    stores = os.path.join(base, "stores")
    os.mkdir(stores)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", LOOP, cache, stores, load_public_key(f"{key}.pub")]
    # Kills spread over a few installs' time, measured here and now: on a
    # loaded machine a fixed window may end before any install completes.
    started = time.monotonic()
    install("big", cache, os.path.join(base, "probe"), {load_public_key(f"{key}.pub")})
    window = max(0.08, 3 * (time.monotonic() - started))
    rng = random.Random(99)
    # Kill times spread from ~0 to the whole window, most of them early: with
    # uniform times a quiet fresh Debian 12 finished every install before its
    # kill (complete 50, partial 0), a one-install window caught none complete.
    for i in range(25):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            time.sleep(window * ((i + rng.random()) / 25) ** 3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    want = _tree(big)
    complete = partial = 0
    for name in os.listdir(stores):
        store = os.path.join(stores, name)
        kegs = [n for n in os.listdir(store) if not n.startswith(".")]
        if kegs:
            assert kegs == [os.path.basename(big)]
            assert _tree(os.path.join(store, kegs[0])) == want
            complete += 1
        else:
            partial += any(n.startswith(".install-") for n in os.listdir(store))
    assert complete > 0 and partial > 0, (complete, partial)

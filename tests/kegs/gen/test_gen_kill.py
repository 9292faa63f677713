"""kill -9 during a switch leaves the old or the new generation, never a mix.

A real subprocess builds and switches generations in a loop (alternating
sets, switches and rollbacks); it is SIGKILLed at random points many times.
After each kill ``current`` must resolve to a complete generation whose
files are one of the two versions, and the next writer must clean up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from undistro.kegs.generations import Profile

MakeKeg = Callable[..., str]

LOOP = """
import sys
from undistro.kegs.generations import Profile
p = Profile(sys.argv[1], root=sys.argv[2])
a, b = sys.argv[3].split(","), sys.argv[4].split(",")
print("ready", flush=True)
def only_current():  # so each build_and_switch builds, not switches to a twin
    p.delete([n for n in p.numbers() if n != p.current_number()])
while True:
    only_current()
    p.build_and_switch(a)
    only_current()
    p.build_and_switch(b)
    p.rollback()
    p.switch(max(p.numbers()))
"""

KILLS = 60


def _check(profile: Profile) -> str:
    current = os.path.join(profile.dir, "current")
    target = os.readlink(current)
    assert target.startswith("gen-"), target
    assert os.path.isfile(os.path.join(current, ".generation.json"))
    with open(os.path.join(current, "bin", "hello")) as f:
        text = f.read()
    assert text in ("hello one", "hello two"), text
    with open(os.path.join(current, "share", "doc", "common")) as f:
        assert f.read() == "c"
    return text


@pytest.mark.slow
def test_kill_9_during_switches_never_breaks_current(
    root: str, keg: MakeKeg, profile: Profile
) -> None:
    kegs_a = [keg("hello", "1", {"bin/hello": "hello one"})]
    kegs_b = [keg("hello", "2", {"bin/hello": "hello two"})]
    common = [keg(f"lib{i}", "1", {f"lib/lib{i}.so": "x", f"bin/tool{i}": "t"}) for i in range(8)]
    common.append(keg("docs", "1", {"share/doc/common": "c"}))
    profile.build_and_switch(kegs_a + common)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [
        sys.executable,
        "-c",
        LOOP,
        profile.dir,
        root,
        ",".join(kegs_a + common),
        ",".join(kegs_b + common),
    ]
    rng = random.Random(1234)
    seen = set()
    interrupted = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0, 0.05))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        seen.add(_check(profile))
        interrupted += not _check_clean(profile)
    assert seen == {"hello one", "hello two"}
    assert interrupted > 0, "no kill landed inside an operation; the test proved nothing"
    before = profile.numbers()
    profile.build_and_switch(kegs_b + common[:-2])
    assert _check_clean(profile)
    assert profile.numbers()[:-1] == before


def _check_clean(profile: Profile) -> bool:
    leftovers = [n for n in os.listdir(profile.dir) if n.startswith(".") and n != ".lock"]
    return leftovers == []


WRITER = """
import sys
from undistro.kegs.generations import Profile
p = Profile(sys.argv[1], root=sys.argv[2])
sets = [sys.argv[3].split(","), sys.argv[4].split(",")]
for i in range(15):
    p.build_and_switch(sets[i % 2])
"""


def test_two_writers_serialise_on_the_profile_lock(
    root: str, keg: MakeKeg, profile: Profile
) -> None:
    a = [keg("hello", "1", {"bin/hello": "hello one"})]
    b = [keg("hello", "2", {"bin/hello": "hello two"})]
    common = [keg("docs", "1", {"share/doc/common": "c"})]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", WRITER, profile.dir, root]
    os.makedirs(profile.dir)
    procs = [
        subprocess.Popen([*argv, ",".join(a + common), ",".join(b + common)], env=env),
        subprocess.Popen([*argv, ",".join(b + common), ",".join(a + common)], env=env),
    ]
    try:
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0]
    numbers = profile.numbers()
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(len(g.kegs) == 2 for g in profile.list())
    assert _check(profile) in ("hello one", "hello two")
    assert _check_clean(profile)

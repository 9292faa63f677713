"""The swarm between real libtorrent children in the test's own namespaces."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.content._swarm_nodes import peers_of, put_blob, store_path, swarm_for
from tests.fleet.netns import namespace_hosts
from undistro.content import SWARM_PORT, SwarmError, SwarmRef

pytest.importorskip("libtorrent", reason="PyPI libtorrent is a dependency (pyproject.toml)")
REPO = Path(__file__).resolve().parents[2]
# On the bridge, all but the swarm's TCP port and the kernel's own link
# chatter (ARP, IGMP, IPv6 ND/MLD, none of it UDP): DHT, LSD, SSDP (UPnP),
# NAT-PMP and uTP would all be caught.
BRIDGE_FILTER = (
    f"not arp and not igmp and not (tcp port {SWARM_PORT})"
    " and not (ip6 and dst net ff02::/16 and not udp)"
)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sockets(ns_argv: list[str]) -> list[str]:
    """Every listening TCP socket and every UDP socket in a namespace."""
    tcp = subprocess.run([*ns_argv, "ss", "-H", "-nlt"], capture_output=True, text=True).stdout
    udp = subprocess.run([*ns_argv, "ss", "-H", "-nua"], capture_output=True, text=True).stdout
    return tcp.splitlines() + udp.splitlines()


def test_100_mb_reaches_ten_nodes_verified_with_one_upload_and_no_discovery(tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (.ci/apt/content-swarm.txt)")
    size = 100 << 20
    data = os.urandom(size)
    with namespace_hosts(11, net=31) as hosts:
        # Everything on the bridge that is not the swarm's own TCP port: DHT,
        # LSD, UPnP (SSDP), NAT-PMP or uTP would all show here.
        pcap = tmp_path / "bridge.pcap"
        dump = subprocess.Popen(
            ["ip", "netns", "exec", hosts[0].switch, "tcpdump", "-i", "br0", "-n", "-U", "-w",
             str(pcap), BRIDGE_FILTER],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            ref = put_blob(tmp_path / hosts[0].name, data)
            del data
            swarms = [swarm_for(h, tmp_path) for h in hosts]

            async def run() -> dict[str, dict[str, float]]:
                try:
                    await asyncio.gather(*(s.start() for s in swarms))
                    await swarms[0].seed(ref.sha256, receivers=len(hosts) - 1)
                    await asyncio.gather(
                        *(
                            s.fetch(ref, peers_of(hosts, h), timeout=80)
                            for s, h in zip(swarms[1:], hosts[1:], strict=True)
                        )
                    )
                    for h in hosts:
                        for line in _sockets(h.argv()):
                            # libtorrent binds the device too (10.0.0.1%eth0:7949),
                            # and a UDP socket there that nothing sends from.
                            local = line.split()[-2]
                            assert local.split("%")[0].split(":")[0] == h.address, line
                            assert local.endswith(f":{SWARM_PORT}"), line
                    return await swarms[0].stats()
                finally:
                    await asyncio.gather(*(s.close() for s in swarms))

            origin = asyncio.run(run())[ref.sha256]
        finally:
            os.kill(dump.pid, signal.SIGTERM)
            dump.wait(10)
        for h in hosts[1:]:
            got = store_path(tmp_path / h.name, ref.sha256)
            assert _sha(got) == ref.sha256
            assert got.stat().st_mode & 0o777 == 0o444
            assert list((tmp_path / h.name / "content" / "tmp").iterdir()) == []
        assert origin["uploaded"] <= 2 * size, origin
        stray = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True)
        assert stray.stdout == "", stray.stdout[:2000]


def test_a_peer_serving_corrupted_pieces_corrupts_nobody(tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    with namespace_hosts(3, net=32) as (origin, liar, receiver):
        ref = put_blob(tmp_path / origin.name, data)
        bad = tmp_path / "liar" / ref.sha256
        bad.parent.mkdir()
        bad.write_bytes(data)
        lie = subprocess.Popen(
            liar.argv(sys.executable, "-m", "tests.content._liar", str(bad),
                      f"{liar.address}:{SWARM_PORT}"),
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert lie.stdout is not None and lie.stdout.readline() == b"ready\n"
            seed, fetch = swarm_for(origin, tmp_path), swarm_for(receiver, tmp_path)

            async def run() -> dict[str, float]:
                try:
                    await seed.seed(ref.sha256, receivers=1)
                    # Only the liar at first: its pieces must fail their hashes.
                    task = asyncio.create_task(fetch.fetch(ref, [(liar.address, SWARM_PORT)], 60))
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                        st = (await fetch.stats()).get(ref.sha256, {})
                        if st.get("hash_failures", 0) >= 1:
                            break
                    assert st.get("hash_failures", 0) >= 1, st
                    assert not store_path(tmp_path / receiver.name, ref.sha256).exists()
                    await fetch.add_peers(ref.sha256, [(origin.address, SWARM_PORT)])
                    await task
                    return dict((await fetch.stats())[ref.sha256])
                finally:
                    await asyncio.gather(seed.close(), fetch.close())

            st = asyncio.run(run())
        finally:
            lie.kill()
            lie.wait(10)
        assert st["hash_failures"] >= 1
        assert _sha(store_path(tmp_path / receiver.name, ref.sha256)) == ref.sha256


def test_metadata_that_does_not_fit_the_signed_reference_is_refused(tmp_path: Path) -> None:
    data = os.urandom(1 << 20)
    with namespace_hosts(2, net=33) as (origin, receiver):
        ref = put_blob(tmp_path / origin.name, data)
        other = hashlib.sha256(b"another blob").hexdigest()
        lies = [
            SwarmRef(ref.sha256, ref.size + 1, ref.info_hash),  # wrong size
            SwarmRef(other, ref.size, ref.info_hash),  # the torrent names another blob
        ]
        seed, fetch = swarm_for(origin, tmp_path), swarm_for(receiver, tmp_path)

        async def run() -> list[str]:
            errors = []
            try:
                await seed.seed(ref.sha256, receivers=1)
                for bad in lies:
                    with pytest.raises(SwarmError) as err:
                        await fetch.fetch(bad, [(origin.address, SWARM_PORT)], timeout=30)
                    errors.append(str(err.value))
            finally:
                await asyncio.gather(seed.close(), fetch.close())
            return errors

        errors = asyncio.run(run())
        assert all("does not describe the signed blob" in e for e in errors), errors
        store = tmp_path / receiver.name / "content"
        assert list((store / "sha256").iterdir()) == []
        assert list((store / "tmp").iterdir()) == []

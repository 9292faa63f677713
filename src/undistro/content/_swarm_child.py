"""The swarm child: one libtorrent session for this node, out of the agent.

``python -m undistro.content._swarm_child --state DIR --listen ADDR:PORT``
reads JSON lines on stdin (``seed``, ``fetch``, ``peers``, ``stats``) and
writes JSON lines of events on stdout (``ready``, ``seeding``, ``stored``,
``failed``, ``stats``). It ends when stdin closes. Exit codes: 0 after EOF,
2 bad arguments, 3 the listen address could not be bound.

Every public discovery feature is off in the session constructor (DHT, LSD,
UPnP, NAT-PMP, an empty DHT bootstrap list) and it listens on the fleet
address only: peers come from fleet membership through ``connect_peer``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import libtorrent as lt

from undistro.content._swarm import SwarmError, SwarmRef, torrent_info

# Super-seeding reveals each piece to one peer and waits to see it elsewhere
# before revealing another: the origin uploads about one copy (1.01x to 10
# receivers, 4.1x without). With one or two receivers it stalls (a 1 MB blob
# to one peer: no byte in 10 s), so an origin super-seeds only for more.
SUPER_SEED_RECEIVERS = 3


def settings(listen: str) -> dict[str, Any]:
    """The session settings: nothing public, TCP only, a fast tick for a LAN."""
    return {
        "listen_interfaces": listen,
        "outgoing_interfaces": listen.rsplit(":", 1)[0],
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_bootstrap_nodes": "",
        "enable_outgoing_utp": False,  # TCP is 4-6x faster on a LAN (FACTS.md)
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "tick_interval": 50,
        "smooth_connects": False,
        "connection_speed": 200,
        "unchoke_slots_limit": 16,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.storage,
        "user_agent": "undistro",
        "peer_fingerprint": "-UD0100-",
        "anonymous_mode": False,
    }


@dataclass
class _Torrent:
    sha256: str
    handle: Any
    ref: SwarmRef | None = None  # set while fetching
    uploaded_before: int = 0  # payload uploaded by an earlier handle (the fetch)
    hash_failures: int = 0
    started: float = field(default_factory=time.monotonic)
    state: str = "seeding"  # fetching | flushing | removing | seeding


class Child:
    def __init__(self, state_dir: Path, listen: str) -> None:
        self.store = state_dir / "content" / "sha256"
        self.tmp = state_dir / "content" / "tmp"
        self.store.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # The stubs know only settings_pack; the binding takes the dict as well.
        self.ses = lt.session(cast(Any, settings(listen)))
        self.torrents: dict[str, _Torrent] = {}
        self.commands: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()

    def fail(self, sha256: str, error: str) -> None:
        t = self.torrents.pop(sha256, None)
        if t is not None:
            self.ses.remove_torrent(t.handle, lt.session.delete_files)
        shutil.rmtree(self.tmp / f"swarm-{sha256}", ignore_errors=True)
        self.emit("failed", sha256=sha256, error=error)

    # -- commands ---------------------------------------------------------

    def do(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        sha = str(msg.get("sha256", ""))
        try:
            if op == "seed":
                receivers = int(msg.get("receivers", SUPER_SEED_RECEIVERS))
                self.seed(sha, super_seed=receivers >= SUPER_SEED_RECEIVERS)
                self.emit("seeding", sha256=sha)
            elif op == "fetch":
                ref = SwarmRef(sha, int(msg["size"]), str(msg["info_hash"]))
                self.fetch(ref, msg.get("peers", []))
            elif op == "peers":
                t = self.torrents.get(sha)
                if t is not None:
                    self.connect(t.handle, msg.get("peers", []))
            elif op == "stats":
                self.emit("stats", torrents=self.stats())
            else:
                self.emit("failed", sha256=sha, error=f"unknown op {op!r}")
        except (SwarmError, KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            self.emit("failed", sha256=sha, error=f"{op}: {exc}")

    def seed(self, sha256: str, *, super_seed: bool, uploaded_before: int = 0) -> None:
        if sha256 in self.torrents:
            return
        path = self.store / sha256
        if not path.is_file():
            raise SwarmError(f"blob {sha256} is not in the store")
        sha, info = torrent_info(path)
        if sha != sha256:
            raise SwarmError(f"stored blob {sha256} does not match its name")
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(b"d4:info" + info + b"e")
        atp.save_path = str(self.store)
        # The store holds only verified blobs: no recheck at start.
        atp.flags = (atp.flags | lt.torrent_flags.seed_mode) & ~lt.torrent_flags.auto_managed
        atp.flags &= ~lt.torrent_flags.paused
        if super_seed:
            atp.flags |= lt.torrent_flags.super_seeding
        handle = self.ses.add_torrent(atp)
        self.torrents[sha256] = _Torrent(sha256, handle, uploaded_before=uploaded_before)

    def fetch(self, ref: SwarmRef, peers: list[Any]) -> None:
        if (self.store / ref.sha256).is_file():
            self.emit("stored", sha256=ref.sha256, seconds=0.0)
            return
        if ref.sha256 in self.torrents:
            return
        atp = lt.add_torrent_params()
        atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(ref.info_hash)))
        atp.save_path = str(self.tmp / f"swarm-{ref.sha256}")
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handle = self.ses.add_torrent(atp)
        self.torrents[ref.sha256] = _Torrent(ref.sha256, handle, ref=ref, state="fetching")
        self.connect(handle, peers)

    def connect(self, handle: Any, peers: list[Any]) -> None:
        for peer in peers:
            addr, port = str(peer[0]), int(peer[1])
            handle.connect_peer((addr, port))

    def stats(self) -> dict[str, Any]:
        out = {}
        for sha, t in self.torrents.items():
            st = t.handle.status()
            out[sha] = {
                "state": t.state,
                "uploaded": t.uploaded_before + st.total_payload_upload,
                "downloaded": st.total_payload_download,
                "peers": st.num_peers,
                "hash_failures": t.hash_failures,
                "progress": st.progress,
            }
        return out

    # -- alerts -----------------------------------------------------------

    def _find(self, handle: Any) -> _Torrent | None:
        for t in self.torrents.values():
            if t.handle == handle:
                return t
        return None

    def on_alert(self, a: Any) -> None:
        if isinstance(a, lt.listen_failed_alert):
            self.emit("listen_failed", error=a.message())
            raise SystemExit(3)
        if isinstance(a, lt.listen_succeeded_alert):
            self.emit("ready", sha256="", port=a.port)
            return
        t = self._find(a.handle) if hasattr(a, "handle") else None
        if t is None:
            return
        if isinstance(a, lt.hash_failed_alert):
            t.hash_failures += 1  # libtorrent re-fetches it and bans the sender
        elif isinstance(a, lt.metadata_received_alert) and t.ref is not None:
            ti = t.handle.torrent_file()
            # The metadata matched the signed info-hash; it must also name
            # exactly the blob the reference names.
            if ti.num_files() != 1 or ti.name() != t.sha256 or ti.total_size() != t.ref.size:
                self.fail(t.sha256, "the swarm's metadata does not describe the signed blob")
        elif isinstance(a, lt.torrent_finished_alert) and t.state == "fetching":
            t.state = "flushing"
            t.handle.flush_cache()  # 2.1 says "finished" before the data is on disk
        elif isinstance(a, lt.cache_flushed_alert) and t.state == "flushing":
            self.finish(t)
        elif isinstance(a, lt.torrent_removed_alert) and t.state == "removing":
            self.store_and_reseed(t)
        elif isinstance(a, lt.file_error_alert | lt.torrent_error_alert):
            self.fail(t.sha256, a.message())

    def finish(self, t: _Torrent) -> None:
        path = self.tmp / f"swarm-{t.sha256}" / t.sha256
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != t.sha256:
            self.fail(t.sha256, f"the swarm's file has SHA-256 {h.hexdigest()}, not {t.sha256}")
            return
        t.uploaded_before = t.handle.status().total_payload_upload
        t.state = "removing"
        # The finished file moves into the store; the torrent is re-added from
        # there, so the store is the seed dir.
        self.ses.remove_torrent(t.handle)

    def store_and_reseed(self, t: _Torrent) -> None:
        src_dir = self.tmp / f"swarm-{t.sha256}"
        src = src_dir / t.sha256
        os.chmod(src, 0o444)
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(src, self.store / t.sha256)
        dfd = os.open(self.store, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        shutil.rmtree(src_dir, ignore_errors=True)
        del self.torrents[t.sha256]
        seconds = time.monotonic() - t.started
        self.seed(t.sha256, super_seed=False, uploaded_before=t.uploaded_before)
        self.torrents[t.sha256].hash_failures = t.hash_failures
        self.emit("stored", sha256=t.sha256, seconds=round(seconds, 3))

    # -- loop ---------------------------------------------------------------

    def read_stdin(self) -> None:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self.commands.put(msg)
        self.commands.put(None)

    def run(self) -> None:
        threading.Thread(target=self.read_stdin, daemon=True).start()
        while True:
            self.ses.wait_for_alert(50)
            for a in self.ses.pop_alerts():
                self.on_alert(a)
            while True:
                try:
                    msg = self.commands.get_nowait()
                except queue.Empty:
                    break
                if msg is None:
                    return
                self.do(msg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="undistro-swarm")
    p.add_argument("--state", required=True, type=Path)
    p.add_argument("--listen", required=True, help="ADDR:PORT, the node's fleet address")
    args = p.parse_args(argv)
    addr, _, port = args.listen.rpartition(":")
    if not addr or not port.isdigit() or addr in ("0.0.0.0", "::", "[::]"):
        print(f"undistro-swarm: --listen needs the fleet ADDR:PORT, not {args.listen!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        Child(args.state, args.listen).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

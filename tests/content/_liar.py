"""A peer that claims a blob and serves corrupted pieces (run in a namespace).

It adds the honest file (libtorrent checks it and believes it has every
piece), then overwrites the bytes on disk in place, so what it uploads no
longer matches the piece hashes. Prints "ready", then serves until stdin closes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import libtorrent as lt

from undistro.content._swarm import torrent_info
from undistro.content._swarm_child import settings


def main() -> None:
    path, listen = Path(sys.argv[1]), sys.argv[2]
    ses = lt.session(cast(Any, settings(listen)))
    _, info = torrent_info(path)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(b"d4:info" + info + b"e")
    atp.save_path = str(path.parent)
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    handle = ses.add_torrent(atp)
    while not handle.status().is_seeding:
        time.sleep(0.05)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # in place: libtorrent keeps reading this inode
        f.write(bytes(size))
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()

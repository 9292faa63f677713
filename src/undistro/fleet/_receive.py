"""The receiving side: a node verifies a revision before it fetches or uses it.

python-tuf's ngclient does the verifying (root rotation, thresholds,
expiry, rollback and freeze checks, hashes and lengths); undistro adds only
where the files come from and what a revision means:

- an *announcement* (the compact signed timestamp a push gossips) is checked
  against the node's trusted root first — a forged or replayed one costs a
  signature check and nothing else;
- the announced timestamp is handed to ngclient as *the* timestamp, so a
  peer that keeps serving an old one (a freeze) cannot hold the node back;
- every other file is immutable (consistent snapshots) and may come from any
  source: a directory (a mirror, a USB stick) or an HTTP(S) URL today, and
  peers as the content store lands;
- a revision number at or below the last one applied is refused (replay),
  so is one whose target filter does not name this node.

The node's trust lives in ``<state>/fleet/``: ngclient's metadata cache,
``revisions/r<N>/`` (each unpacked bundle) and ``current`` (the applied one).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from undistro._files import atomic_write as _write
from undistro.errors import FleetError

if TYPE_CHECKING:
    from tuf.api.metadata import Metadata

POLICY_PREFIX = "policy/"
_SCHEME = "fleet:"


class RevisionRefused(FleetError, ValueError):
    """A revision or an announcement failed verification; nothing was used."""

    exit_code = 2


@dataclass(frozen=True)
class Revision:
    number: int
    sha256: str
    policy_dir: str  # the unpacked, verified policy
    liars: tuple[str, ...] = ()  # sources that served a bundle failing verification


def trust_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "fleet")


def install_root(state_dir: str, root_bytes: bytes) -> None:
    """Trust ``root_bytes`` (a fleet's ``1.root.json``) from now on.

    Refuses a file that is not a self-signed TUF root meeting its threshold;
    refuses to replace a trusted root (rotation comes signed, through pull).
    """
    from tuf.api.metadata import Metadata, Root

    try:
        md = Metadata[Root].from_bytes(root_bytes)
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except Exception as exc:  # tuf raises several unrelated families here
        raise RevisionRefused(f"not a valid signed TUF root: {_one_line(exc)}") from None
    meta = os.path.join(trust_dir(state_dir), "metadata")
    path = os.path.join(meta, "root.json")
    if os.path.exists(path):
        raise RevisionRefused(f"{path}: a root is already trusted; a new one arrives signed by it")
    os.makedirs(meta, 0o700, exist_ok=True)
    _write(path, root_bytes)


def check_announcement(state_dir: str, data: bytes) -> int:
    """Verify an announced timestamp against the trusted root; its version.

    Cheap (one Ed25519 check) and done before anything is fetched. Refuses a
    bad signature, an expired timestamp, or a version not above the one the
    node already trusts (a replay).
    """
    from tuf.api.metadata import Metadata, Root, Timestamp

    root_md = _trusted(state_dir, "root")
    if root_md is None:
        raise RevisionRefused("no trusted fleet root (run 'undistro fleet trust ROOT.json')")
    try:
        md = Metadata[Timestamp].from_bytes(data)
        assert isinstance(root_md.signed, Root)
        root_md.signed.verify_delegate(Timestamp.type, md.signed_bytes, md.signatures)
    except Exception as exc:
        raise RevisionRefused(f"announcement: {_one_line(exc)}") from None
    if md.signed.is_expired():
        raise RevisionRefused(f"announcement: timestamp expired at {md.signed.expires}")
    known = _trusted(state_dir, "timestamp")
    if known is not None and md.signed.version <= known.signed.version:
        raise RevisionRefused(
            f"announcement: timestamp version {md.signed.version} is not above the trusted "
            f"{known.signed.version} (replayed or old)"
        )
    return md.signed.version


def is_known(state_dir: str, announcement: bytes) -> bool:
    """True when ``announcement`` is the timestamp this node already trusts
    (it came by another way first): neither news nor a replay."""
    try:
        with open(os.path.join(trust_dir(state_dir), "metadata", "timestamp.json"), "rb") as f:
            return f.read() == announcement
    except FileNotFoundError:
        return False


def pull(
    state_dir: str,
    sources: Sequence[str],
    *,
    tags: Sequence[str] = (),
    announcement: bytes | None = None,
) -> Revision | None:
    """Refresh the trusted metadata from ``sources`` and unpack the newest
    revision meant for this node; None when there is nothing newer.

    ``sources`` are fleet repository locations: directories holding
    ``metadata/`` and ``targets/``, or http(s) URLs of such a tree.
    """
    from tuf.api import exceptions
    from tuf.ngclient import Updater, UpdaterConfig

    from undistro.fleet._bundle import unpack_bundle

    if announcement is not None:
        check_announcement(state_dir, announcement)
    top = trust_dir(state_dir)
    meta = os.path.join(top, "metadata")
    if not os.path.exists(os.path.join(meta, "root.json")):
        raise RevisionRefused("no trusted fleet root (run 'undistro fleet trust ROOT.json')")
    downloads = os.path.join(top, "downloads")
    os.makedirs(downloads, 0o700, exist_ok=True)
    updater = Updater(
        metadata_dir=meta,
        metadata_base_url=f"{_SCHEME}metadata/",
        target_base_url=f"{_SCHEME}targets/",
        target_dir=downloads,
        fetcher=(fetcher := _sources_fetcher(_local_sources(top, sources), announcement)),
        config=UpdaterConfig(prefix_targets_with_hash=True),
        bootstrap=None,  # the root installed by "fleet trust", kept in metadata_dir
    )
    try:
        updater.refresh()
        chosen = _newest_for(meta, tags)
        if chosen is None:
            return None
        number, path = chosen
        applied = current_revision(state_dir)
        if applied is not None and number <= applied:
            return None
        info = updater.get_targetinfo(path)
        if info is None:
            raise RevisionRefused(f"target {path} vanished from the verified metadata")
        liars: list[str] = []
        while True:
            try:
                local = updater.download_target(info, os.path.join(downloads, f"r{number}.bundle"))
                break
            except exceptions.LengthOrHashMismatchError:
                # A lying (or corrupt) source: pass it over, try the next.
                liar = fetcher.served.get(f"{_SCHEME}targets/{_hashed(path, info)}")
                if liar is None or liar in fetcher.excluded:
                    raise
                fetcher.excluded.add(liar)
                liars.append(liar)
                if len(fetcher.excluded) >= len(sources):
                    raise RevisionRefused(
                        f"the bundle of revision {number} failed verification from every "
                        f"source ({len(liars)})"
                    ) from None
    except exceptions.RepositoryError as exc:
        raise RevisionRefused(f"refused: {_one_line(exc)}") from None
    except exceptions.DownloadError as exc:
        raise FleetError(f"cannot fetch from any source: {_one_line(exc)}") from None
    with open(local, "rb") as f:
        data = f.read()
    os.unlink(local)
    revisions = os.path.join(top, "revisions")
    os.makedirs(revisions, 0o755, exist_ok=True)
    dest = os.path.join(revisions, f"r{number}")
    if not os.path.isdir(dest):
        unpack_bundle(data, dest)
    return Revision(number, info.hashes["sha256"], dest, tuple(liars))


def _hashed(path: str, info: Any) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f"{info.hashes['sha256']}.{name}")


def mark_applied(state_dir: str, revision: Revision) -> None:
    """Record ``revision`` as the one in force. The floor (the highest ever
    applied) only rises: a rollback to an older revision does not let a
    replay of a newer one back in — only a newer push does."""
    floor = max(revision.number, current_revision(state_dir) or 0)
    record = {
        "revision": revision.number,
        "sha256": revision.sha256,
        "policy_dir": revision.policy_dir,
        "floor": floor,
        "time": time.time(),
    }
    _write(os.path.join(trust_dir(state_dir), "current.json"), json.dumps(record).encode())


def in_force(state_dir: str) -> Revision | None:
    """The revision this node enforces, if the fleet gave it one."""
    record = _current(state_dir)
    if record is None or not os.path.isdir(str(record.get("policy_dir", ""))):
        return None
    return Revision(int(record["revision"]), str(record["sha256"]), str(record["policy_dir"]))


def previous(state_dir: str) -> Revision | None:
    """The newest unpacked revision older than the one in force (rollback)."""
    now = in_force(state_dir)
    if now is None:
        return None
    top = os.path.join(trust_dir(state_dir), "revisions")
    older = sorted(
        (int(n[1:]) for n in os.listdir(top) if n[:1] == "r" and n[1:].isdigit()),
        reverse=True,
    )
    for number in older:
        if number < now.number:
            return Revision(number, "", os.path.join(top, f"r{number}"))
    return None


def current_revision(state_dir: str) -> int | None:
    """The floor: the highest revision ever applied here."""
    record = _current(state_dir)
    return None if record is None else int(record.get("floor", record["revision"]))


def _current(state_dir: str) -> dict[str, Any] | None:
    path = os.path.join(trust_dir(state_dir), "current.json")
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
        int(record["revision"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise FleetError(f"{path} is corrupt") from None
    return record if isinstance(record, dict) else None


def _newest_for(meta_dir: str, tags: Sequence[str]) -> tuple[int, str] | None:
    """The highest revision whose target filter this node's tags satisfy."""
    from tuf.api.metadata import Metadata, Targets

    # ngclient wrote targets.json only after verifying it against snapshot.
    with open(os.path.join(meta_dir, "targets.json"), "rb") as f:
        targets = Metadata[Targets].from_bytes(f.read()).signed
    best: tuple[int, str] | None = None
    have = set(tags)
    for path, target in targets.targets.items():
        if not path.startswith(POLICY_PREFIX):
            continue
        custom = target.unrecognized_fields.get("custom") or {}
        number = custom.get("revision")
        wanted = {t for t in str(custom.get("to", "")).split(",") if t}
        if isinstance(number, int) and wanted <= have and (best is None or number > best[0]):
            best = (number, path)
    return best


def _trusted(state_dir: str, role: str) -> Metadata[Any] | None:
    from tuf.api.metadata import Metadata

    try:
        with open(os.path.join(trust_dir(state_dir), "metadata", f"{role}.json"), "rb") as f:
            return Metadata.from_bytes(f.read())
    except FileNotFoundError:
        return None


def _sources_fetcher(sources: Sequence[str], announcement: bytes | None) -> Any:
    """A FetcherInterface serving ngclient from the announcement and sources.

    URLs are opaque to ngclient; ours are ``fleet:metadata/NAME`` and
    ``fleet:targets/NAME``, tried against each source in turn. Built here so
    that importing this module does not import tuf.
    """
    from tuf.api.exceptions import DownloadHTTPError
    from tuf.ngclient import FetcherInterface

    class SourcesFetcher(FetcherInterface):
        served: dict[str, str] = {}  # url → the source that answered it
        excluded: set[str] = set()  # sources caught serving bad bytes

        def _fetch(self, url: str) -> Iterator[bytes]:
            rel = url.removeprefix(_SCHEME)
            if rel == "metadata/timestamp.json" and announcement is not None:
                return iter([announcement])
            if ".." in rel.split("/"):
                raise DownloadHTTPError(f"refused path {rel}", 400)
            for source in sources:
                if source in self.excluded:
                    continue
                data = _read_source(source, rel)
                if data is not None:
                    self.served[url] = source
                    return iter([data])
            raise DownloadHTTPError(f"{rel}: in none of {len(sources)} source(s)", 404)

    fetcher = SourcesFetcher()
    fetcher.served, fetcher.excluded = {}, set()
    return fetcher


def _local_sources(top: str, sources: Sequence[str]) -> list[str]:
    """Sources as ngclient's fetcher reads them: a git remote becomes the
    work tree of a shallow clone kept under ``<state>/fleet/git/``. Git only
    moves the bytes; TUF verifies them exactly as from any other source."""
    out = []
    for source in sources:
        if source.startswith("git+"):
            clone = _git_checkout(top, source.removeprefix("git+"))
            if clone is not None:
                out.append(clone)
        else:
            out.append(source)
    return out


def _git_checkout(top: str, remote: str) -> str | None:
    import hashlib
    import subprocess

    branch = ""
    if "#" in remote:
        remote, branch = remote.split("#", 1)
    clone = os.path.join(top, "git", hashlib.sha256(remote.encode()).hexdigest()[:16])
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    ref = branch or "HEAD"
    steps = (
        [["git", "-C", clone, "fetch", "-q", "--depth", "1", "origin", ref],
         ["git", "-C", clone, "reset", "-q", "--hard", "FETCH_HEAD"]]
        if os.path.isdir(os.path.join(clone, ".git"))
        else [["git", "clone", "-q", "--depth", "1", *(["-b", branch] if branch else []),
               remote, clone]]
    )  # fmt: skip
    for argv in steps:
        try:
            subprocess.run(argv, env=env, capture_output=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError):
            return None  # the next source is tried; none answering is reported
    return clone


def _read_source(source: str, rel: str) -> bytes | None:
    if source.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{source.rstrip('/')}/{rel}", timeout=30) as resp:
                data: bytes = resp.read(64 * 1024 * 1024 + 1)
                return data
        except (urllib.error.URLError, OSError):
            return None
    try:
        fd = os.open(os.path.join(source, rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]

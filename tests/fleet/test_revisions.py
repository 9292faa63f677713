"""Signed policy revisions: init, trust, push, pull — and every refusal.

Everything goes through the CLI against real TUF metadata (python-tuf) and a
directory source, the fallback a node pulls from when gossip fails.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli
from undistro.fleet._receive import RevisionRefused, check_announcement


@pytest.fixture
def node(tmp_path: Path, fleet: Path, cli: RunCli) -> Path:
    root = tmp_path / "node"
    root.mkdir()
    code, _, err = cli("fleet", "trust", fleet / "repo/metadata/1.root.json", "--root", root)
    assert (code, err) == (0, ""), err
    return root


def _policy(policy: PolicyDir, text: str) -> PolicyDir:
    policy.resources(
        f"""
        [[file]]
        path = "/etc/motd"
        content = "{text}\\n"
        """
    )
    return policy


def _push(cli: RunCli, fleet: Path, policy: PolicyDir, *extra: str) -> str:
    code, out, err = cli("fleet", "push", policy, "--fleet", fleet, "--no-announce", *extra)
    assert (code, err) == (0, ""), err
    return out


def _pull(cli: RunCli, fleet: Path, node: Path, *extra: str) -> tuple[int, str, str]:
    return cli("fleet", "pull", "--from", fleet / "repo", "--root", node, "-q", *extra)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "var/lib/undistro" not in str(p)
    }


def test_push_then_pull_applies_the_revision(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    out = _push(cli, fleet, _policy(policy, "one"))
    assert out.startswith("revision 1: 2 files")
    code, out, err = _pull(cli, fleet, node)
    assert (code, err) == (0, ""), err
    assert "revision 1 verified" in out
    assert (node / "etc/motd").read_text() == "one\n"
    code, out, _ = _pull(cli, fleet, node)
    assert (code, out) == (0, "no newer revision for this node\n")
    _push(cli, fleet, _policy(policy, "two"))
    assert _pull(cli, fleet, node)[0] == 0
    assert (node / "etc/motd").read_text() == "two\n"
    code, out, _ = cli("log", "--root", node, "--resource", "fleet:revision")
    assert out.count("applied revision") == 2


def test_the_target_filter_picks_the_nodes(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    _push(cli, fleet, _policy(policy, "web only"), "--to", "web")
    assert _pull(cli, fleet, node)[1] == "no newer revision for this node\n"
    assert not (node / "etc/motd").exists()
    assert _pull(cli, fleet, node, "--tag", "web")[0] == 0
    assert (node / "etc/motd").read_text() == "web only\n"


def _refused(cli: RunCli, fleet: Path, node: Path, match: str) -> None:
    before = _tree(node)
    code, out, err = _pull(cli, fleet, node)
    assert code == 2, (out, err)
    assert err.startswith("undistro: fleet revision refused:") and err.count("\n") == 1, err
    assert match in err, err
    assert _tree(node) == before  # nothing applied
    assert "refused" in cli("log", "--root", node, "--resource", "fleet:revision")[1]


def test_a_forged_timestamp_signature_is_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    _push(cli, fleet, _policy(policy, "evil"))
    ts = fleet / "repo/metadata/timestamp.json"
    doc = json.loads(ts.read_text())
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    ts.write_text(json.dumps(doc))
    _refused(cli, fleet, node, "timestamp")


def test_a_bundle_swapped_at_the_source_is_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    _push(cli, fleet, _policy(policy, "good"))
    (bundle,) = (fleet / "repo/targets/policy").iterdir()
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"\x00")
    _refused(cli, fleet, node, "")


def test_an_edited_targets_file_is_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    _push(cli, fleet, _policy(policy, "good"))
    targets = fleet / "repo/metadata/2.targets.json"
    doc = json.loads(targets.read_text())
    doc["signed"]["targets"]["policy/r1.bundle"]["custom"]["to"] = "nobody"
    targets.write_text(json.dumps(doc))
    _refused(cli, fleet, node, "")


def test_another_fleets_revision_is_refused(
    tmp_path: Path, cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    other = tmp_path / "other"
    assert cli("fleet", "init", other)[0] == 0
    _push(cli, other, _policy(policy, "theirs"))
    before = _tree(node)
    code, _, err = cli("fleet", "pull", "--from", other / "repo", "--root", node)
    assert code == 2 and "refused" in err
    assert _tree(node) == before


def test_a_replayed_or_older_announcement_is_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    _push(cli, fleet, _policy(policy, "one"))
    old = (fleet / "repo/metadata/timestamp.json").read_bytes()
    state = str(node / "var/lib/undistro")
    assert check_announcement(state, old) == 2
    assert _pull(cli, fleet, node)[0] == 0
    with pytest.raises(RevisionRefused, match="not above the trusted 2"):
        check_announcement(state, old)
    _push(cli, fleet, _policy(policy, "two"))
    assert check_announcement(state, (fleet / "repo/metadata/timestamp.json").read_bytes()) == 3


def test_an_expired_timestamp_is_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    from tuf.api.metadata import Metadata
    from tuf.api.serialization.json import JSONSerializer

    from undistro.fleet._publish import load_online_signers

    _push(cli, fleet, _policy(policy, "one"))
    ts_path = fleet / "repo/metadata/timestamp.json"
    md = Metadata.from_bytes(ts_path.read_bytes())
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    md.signatures.clear()
    md.sign(load_online_signers(str(fleet))["timestamp"])
    ts_path.write_bytes(md.to_bytes(JSONSerializer(compact=True)))
    with pytest.raises(RevisionRefused, match="expired"):
        check_announcement(str(node / "var/lib/undistro"), ts_path.read_bytes())
    _refused(cli, fleet, node, "expired")


def test_a_frozen_source_is_passed_over_by_the_announcement(
    tmp_path: Path, cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    """A source that keeps serving an old timestamp cannot hold a node back
    when the gossiped announcement says there is a newer one."""
    from undistro.fleet._receive import mark_applied, pull

    _push(cli, fleet, _policy(policy, "one"))
    stale = (fleet / "repo/metadata/timestamp.json").read_bytes()
    _push(cli, fleet, _policy(policy, "two"))
    fresh = (fleet / "repo/metadata/timestamp.json").read_bytes()
    (fleet / "repo/metadata/timestamp.json").write_bytes(stale)  # the freeze
    state = str(node / "var/lib/undistro")
    revision = pull(state, [str(fleet / "repo")], announcement=fresh)
    assert revision is not None and revision.number == 2
    mark_applied(state, revision)
    assert (Path(revision.policy_dir) / "policy/main.toml").read_text().count("two") == 1


def test_a_rotated_key_is_trusted_and_the_old_one_refused(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    from tuf.api.metadata import Metadata
    from tuf.api.serialization.json import JSONSerializer

    _push(cli, fleet, _policy(policy, "one"))
    assert _pull(cli, fleet, node)[0] == 0
    old_key = (fleet / "keys/timestamp.pem").read_bytes()
    code, out, err = cli("fleet", "rotate", "timestamp", "--fleet", fleet)
    assert (code, err) == (0, "") and "2.root.json" in out
    _push(cli, fleet, _policy(policy, "two"))
    assert _pull(cli, fleet, node)[0] == 0  # walks 1.root -> 2.root
    assert (node / "etc/motd").read_text() == "two\n"
    # The leaked old key signs a newer timestamp: refused now.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    ts_path = fleet / "repo/metadata/timestamp.json"
    md = Metadata.from_bytes(ts_path.read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(CryptoSigner(load_pem_private_key(old_key, None)))
    with pytest.raises(RevisionRefused, match="timestamp"):
        check_announcement(
            str(node / "var/lib/undistro"), md.to_bytes(JSONSerializer(compact=True))
        )


def test_the_announcement_fits_one_serf_user_event(
    cli: RunCli, fleet: Path, policy: PolicyDir
) -> None:
    for _ in range(3):
        _push(cli, fleet, _policy(policy, "x" * 100))
    size = len((fleet / "repo/metadata/timestamp.json").read_bytes())
    assert size + len("undistro-revision") <= 482, size


def test_trust_refuses_what_is_not_a_root_and_a_second_root(
    tmp_path: Path, cli: RunCli, fleet: Path, node: Path
) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"signed": {}, "signatures": []}')
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    code, _, err = cli("fleet", "trust", bogus, "--root", fresh)
    assert (
        code == 2
        and err.startswith("undistro: not a valid signed TUF root")
        and err.count("\n") == 1
    )
    assert not (fresh / "var").exists()
    # A root signed by fewer than its threshold (one of the three signatures kept).
    doc = json.loads((fleet / "repo/metadata/1.root.json").read_text())
    doc["signatures"] = doc["signatures"][:1]
    bogus.write_text(json.dumps(doc))
    assert cli("fleet", "trust", bogus, "--root", fresh)[0] == 2
    code, _, err = cli("fleet", "trust", fleet / "repo/metadata/1.root.json", "--root", node)
    assert code == 2 and "already trusted" in err
    code, _, err = cli("fleet", "trust", tmp_path / "missing.json", "--root", fresh)
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize("special", ["symlink", "fifo"])
def test_push_refuses_a_policy_with_special_files(
    cli: RunCli, fleet: Path, policy: PolicyDir, special: str
) -> None:
    _policy(policy, "x")
    target = policy.path / "files" / "odd"
    target.parent.mkdir(exist_ok=True)
    if special == "symlink":
        target.symlink_to("/etc/passwd")
    else:
        os.mkfifo(target)
    code, out, err = cli("fleet", "push", policy, "--fleet", fleet, "--no-announce")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "not a regular file" in err
    assert sorted(p.name for p in (fleet / "repo/metadata").iterdir()) == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "timestamp.json",
    ]


def test_the_same_policy_makes_the_same_bundle(policy: PolicyDir, tmp_path: Path) -> None:
    from undistro.fleet._bundle import make_bundle

    _policy(policy, "same")
    first = make_bundle(str(policy))
    os.utime(policy.path / "policy/main.toml", (0, 0))
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(policy.path, copy)
    assert make_bundle(str(copy)).sha256 == first.sha256


@pytest.mark.parametrize(
    "entries",
    [
        [["../escape", False, b"x"]],
        [["/abs", False, b"x"]],
        [["a/./b", False, b"x"]],
        [["a", False, b"x"], ["a/b", False, b"y"]],
        [["dup", False, b"x"], ["dup", False, b"y"]],
        [["x" * 256, False, b"x"]],
        "not a list",
    ],
)
def test_unpack_refuses_a_hostile_bundle(tmp_path: Path, entries: object) -> None:
    import msgpack
    import zstandard

    from undistro.fleet._bundle import FORMAT, BundleError, unpack_bundle

    data = zstandard.ZstdCompressor().compress(msgpack.packb([FORMAT, entries]))
    with pytest.raises(BundleError):
        unpack_bundle(data, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == []


def test_pull_from_a_git_remote(
    tmp_path: Path, cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(fleet / "repo"), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    _push(cli, fleet, _policy(policy, "from git"))
    git("add", "-A")
    git("commit", "-q", "-m", "revision 1")
    source = f"git+file://{fleet / 'repo'}#main"
    code, _, err = cli("fleet", "pull", "--from", source, "--root", node, "-q")
    assert (code, err) == (0, ""), err
    assert (node / "etc/motd").read_text() == "from git\n"
    _push(cli, fleet, _policy(policy, "second"))
    git("add", "-A")
    git("commit", "-q", "-m", "revision 2")
    assert cli("fleet", "pull", "--from", source, "--root", node, "-q")[0] == 0
    assert (node / "etc/motd").read_text() == "second\n"
    code, _, err = cli("fleet", "pull", "--from", "git+file:///nonexistent", "--root", node)
    assert (
        code == 1
        and err.startswith("undistro: cannot fetch from any source")
        and err.count("\n") == 1
    )


def test_a_source_serving_a_tampered_bundle_is_passed_over(
    tmp_path: Path, cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    import shutil

    _push(cli, fleet, _policy(policy, "genuine"))
    liar = tmp_path / "liar"
    shutil.copytree(fleet / "repo", liar)
    (bundle,) = (liar / "targets/policy").iterdir()
    bundle.write_bytes(b"\x00" * len(bundle.read_bytes()))
    code, _, err = cli(
        "fleet", "pull", "--from", liar, "--from", fleet / "repo", "--root", node, "-q"
    )
    assert code == 0, err
    assert err == f"undistro: source {liar} served a bad bundle: passed over\n"
    assert (node / "etc/motd").read_text() == "genuine\n"
    log = cli("log", "--root", node, "--resource", "fleet:revision")[1]
    assert f"source {liar}" in log and "served a bundle that failed verification" in log


def test_trust_refuses_a_fifo_without_blocking(tmp_path: Path, cli: RunCli) -> None:
    fifo = tmp_path / "root.json"
    os.mkfifo(fifo)
    node = tmp_path / "n"
    node.mkdir()
    code, _, err = cli("fleet", "trust", fifo, "--root", node)  # would hang if it opened blocking
    assert code == 2 and err == f"undistro: {fifo}: not a regular file\n"


def test_fleet_init_where_it_cannot_write_is_one_line(cli: RunCli) -> None:
    code, out, err = cli("fleet", "init", "/proc/undistro-nope/fleet")
    assert code == 1 and out == "" and err.count("\n") == 1 and "No such file" in err


def test_the_fetch_child_verifies_without_urllib3(
    cli: RunCli, fleet: Path, node: Path, policy: PolicyDir
) -> None:
    """The agent's fetch child never imports urllib3 (half of ngclient's
    import time): it always hands ngclient its own fetcher."""
    import subprocess
    import sys

    _push(cli, fleet, _policy(policy, "lean"))
    state = node / "var/lib/undistro"
    code = (
        "import sys\n"
        "from undistro.fleet._child import main\n"
        f"main([{str(state)!r}, '--source={fleet / 'repo'}'])\n"
        "from tuf.ngclient import Updater, Urllib3Fetcher\n"
        "try:\n"
        "    Urllib3Fetcher()\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "print('urllib3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result, refused, imported = out.stdout.splitlines()
    assert json.loads(result)["revision"] == 1
    assert "no default TUF fetcher" in refused
    assert imported == "False"

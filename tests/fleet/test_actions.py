"""Signed actions: what a node accepts, and every way it refuses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import RunCli, trusting_state
from undistro.fleet._actions import ActionRefused, sign_action, verify_action
from undistro.fleet._publish import load_operator


@pytest.fixture
def state(tmp_path: Path, fleet: Path) -> str:
    return str(trusting_state(tmp_path / "node-state", fleet))


def _signed(fleet: Path, kind: str = "converge", target: str = "", **kw: object) -> bytes:
    signer, seq = load_operator(str(fleet), "admin")
    return sign_action(signer, kind, target, sequence=kw.pop("sequence", seq), **kw)  # type: ignore[arg-type]


def test_a_genuine_action_is_accepted_once(fleet: Path, state: str) -> None:
    data = _signed(fleet, "restart", "nginx", to=["web"])
    assert len(data) + len("undistro-action") <= 482
    action = verify_action(state, data, ["web", "eu"])
    assert action is not None
    assert (action.kind, action.target, action.to, action.signer) == (
        "restart",
        "nginx",
        ("web",),
        "admin",
    )
    with pytest.raises(ActionRefused, match="replayed"):
        verify_action(state, data, ["web"])


def test_the_replay_floor_survives_a_restart(fleet: Path, state: str) -> None:
    first, second = _signed(fleet), _signed(fleet)
    assert verify_action(state, second, []) is not None
    # A new process reads the floor from disk: the older action stays refused.
    with pytest.raises(ActionRefused, match="replayed"):
        verify_action(state, first, [])


def test_an_action_for_other_nodes_is_ignored_not_refused(fleet: Path, state: str) -> None:
    assert verify_action(state, _signed(fleet, to=["db"]), ["web"]) is None


@pytest.mark.parametrize(
    ("offset", "valid_for", "message"),
    [(-3600, 600, "expired"), (+3600, 600, "not valid yet")],
)
def test_stale_and_future_actions_are_refused(
    fleet: Path, state: str, offset: int, valid_for: int, message: str
) -> None:
    data = _signed(fleet, now=time.time() + offset, valid_for=valid_for)
    with pytest.raises(ActionRefused, match=message):
        verify_action(state, data, [])


def test_a_tampered_action_is_refused(fleet: Path, state: str) -> None:
    import msgpack

    payload, signature = msgpack.unpackb(_signed(fleet))
    fields = msgpack.unpackb(payload)
    fields[1] = "rollback"  # converge → rollback, signature kept
    forged = msgpack.packb([msgpack.packb(fields), signature])
    with pytest.raises(ActionRefused, match="bad signature"):
        verify_action(state, forged, [])


def test_an_unknown_signer_is_refused(tmp_path: Path, cli: RunCli, state: str) -> None:
    assert cli("fleet", "init", tmp_path / "other")[0] == 0
    with pytest.raises(ActionRefused, match="not an operator"):
        verify_action(state, _signed(tmp_path / "other"), [])


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\xa1x\xa1y", b"\x90" * 10])
def test_garbage_is_refused(state: str, data: bytes) -> None:
    with pytest.raises(ActionRefused):
        verify_action(state, data, [])


def test_a_new_operator_is_trusted_after_the_node_refreshes(
    tmp_path: Path, cli: RunCli, fleet: Path
) -> None:
    node = tmp_path / "node"
    node.mkdir()
    assert cli("fleet", "trust", fleet / "repo/metadata/1.root.json", "--root", node)[0] == 0
    code, out, err = cli("fleet", "operator", "alice", "--fleet", fleet)
    assert (code, err) == (0, "") and "operator alice" in out
    signer, seq = load_operator(str(fleet), "alice")
    data = sign_action(signer, "converge", sequence=seq)
    state = str(node / "var/lib/undistro")
    with pytest.raises(ActionRefused, match="not an operator"):
        verify_action(state, data, [])
    assert cli("fleet", "pull", "--from", fleet / "repo", "--root", node, "-q")[0] == 0
    action = verify_action(state, data, [])
    assert action is not None and action.signer == "alice"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restart"], "restart takes a SERVICE"),
        (["converge", "nginx"], "restart takes a SERVICE"),
        (["converge", "--valid-for", "0"], "valid for 1 s"),
        (["converge", "--as", "nobody"], "no such operator"),
    ],
)
def test_fleet_run_bad_input(cli: RunCli, fleet: Path, args: list[str], message: str) -> None:
    code, out, err = cli("fleet", "run", *args, "--fleet", fleet, "--rpc", "127.0.0.1:1")
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_fleet_run_without_serf(cli: RunCli, fleet: Path) -> None:
    from tests.fleet.serf_agents import free_port

    code, _, err = cli(
        "fleet", "run", "converge", "--fleet", fleet, "--rpc", f"127.0.0.1:{free_port()}"
    )
    assert code == 1 and err.startswith("undistro: action not sent")

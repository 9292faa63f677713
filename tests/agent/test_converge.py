"""The journal's cause for a run of coalesced events (a pure function)."""

from __future__ import annotations

from undistro.agent._converge import journal_cause


def test_one_event_is_the_cause_itself() -> None:
    causes = {"file:/a": "modify /r/a"}
    assert journal_cause({"file:/a"}, causes, "inotify") == "modify /r/a"


def test_no_event_falls_back_to_the_label() -> None:
    assert journal_cause(None, {}, "agent start") == "agent start"
    assert journal_cause({"file:/a"}, {}, "audit") == "audit"


def test_several_events_are_listed_then_counted() -> None:
    causes = {f"file:/{i}": f"modify /r/{i}" for i in range(10)}
    cause = journal_cause(set(causes), causes, "inotify", limit=3)
    assert cause == "inotify: modify /r/0; modify /r/1; modify /r/2 (+7 more)"


def test_same_event_for_many_resources_is_said_once() -> None:
    causes = {"user:a": "close_write /r/etc/passwd", "user:b": "close_write /r/etc/passwd"}
    assert journal_cause(set(causes), causes, "inotify") == "close_write /r/etc/passwd"

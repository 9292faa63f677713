"""The state store: fingerprints of managed objects and the journal.

One SQLite database (WAL) in the state directory. Reads are one query at the
start of a run; writes happen only when something changed, in one
transaction at the end — an idle agent or a no-op run writes nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from undistro.errors import StateError
from undistro.resources._base import Fingerprint

DEFAULT_STATE_DIR = "/var/lib/undistro"
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fingerprint (
    path TEXT PRIMARY KEY, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    mode INTEGER, uid INTEGER, gid INTEGER, sha256 TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS managed (
    path TEXT PRIMARY KEY, resource TEXT NOT NULL, source TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, run TEXT NOT NULL,
    resource TEXT NOT NULL, outcome TEXT NOT NULL, cause TEXT NOT NULL,
    actions TEXT NOT NULL, before TEXT, after TEXT, output TEXT, error TEXT
);
CREATE INDEX IF NOT EXISTS journal_resource ON journal (resource, time);
CREATE INDEX IF NOT EXISTS journal_time ON journal (time);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    time: float
    run: str
    resource: str
    outcome: str  # repaired | failed | skipped | policy-error | ...
    cause: str
    actions: list[str]
    before: str | None = None
    after: str | None = None
    output: str | None = None
    error: str | None = None


class StateStore:
    """The SQLite store in ``state_dir`` (created on first write)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "state.db")
        self._db: sqlite3.Connection | None = None

    # -- connection ----------------------------------------------------------

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not os.path.exists(self.path):
            return None
        try:
            if create:
                os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise StateError(
                    f"{self.path}: schema version {version}, expected {_SCHEMA_VERSION}"
                )
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open state store {self.path}: {exc}") from None
        self._db = db
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- fingerprints --------------------------------------------------------

    def fingerprints(self) -> dict[str, Fingerprint]:
        db = self._connect(create=False)
        if db is None:
            return {}
        rows = db.execute(
            "SELECT path, ino, size, mtime_ns, mode, uid, gid, sha256 FROM fingerprint"
        ).fetchall()
        return {row[0]: Fingerprint(*row[1:]) for row in rows}

    # -- meta ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        db = self._connect(create=False)
        if db is None:
            return None
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- the one write path --------------------------------------------------

    def commit(
        self,
        *,
        fingerprints: dict[str, Fingerprint | None] | None = None,
        journal: Iterable[JournalEntry] = (),
        managed: tuple[str, Iterable[tuple[str, str, str]]] | None = None,
    ) -> None:
        """Write fingerprint changes, journal entries and (when the policy
        changed) the managed-path index in one transaction."""
        entries = list(journal)
        if not fingerprints and not entries and managed is None:
            return
        db = self._connect(create=True)
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            for path, fp in (fingerprints or {}).items():
                if fp is None:
                    db.execute("DELETE FROM fingerprint WHERE path = ?", (path,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO fingerprint VALUES (?,?,?,?,?,?,?,?)",
                        (path, fp.ino, fp.size, fp.mtime_ns, fp.mode, fp.uid, fp.gid, fp.sha256),
                    )
            db.executemany(
                "INSERT INTO journal (time, run, resource, outcome, cause, actions, before,"
                " after, output, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.time,
                        e.run,
                        e.resource,
                        e.outcome,
                        e.cause,
                        json.dumps(e.actions),
                        e.before,
                        e.after,
                        e.output,
                        e.error,
                    )
                    for e in entries
                ],
            )
            if managed is not None:
                digest, rows = managed
                db.execute("DELETE FROM managed")
                db.executemany("INSERT OR REPLACE INTO managed VALUES (?,?,?)", rows)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('policy_digest', ?)", (digest,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StateError(f"cannot write state store {self.path}: {exc}") from None

    # -- queries -------------------------------------------------------------

    def journal(
        self,
        *,
        resource: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> list[JournalEntry]:
        """Journal entries, newest last; ``resource`` may end with ``*``."""
        db = self._connect(create=False)
        if db is None:
            return []
        where, args = [], []  # type: list[str], list[Any]
        if resource:
            if resource.endswith("*"):
                where.append("resource GLOB ?")
            else:
                where.append("resource = ?")
            args.append(resource)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time <= ?")
            args.append(until)
        sql = "SELECT time, run, resource, outcome, cause, actions, before, after, output, error"
        sql += " FROM journal"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = db.execute(sql, args).fetchall()
        return [_entry(row) for row in reversed(rows)]

    def managed_by(self, path: str) -> tuple[str, str] | None:
        """(resource id, policy file) managing ``path`` as of the last apply."""
        db = self._connect(create=False)
        if db is None:
            return None
        row = db.execute("SELECT resource, source FROM managed WHERE path = ?", (path,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def managed_paths(self) -> Iterator[tuple[str, str]]:
        db = self._connect(create=False)
        if db is None:
            return iter(())
        return iter(db.execute("SELECT path, resource FROM managed").fetchall())


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(
        time=row[0],
        run=row[1],
        resource=row[2],
        outcome=row[3],
        cause=row[4],
        actions=json.loads(row[5]),
        before=row[6],
        after=row[7],
        output=row[8],
        error=row[9],
    )


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"

"""The state store: fingerprints of managed objects and the journal.

One SQLite database (WAL) in the state directory. Reads are one query at the
start of a run; writes happen only when something changed, in one
transaction at the end — an idle agent or a no-op run writes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from undistro.errors import StateError
from undistro.resources._base import Fingerprint

DEFAULT_STATE_DIR = "/var/lib/undistro"
_SCHEMA_VERSION = 1
_NEARLY_FULL = 1 << 20  # bytes free below which an error says the disk is full

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


class JournalEntry(NamedTuple):
    time: float
    run: str
    resource: str
    outcome: str  # repaired | failed | skipped | policy-error | ...
    cause: str
    actions: tuple[str, ...]
    before: str | None = None
    after: str | None = None
    output: str | None = None
    error: str | None = None


class StateStore:
    """The SQLite store in ``state_dir`` (created on first write)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "state.db")
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None

    # -- connections ---------------------------------------------------------
    #
    # Reads go through a read-only connection and writes through a second one
    # opened only when there is something to write. Besides keeping a no-op
    # run from writing anything, the open reader stops the writer, on close,
    # from checkpointing and deleting the WAL — which the next reader would
    # have to create again, with writes.

    def _read(self) -> sqlite3.Connection | None:
        if self._reader is None:
            if not os.path.exists(self.path):
                return None
            uri = "file:" + _uri_quote(self.path) + "?mode=ro"
            try:
                db, version = _open_reader(uri)
            except sqlite3.Error as exc:
                if not on_read_only_fs(self.state_dir):
                    raise StateError(self._say("cannot read", exc)) from None
                # A WAL database on a read-only file system cannot be opened
                # as usual (SQLite wants to create its -shm and -wal files).
                # Nothing can write it there, so its file is read as it is:
                # plan, log and why keep working on a read-only root. Not if
                # a write-ahead log is left over: immutable reads skip it.
                if _nonempty(self.path + "-wal"):
                    raise StateError(
                        f"cannot read state store {self.path}: it is on a read-only file system"
                        " and its write-ahead log (-wal) holds changes only a writable mount"
                        " can fold in"
                    ) from None
                try:
                    db, version = _open_reader(uri + "&immutable=1")
                except sqlite3.Error as exc2:
                    raise StateError(self._say("cannot read", exc2)) from None
            if version == 0:
                # A store whose creation never committed (a full disk, a kill)
                # holds no data: the schema and the version are set in the
                # same transaction as the first write. Read it as empty.
                db.close()
                return None
            try:
                self._check_version(db)
            except StateError:
                db.close()
                raise
            self._reader = db
        return self._reader

    def _write(self) -> sqlite3.Connection:
        if self._writer is not None:
            return self._writer
        try:
            _makedirs(self.state_dir)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                _create_schema(db)
            self._check_version(db)
            db.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StateError(self._say("cannot open", exc)) from None
        self._writer = db
        return db

    def _check_version(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA_VERSION:
            raise StateError(f"{self.path}: schema version {version}, expected {_SCHEMA_VERSION}")

    def _say(self, what: str, exc: BaseException) -> str:
        """One line for a failure on the store, with what the file system
        it lives on says about it (read-only, nearly full)."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        trouble = fs_trouble(self.state_dir)
        return f"{what} state store {self.path}: {reason}" + (f" ({trouble})" if trouble else "")

    def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                db.close()
        self._reader = self._writer = None

    # -- fingerprints --------------------------------------------------------

    def fingerprints(self, paths: Iterable[str] | None = None) -> dict[str, Fingerprint]:
        """Stored fingerprints: all of them, or only those of ``paths`` (an
        agent re-checking one drifted file must not load 10,000)."""
        db = self._read()
        if db is None:
            return {}
        sql = "SELECT path, ino, size, mtime_ns, mode, uid, gid, sha256 FROM fingerprint"
        if paths is None:
            rows = db.execute(sql).fetchall()
        else:
            wanted, rows = list(paths), []
            for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows += db.execute(f"{sql} WHERE path IN ({marks})", chunk).fetchall()
        return {row[0]: Fingerprint(*row[1:]) for row in rows}

    # -- meta ----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        db = self._read()
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
        self._read()  # hold a reader open so the WAL outlives this writer
        db = self._write()
        try:
            db.execute("BEGIN IMMEDIATE")
            changes = (fingerprints or {}).items()
            db.executemany(
                "DELETE FROM fingerprint WHERE path = ?",
                [(path,) for path, fp in changes if fp is None],
            )
            db.executemany(
                "INSERT OR REPLACE INTO fingerprint VALUES (?,?,?,?,?,?,?,?)",
                [
                    (path, fp.ino, fp.size, fp.mtime_ns, fp.mode, fp.uid, fp.gid, fp.sha256)
                    for path, fp in changes
                    if fp is not None
                ],
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
                        "\n".join(e.actions),
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
            # SQLite rolls a transaction back by itself on some errors (a
            # full disk): a ROLLBACK then fails, and must not hide the cause.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise StateError(self._say("cannot write", exc)) from None

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
        db = self._read()
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
        db = self._read()
        if db is None:
            return None
        row = db.execute("SELECT resource, source FROM managed WHERE path = ?", (path,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def managed_paths(self) -> Iterator[tuple[str, str]]:
        db = self._read()
        if db is None:
            return iter(())
        return iter(db.execute("SELECT path, resource FROM managed").fetchall())

    # -- owed refreshes (the engine's notify edges that have not been paid) ----
    #
    # Created on first use rather than in _SCHEMA, so that a store made by an
    # older undistro gains it without a schema bump.

    def owed_refreshes(self) -> dict[str, tuple[float, str]]:
        """Resource id -> (since, cause) of every refresh a repair owed it and
        that has not succeeded yet (a failed reload, an agent killed between
        the repair and the refresh)."""
        db = self._read()
        if db is None:
            return {}
        try:
            rows = db.execute("SELECT resource, since, cause FROM owed_refresh").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing was ever owed
            return {}
        return {str(r[0]): (float(r[1]), str(r[2])) for r in rows}

    def settle_refreshes(
        self, *, owe: dict[str, tuple[float, str]] | None = None, paid: Iterable[str] = ()
    ) -> None:
        """Record refreshes now owed (an earlier ``since`` is kept) and forget
        the ``paid`` ones, in one transaction; nothing to do writes nothing."""
        done = list(paid)
        if not owe and not done:
            return
        self._read()
        db = self._write()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "CREATE TABLE IF NOT EXISTS owed_refresh (resource TEXT PRIMARY KEY,"
                " since REAL NOT NULL, cause TEXT NOT NULL) WITHOUT ROWID"
            )
            db.executemany("DELETE FROM owed_refresh WHERE resource = ?", [(r,) for r in done])
            db.executemany(
                "INSERT OR IGNORE INTO owed_refresh VALUES (?,?,?)",
                [(rid, since, cause) for rid, (since, cause) in (owe or {}).items()],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StateError(f"cannot write state store {self.path}: {exc}") from None


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    return JournalEntry(
        time=row[0],
        run=row[1],
        resource=row[2],
        outcome=row[3],
        cause=row[4],
        actions=tuple(row[5].split("\n")) if row[5] else (),
        before=row[6],
        after=row[7],
        output=row[8],
        error=row[9],
    )


def _open_reader(uri: str) -> tuple[sqlite3.Connection, int]:
    """A read-only connection and the store's ``user_version``; opening is
    lazy, so the query is what fails if the store cannot be read."""
    db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        return db, int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error:
        db.close()
        raise


def _create_schema(db: sqlite3.Connection) -> None:
    """Tables, indexes and ``user_version`` in one transaction: a store is
    created whole or not at all, never left at version 0 with half its
    tables (a full disk used to make every later run refuse it)."""
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")  # not allowed inside a transaction
    db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created it since we looked.
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _nonempty(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _makedirs(directory: str) -> None:
    # Only when missing: a no-op run makes no mkdir call at all.
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def on_read_only_fs(directory: str) -> bool:
    """Whether ``directory`` (or, if missing, its nearest existing parent)
    is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(_nearest_existing(directory)).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def fs_trouble(directory: str) -> str | None:
    """What is wrong with the file system ``directory`` is (or would be)
    on, for an error message: read-only, or nearly full; ``None`` if
    neither. One ``statvfs``, called only once something failed."""
    try:
        st = os.statvfs(_nearest_existing(directory))
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"{directory} is on a read-only file system"
    free = st.f_bavail * st.f_frsize
    if free < _NEARLY_FULL:
        return f"the file system of {directory} is full: {free // 1024} KiB free"
    return None


def _uri_quote(path: str) -> str:
    # What SQLite's URI parser treats specially; urllib.parse costs 10 ms.
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"

"""A local durable spool for the write-behind queues: acknowledged means on disk.

Every submission to a write-behind queue is appended here (one SQLite transaction, WAL,
``synchronous=NORMAL``: it survives the process being killed, ``kill -9`` included)
before the caller is answered, and deleted only after the database transaction that
wrote it has committed. What the database has not taken yet is therefore never only in
memory: a restart (after a SIGTERM during a database outage, or a crash) replays it.

The spool is a directory of *slots* (``slot-<n>.sqlite3``), one per live process,
each held with an exclusive ``flock`` for the life of the process. A process takes the
first free slot and adopts the rows of every other slot whose lock is free: a free
lock means the process that wrote them is gone. Several processes (``--workers``, or
replicas sharing a volume) can therefore share one directory, and nothing a dead one
spooled is left behind once any process starts again.

Limits, said plainly: ``synchronous=NORMAL`` does not survive a power loss of the
machine (set ``PROXY_SPOOL_FSYNC=true`` for that, at the cost of an fsync per
submission); a spool on a volume that is deleted with the pod (a Kubernetes
``emptyDir``) survives container restarts and crashes, not the deletion of the pod
while the database is down.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MAX_SLOTS = 64  # processes sharing one spool directory at once

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items ("
    "id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, body BLOB NOT NULL)"
)


def spool_directory(spool_dir: str | None, database_url: str) -> Path | None:
    """Where this database's spool lives; None when spooling is off.

    A spool only ever feeds the database it was written for: its directory is named
    after the database (URL without the password), under ``spool_dir``, which defaults
    to the SQLite file's directory, or ``./proxy-spool``."""
    if spool_dir is not None and spool_dir.strip().lower() in ("off", "none", "false"):
        return None
    url = make_url(database_url)
    fingerprint = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
    if spool_dir:
        base = Path(spool_dir)
    elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        base = Path(str(url.database)).resolve().parent / "proxy-spool"
    else:
        base = Path("proxy-spool")
    return base / f"db-{fingerprint[:16]}"


class SpoolError(RuntimeError):
    """The spool directory cannot be used (no free slot, not writable)."""


def _connect(path: Path, *, fsync: bool) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    connection.execute(_SCHEMA)
    return connection


def _try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on ``path`` (created if missing); the fd, or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class Spool:
    """This process's slot of a spool directory. Single-threaded: the event loop's."""

    def __init__(self, directory: str | Path, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.path: Path | None = None
        self.adopted = 0  # rows taken over from slots of processes that are gone
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None

    def open(self) -> Spool:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {self.directory}: {exc}") from exc
        for slot in range(MAX_SLOTS):
            fd = _try_lock(self.directory / f"slot-{slot}.lock")
            if fd is not None:
                self._lock_fd, self.path = fd, self.directory / f"slot-{slot}.sqlite3"
                break
        else:
            raise SpoolError(f"all {MAX_SLOTS} slots of {self.directory} are in use")
        self._db = _connect(self.path, fsync=self.fsync)
        self._adopt_orphans()
        return self

    def _adopt_orphans(self) -> None:
        assert self._db is not None and self.path is not None
        for other in sorted(self.directory.glob("slot-*.sqlite3")):
            if other == self.path:
                continue
            fd = _try_lock(other.with_suffix(".lock"))
            if fd is None:
                continue  # a live process holds it
            try:
                source = _connect(other, fsync=self.fsync)
                rows = source.execute("SELECT queue, body FROM items ORDER BY id").fetchall()
                if rows:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("INSERT INTO items (queue, body) VALUES (?, ?)", rows)
                    self._db.execute("COMMIT")
                    source.execute("DELETE FROM items")  # only after our copy committed
                    self.adopted += len(rows)
                    log.warning("spool: adopted %d row(s) left in %s", len(rows), other)
                source.close()
            finally:
                _unlock(fd)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError("the spool is not open")
        return self._db

    def append(self, queue: str, body: bytes) -> int:
        """Store one submission durably; its id (ids grow in submission order)."""
        cursor = self._conn.execute("INSERT INTO items (queue, body) VALUES (?, ?)", (queue, body))
        return int(cursor.lastrowid or 0)

    def append_many(self, queue: str, bodies: list[bytes]) -> list[int]:
        """Store submissions durably in one transaction (one WAL commit); their ids."""
        conn = self._conn
        insert = "INSERT INTO items (queue, body) VALUES (?, ?)"
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids = [int(conn.execute(insert, (queue, body)).lastrowid or 0) for body in bodies]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return ids

    def delete(self, ids: list[int]) -> None:
        if ids:  # one transaction: one WAL commit for the whole batch
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
            self._conn.execute("COMMIT")

    def read(self, queue: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        rows = self._conn.execute(
            "SELECT id, body FROM items WHERE queue = ? AND id > ? ORDER BY id LIMIT ?",
            (queue, after, limit),
        ).fetchall()
        return [(int(i), bytes(body)) for i, body in rows]

    def count(self, queue: str) -> int:
        row = self._conn.execute("SELECT count(*) FROM items WHERE queue = ?", (queue,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            _unlock(self._lock_fd)
            self._lock_fd = None

"""Durable outbox: events are committed to SQLite (WAL, synchronous=FULL) before publishing and
deleted only once the broker acknowledged them, so a broker outage, an agent crash or a power cut
loses nothing that was produced. Bounded by count and age; what the bound drops is counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.atomic import ensure_private_file

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    event_id: str
    topic: str
    payload: bytes
    created: float


class Outbox:
    """Thread-safe; one connection guarded by a lock (writes are small and infrequent)."""

    def __init__(
        self,
        path: Path,
        max_events: int = 100_000,
        max_age_s: float = 7 * 86400,
        policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.policy = policy
        self._lock = threading.Lock()
        ensure_private_file(path)  # events may hold embeddings and thumbnails of people
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT count(*) FROM events").fetchone()[0]

    @classmethod
    def from_config(cls, cfg) -> Outbox:
        o = cfg.outbox
        return cls(cfg.outbox_path, o.max_events, o.max_age_s, o.policy)

    def __len__(self) -> int:
        return self._count

    @property
    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()
        return int(row[0]) if row else 0

    def put(self, event_id: str, topic: str, payload: bytes) -> int | None:
        """Commit one event; returns its sequence number, or None if the full outbox refused it."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._expire(now)
                if self._count >= self.max_events:
                    if self.policy == "drop_newest":
                        self._add_dropped(dropped + 1)
                        self._db.execute("COMMIT")
                        return None
                    excess = self._count - self.max_events + 1
                    self._db.execute(
                        "DELETE FROM events WHERE seq IN "
                        "(SELECT seq FROM events ORDER BY seq LIMIT ?)",
                        (excess,),
                    )
                    self._count -= excess
                    dropped += excess
                cur = self._db.execute(
                    "INSERT INTO events (event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                    (event_id, topic, payload, now),
                )
                self._count += 1
                self._add_dropped(dropped)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if dropped:
            log.warning("outbox full or expired: dropped %d event(s)", dropped)
        return int(cur.lastrowid)

    def _expire(self, now: float) -> int:
        cur = self._db.execute("DELETE FROM events WHERE created < ?", (now - self.max_age_s,))
        self._count -= cur.rowcount
        return cur.rowcount

    def _add_dropped(self, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO counters VALUES ('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (n,),
            )

    def pending(self, after: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Oldest first, sequence numbers above `after`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, topic, payload, created FROM events WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [OutboxItem(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    def ack(self, seq: int) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._count -= cur.rowcount

    def dead_letter(self, seq: int, reason: str) -> None:
        """Move an event no transport will ever take out of the way of the others (kept, with
        the reason, in `dead_letters`)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letters SELECT seq, event_id, topic, payload, "
                    "created, ?, ? FROM events WHERE seq = ?",
                    (reason, time.time(), seq),
                )
                cur = self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
                self._count -= cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def listing(self, dead: bool = False, limit: int = 1000) -> list[dict]:
        """Pending events (or dead letters, with their reason), oldest first, without payloads."""
        table, extra = ("dead_letters", ", reason") if dead else ("events", "")
        with self._lock:
            rows = self._db.execute(
                f"SELECT seq, event_id, topic, length(payload), created{extra} FROM {table} "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        keys = ["seq", "event_id", "topic", "bytes", "created"] + (["reason"] if dead else [])
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def purge(self, pending: bool, dead: bool) -> int:
        """Delete pending events and/or dead letters; returns how many went."""
        removed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if pending:
                    removed += self._db.execute("DELETE FROM events").rowcount
                    self._count = 0
                if dead:
                    removed += self._db.execute("DELETE FROM dead_letters").rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    @property
    def dead_letters(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

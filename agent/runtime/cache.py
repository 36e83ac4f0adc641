"""Persistent LRU embedding cache: SQLite (WAL) keyed by content hash + model fingerprint.
numpy is imported where vectors are read or written, not to open the cache.

Re-enrolling an unchanged folder, or seeing the same crop twice, costs a lookup instead of an
inference. Several processes may share one cache file (the CLI and the running agent): SQLite
serialises the writers and each process evicts down to the shared bounds after it writes.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from agent.atomic import ensure_private_file

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    nbytes INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries(last_used);
"""


def content_hash(data: bytes | np.ndarray) -> str:
    """128-bit BLAKE2b of file bytes, or of decoded pixels (with their shape and dtype)."""
    h = hashlib.blake2b(digest_size=16)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        import numpy as np

        h.update(f"{data.shape}{data.dtype.str}".encode())
        data = np.ascontiguousarray(data).tobytes()
    h.update(data)
    return h.hexdigest()


def cache_key(content: str, fingerprint: str, flip: bool = False) -> str:
    return f"{content}:{fingerprint}:{'f' if flip else 'n'}"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "entries": self.entries,
            "bytes": self.bytes,
            "hit_rate": round(self.hit_rate, 4),
        }


class EmbeddingCache:
    """Bounded by entry count and by bytes; least recently used entries are evicted first."""

    def __init__(
        self, path: Path | str | None, max_entries: int = 200_000, max_bytes: int = 1 << 30
    ):
        self.path = Path(path) if path else None
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        if self.path is not None:
            ensure_private_file(self.path)  # content hashes and embeddings of what was seen
        self._db = sqlite3.connect(
            str(self.path) if self.path else ":memory:", timeout=30.0, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.stats = CacheStats()
        self._refresh_size()

    @classmethod
    def from_config(cls, cfg) -> EmbeddingCache | None:
        if not cfg.cache.enabled:
            return None
        return cls(cfg.cache_path, cfg.cache.max_entries, int(cfg.cache.max_mb * 1024 * 1024))

    def _refresh_size(self) -> None:
        count, total = self._db.execute("SELECT count(*), total(nbytes) FROM entries").fetchone()
        self.stats.entries, self.stats.bytes = int(count), int(total)

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached embeddings for the keys found; touches them (most recently used)."""
        import numpy as np

        keys = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, dim, vector FROM entries WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, dim, blob in rows:
                found[key] = np.frombuffer(blob, dtype="<f4", count=dim).copy()
        if found:
            now = time.time_ns()
            with self._db:
                self._db.executemany(
                    "UPDATE entries SET last_used=? WHERE key=?", [(now, k) for k in found]
                )
        self.stats.hits += len(found)
        self.stats.misses += len(keys) - len(found)
        return found

    def get(self, key: str) -> np.ndarray | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        import numpy as np

        if not items:
            return
        now = time.time_ns()
        rows = []
        for key, vector in items.items():
            blob = np.asarray(vector, dtype="<f4").tobytes()
            rows.append((key, int(np.asarray(vector).size), blob, len(blob), now))
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries(key, dim, vector, nbytes, last_used) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        self._refresh_size()
        self._evict()

    def _evict(self) -> None:
        over_entries = self.stats.entries - self.max_entries
        over_bytes = self.stats.bytes - self.max_bytes
        if over_entries <= 0 and over_bytes <= 0:
            return
        victims: list[str] = []
        freed = 0
        cursor = self._db.execute("SELECT key, nbytes FROM entries ORDER BY last_used, key")
        for key, nbytes in cursor:
            if len(victims) >= over_entries and freed >= over_bytes:
                break
            victims.append(key)
            freed += nbytes
        with self._db:
            self._db.executemany("DELETE FROM entries WHERE key=?", [(k,) for k in victims])
        self.stats.evictions += len(victims)
        self._refresh_size()

    def clear(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM entries")
        self._refresh_size()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

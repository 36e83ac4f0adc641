"""The gallery's SQLite database: the truth, and the one-writer lock.

Layout of a gallery directory::

    gallery.db      SQLite (WAL): metadata, every vector as enrolled (model space), identity
                    centroids and the PCA-whitening projection (search space)
    index.usearch   HNSW index of the search-space vectors, keyed by the vectors' row key
    writer.lock     flock()ed by the one process allowed to change the gallery

Concurrency: one writer at a time (an exclusive, non-blocking flock on `writer.lock`; a second
writer gets a clear error naming the holder's pid); any number of readers, which open the
database read-only. This module knows nothing of models or inference, and imports numpy only
where vectors are read or written, so metadata commands (`agent gallery list`) start fast.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent.atomic import atomic_write_with, ensure_private_file
from agent.errors import AgentError

if TYPE_CHECKING:
    import numpy as np

FORMAT = 1
DB_FILE = "gallery.db"
INDEX_FILE = "index.usearch"
LOCK_FILE = "writer.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    variant TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_identity ON vectors(identity);
CREATE INDEX IF NOT EXISTS vectors_source ON vectors(source);
CREATE INDEX IF NOT EXISTS vectors_hash ON vectors(content_hash);
CREATE TABLE IF NOT EXISTS centroids (
    identity TEXT PRIMARY KEY, count INTEGER NOT NULL, vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS projection (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fitted_count INTEGER NOT NULL,
    mean BLOB NOT NULL, components BLOB NOT NULL, scale BLOB NOT NULL
);
"""


class GalleryError(AgentError):
    pass


@dataclass(frozen=True)
class GalleryModel:
    """What built the gallery's vectors; searching or enrolling with anything else is refused."""

    name: str
    variant: str
    fingerprint: str
    sha256: str
    dim: int

    @property
    def label(self) -> str:
        return f"{self.name}:{self.variant}"

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> GalleryModel:
        return cls(
            meta["model_name"],
            meta["model_variant"],
            meta["model_fingerprint"],
            meta["model_sha256"],
            int(meta["dim"]),
        )

    def as_meta(self) -> dict[str, object]:
        return {
            "model_name": self.name,
            "model_variant": self.variant,
            "model_fingerprint": self.fingerprint,
            "model_sha256": self.sha256,
            "dim": self.dim,
        }


@dataclass(frozen=True)
class GallerySettings:
    """Fixed per gallery at creation (stored in its metadata)."""

    dtype: str = "f16"
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    flip: bool = True
    whiten_dim: int = 128
    identity_weight: float = 0.9

    @classmethod
    def from_config(cls, gallery_cfg, plain: bool = False) -> GallerySettings:
        settings = cls(**{f.name: getattr(gallery_cfg, f.name) for f in fields(cls)})
        return settings.as_plain() if plain else settings

    def as_plain(self) -> GallerySettings:
        """No quality features: raw cosine between single-view embeddings."""
        return replace(self, flip=False, whiten_dim=0, identity_weight=0.0)

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> GallerySettings:
        return cls(
            dtype=meta["dtype"],
            connectivity=int(meta["connectivity"]),
            expansion_add=int(meta["expansion_add"]),
            expansion_search=int(meta["expansion_search"]),
            flip=meta["flip"] == "1",
            whiten_dim=int(meta["whiten_dim"]),
            identity_weight=float(meta["identity_weight"]),
        )

    def as_meta(self) -> dict[str, object]:
        return asdict(self) | {"flip": int(self.flip)}

    @property
    def vector_dtype(self) -> str:
        """How vectors are stored in the database: little-endian float32 or float16."""
        return "<f4" if self.dtype == "f32" else "<f2"


@dataclass(frozen=True)
class Entry:
    key: int
    identity: str
    source: str
    content_hash: str
    enrolled_at: float


@dataclass(frozen=True)
class NewVector:
    identity: str
    source: str
    content_hash: str
    vector: np.ndarray


@dataclass(frozen=True)
class StoredProjection:
    """The whitening projection's arrays as stored (the search space turns them into one)."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray


def check_identity(name: str) -> str | None:
    """Why an identity name is unusable, or None when it is fine."""
    if not name or not name.strip():
        return "identity name is empty"
    if name in (".", ".."):
        return f"identity name {name!r} is reserved"
    if "/" in name or "\\" in name:
        return f"identity name {name!r} contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"identity name {name!r} contains a control character"
    if len(name) > 200 or len(name.encode("utf-8", "surrogatepass")) > 255:
        return "identity name is longer than 200 characters or 255 bytes (UTF-8)"
    return None


def read_meta(db: sqlite3.Connection, where: Path) -> dict[str, str]:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if int(meta.get("format", -1)) != FORMAT:
        raise GalleryError(
            f"{where}: gallery format {meta.get('format', '?')} is not supported "
            f"(this agent reads format {FORMAT})"
        )
    return meta


class GalleryStore:
    """SQLite connection of one gallery directory, with the writer lock when writable."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock_fd: int | None):
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self.meta = read_meta(db, path)
        self.vector_dtype = GallerySettings.from_meta(self.meta).vector_dtype

    # ---- opening ------------------------------------------------------------------------

    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / DB_FILE).is_file()

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> GalleryStore:
        path = Path(path)
        if not cls.exists(path):
            raise GalleryError(
                f"no gallery at {path}; create one with `agent enroll DIR --gallery {path}`"
            )
        lock_fd = cls._lock(path) if writable else None
        try:
            return cls(path, cls._connect(path, writable), lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def create(cls, path: Path, model: GalleryModel, settings: GallerySettings) -> GalleryStore:
        path = Path(path)
        if cls.exists(path):
            raise GalleryError(f"a gallery already exists at {path}")
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = cls._lock(path)
        try:
            db = cls._connect(path, True)
            now = time.time()
            meta = {
                "format": FORMAT,
                **model.as_meta(),
                **settings.as_meta(),
                "version": 0,
                "index_version": 0,
                "created_at": now,
                "updated_at": now,
            }
            with db:
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [(k, str(v)) for k, v in meta.items()],
                )
            return cls(path, db, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GalleryError(
                f"gallery {path} is being changed by another process (pid {holder}); "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def writer_active(self) -> bool:
        """Whether another process holds the writer lock now."""
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _connect(path: Path, writable: bool) -> sqlite3.Connection:
        db_path = path / DB_FILE
        try:
            if writable:
                ensure_private_file(db_path)
                db = sqlite3.connect(str(db_path), timeout=30.0, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            else:
                uri = f"file:{db_path}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
                db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{db_path} is not a readable gallery database: {exc}") from None
        return db

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    def require_writable(self) -> None:
        if not self.writable:
            raise GalleryError("gallery opened read-only")

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """`with store.transaction(): ...` commits the changes made inside, or none of them."""
        return self._db

    # ---- metadata -------------------------------------------------------------------------

    def meta_value(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row is not None else ""

    def set_meta(self, **values: object) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(k, str(v)) for k, v in values.items()],
        )

    def bump_version(self) -> None:
        self.set_meta(version=int(self.meta_value("version")) + 1, updated_at=time.time())

    @property
    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def integrity_problem(self) -> str | None:
        """SQLite's own check of every page (quick_check), or None when the file is sound."""
        try:
            rows = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None if rows == ["ok"] else "; ".join(rows[:3])

    def centroid_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM centroids").fetchone()[0])

    def identity_count(self) -> int:
        return int(self._db.execute("SELECT count(DISTINCT identity) FROM vectors").fetchone()[0])

    # ---- vectors --------------------------------------------------------------------------

    def insert(self, items: Sequence[NewVector], model: GalleryModel) -> list[int]:
        """Insert rows (inside the caller's transaction); returns their keys in order."""
        import numpy as np

        now = time.time()
        keys = []
        for item in items:
            cur = self._db.execute(
                "INSERT INTO vectors(identity, source, content_hash, model, variant, "
                "model_sha256, enrolled_at, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.identity,
                    item.source,
                    item.content_hash,
                    model.name,
                    model.variant,
                    model.sha256,
                    now,
                    np.asarray(item.vector, self.vector_dtype).tobytes(),
                ),
            )
            keys.append(int(cur.lastrowid))
        return keys

    def delete(self, keys: Sequence[int]) -> list[str]:
        """Delete rows (inside the caller's transaction); returns the identities they had."""
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        identities = [
            r[0]
            for r in self._db.execute(
                f"SELECT DISTINCT identity FROM vectors WHERE key IN ({marks})", list(keys)
            )
        ]
        self._db.execute(f"DELETE FROM vectors WHERE key IN ({marks})", list(keys))
        return identities

    def replace_vectors(self, model: GalleryModel, vectors: dict[int, np.ndarray]) -> None:
        """New vectors for existing keys, from `model` (inside the caller's transaction)."""
        import numpy as np

        self._db.executemany(
            "UPDATE vectors SET vector=?, model=?, variant=?, model_sha256=? WHERE key=?",
            [
                (np.asarray(v, self.vector_dtype).tobytes(), model.name, model.variant,
                 model.sha256, k)
                for k, v in vectors.items()
            ],
        )  # fmt: skip
        self.set_meta(**model.as_meta())

    def entries(self, identity: str | None = None) -> list[Entry]:
        sql = "SELECT key, identity, source, content_hash, enrolled_at FROM vectors"
        rows = (
            self._db.execute(sql + " WHERE identity=? ORDER BY key", (identity,))
            if identity is not None
            else self._db.execute(sql + " ORDER BY key")
        )
        return [Entry(*r) for r in rows]

    def identities(self) -> list[tuple[str, int, float]]:
        """(identity, image count, last enrolled time), sorted by name."""
        return [
            (r[0], int(r[1]), float(r[2]))
            for r in self._db.execute(
                "SELECT identity, count(*), max(enrolled_at) FROM vectors "
                "GROUP BY identity ORDER BY identity"
            )
        ]

    def identity_sizes(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT identity, count(*) FROM vectors GROUP BY identity"))

    def identity_content(self) -> set[tuple[str, str]]:
        """(identity, content hash) of every vector: what an import must not add twice."""
        return {
            (r[0], r[1]) for r in self._db.execute("SELECT identity, content_hash FROM vectors")
        }

    def lookup(self, keys: Iterable[int]) -> dict[int, tuple[str, str]]:
        """key -> (identity, source) for the keys that exist."""
        keys = list({int(k) for k in keys})
        out: dict[int, tuple[str, str]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, identity, source in self._db.execute(
                f"SELECT key, identity, source FROM vectors WHERE key IN ({marks})", chunk
            ):
                out[key] = (identity, source)
        return out

    def iter_vectors(
        self, identities: Iterable[str] | None = None, chunk: int = 8192
    ) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """(keys, identities, model-space vectors as float32) in chunks, in key order; all rows,
        or those of the given identities."""
        import numpy as np

        sql, params = "SELECT key, identity, vector FROM vectors", []
        if identities is not None:
            params = sorted(set(identities))
            if not params:
                return
            sql += f" WHERE identity IN ({','.join('?' * len(params))})"
        cursor = self._db.execute(sql + " ORDER BY key", params)
        while rows := cursor.fetchmany(chunk):
            keys = np.array([r[0] for r in rows], dtype=np.uint64)
            vectors = np.frombuffer(b"".join(r[2] for r in rows), self.vector_dtype)
            yield keys, [r[1] for r in rows], vectors.reshape(len(rows), -1).astype(np.float32)

    # ---- derived state stored with the vectors ----------------------------------------------

    def load_projection(self) -> StoredProjection | None:
        import numpy as np

        row = self._db.execute(
            "SELECT mean, components, scale FROM projection WHERE id=1"
        ).fetchone()
        if row is None:
            return None
        mean = np.frombuffer(row[0], "<f4")
        scale = np.frombuffer(row[2], "<f4")
        components = np.frombuffer(row[1], "<f4").reshape(len(scale), len(mean))
        return StoredProjection(mean, components, scale)

    def save_projection(self, projection: StoredProjection | None, fitted_count: int) -> None:
        """Replace the stored projection (inside the caller's transaction)."""
        self._db.execute("DELETE FROM projection")
        if projection is not None:
            self._db.execute(
                "INSERT INTO projection VALUES (1, ?, ?, ?, ?)",
                (
                    fitted_count,
                    projection.mean.astype("<f4").tobytes(),
                    projection.components.astype("<f4").tobytes(),
                    projection.scale.astype("<f4").tobytes(),
                ),
            )
        self.set_meta(whiten_fitted_count=fitted_count if projection is not None else 0)

    def load_centroids(self) -> tuple[list[str], np.ndarray | None]:
        """Identity names (sorted) and their centroid rows; None for the rows when empty."""
        import numpy as np

        rows = self._db.execute(
            "SELECT identity, count, vector FROM centroids ORDER BY identity"
        ).fetchall()
        if not rows:
            return [], None
        return [r[0] for r in rows], np.stack([np.frombuffer(r[2], "<f4") for r in rows])

    def save_centroids(
        self, names: Sequence[str], vectors: np.ndarray, drop: Iterable[str], replace_all: bool
    ) -> None:
        """Write centroids of `names`, delete those of `drop` (inside the caller's transaction)."""
        if replace_all:
            self._db.execute("DELETE FROM centroids")
        self._db.executemany("DELETE FROM centroids WHERE identity=?", [(n,) for n in drop])
        counts = self.identity_sizes()
        self._db.executemany(
            "INSERT OR REPLACE INTO centroids VALUES (?, ?, ?)",
            [
                (n, counts[n], v.astype("<f4").tobytes())
                for n, v in zip(names, vectors, strict=True)
            ],
        )

    def export(self, target: Path) -> None:
        """The whole database as one portable SQLite file (vectors, metadata; no pickle)."""

        def write(tmp: Path) -> None:
            tmp.unlink(missing_ok=True)
            self._db.execute("VACUUM INTO ?", (str(tmp),))

        atomic_write_with(Path(target), write)

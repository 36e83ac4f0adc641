"""The gallery: a directory with a SQLite database (the truth) and a USearch index (derived).

Layout of a gallery directory::

    gallery.db      SQLite (WAL): metadata, every vector as enrolled (model space), identity
                    centroids and the PCA-whitening projection (search space)
    index.usearch   HNSW index of the search-space vectors, keyed by the vectors' row key
    writer.lock     flock()ed by the one process allowed to change the gallery

Consistency: every change is one SQLite transaction that also bumps `version`. The index
file is then rewritten atomically (temp file, fsync, rename) and `index_version` is set to
`version` in a second transaction. On open, an index whose `index_version` or size disagrees
with the database is rebuilt from the database (a writer saves the repair; a reader repairs
in memory and says so), so a crash at any point is never served as a wrong answer.

Concurrency: one writer at a time (an exclusive, non-blocking flock on `writer.lock`; a second
writer gets a clear error naming the holder's pid); any number of readers, which open the
database read-only and memory-map the index (USearch `view`). A reader that opens while a
writer is between its two transactions waits briefly for the writer to finish.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from usearch.index import Index

from agent.atomic import atomic_write_with
from agent.embeddings import PCAProjection
from agent.errors import AgentError
from agent.extract import model_fingerprint
from agent.registry import ResolvedModel

log = logging.getLogger(__name__)

FORMAT = 1
Score = float | np.ndarray
DB_FILE = "gallery.db"
INDEX_FILE = "index.usearch"
LOCK_FILE = "writer.lock"
WHITEN_MIN_RATIO = 4  # images per whitened dimension before whitening is applied
REFIT_GROWTH = 0.25  # refit the projection when the gallery size moved by this fraction
READER_WAIT_S = 10.0
EXACT_BELOW = 4096  # galleries this small are searched exhaustively: exact, and about as fast

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
    def of(cls, model: ResolvedModel) -> GalleryModel:
        return cls(
            model.manifest.name,
            model.variant_name,
            model_fingerprint(model),
            model.sha256,
            model.manifest.embedding_dim,
        )


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
        settings = cls(
            dtype=gallery_cfg.dtype,
            connectivity=gallery_cfg.connectivity,
            expansion_add=gallery_cfg.expansion_add,
            expansion_search=gallery_cfg.expansion_search,
            flip=gallery_cfg.flip,
            whiten_dim=gallery_cfg.whiten_dim,
            identity_weight=gallery_cfg.identity_weight,
        )
        return settings.as_plain() if plain else settings

    def as_plain(self) -> GallerySettings:
        """No quality features: raw cosine between single-view embeddings."""
        return GallerySettings(
            self.dtype, self.connectivity, self.expansion_add, self.expansion_search,
            flip=False, whiten_dim=0, identity_weight=0.0,
        )  # fmt: skip


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


@dataclass
class Hit:
    key: int
    identity: str
    source: str
    score: float  # after identity blending; equals image_score when identity_weight is 0
    image_score: float


@dataclass
class IdentityMatch:
    identity: str
    score: float
    best_image_score: float
    centroid_score: float


@dataclass
class SearchResult:
    hits: list[Hit] = field(default_factory=list)
    identities: list[IdentityMatch] = field(default_factory=list)


def blend(image_scores: Score, centroid_scores: Score, weight: float) -> Score:
    """Identity aggregation: an image's score pulled towards its identity centroid's score."""
    if weight == 0.0:
        return image_scores
    return (1.0 - weight) * image_scores + weight * centroid_scores


def _model_from_meta(meta: dict[str, str]) -> GalleryModel:
    return GalleryModel(
        meta["model_name"],
        meta["model_variant"],
        meta["model_fingerprint"],
        meta["model_sha256"],
        int(meta["dim"]),
    )


def _settings_from_meta(meta: dict[str, str]) -> GallerySettings:
    return GallerySettings(
        dtype=meta["dtype"],
        connectivity=int(meta["connectivity"]),
        expansion_add=int(meta["expansion_add"]),
        expansion_search=int(meta["expansion_search"]),
        flip=meta["flip"] == "1",
        whiten_dim=int(meta["whiten_dim"]),
        identity_weight=float(meta["identity_weight"]),
    )


def _sum_by_identity(vectors: np.ndarray, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted identity names and the (unnormalised) sum of each one's vectors."""
    names = sorted(set(ids))
    row = {n: i for i, n in enumerate(names)}
    sums = np.zeros((len(names), vectors.shape[1]), np.float64)
    np.add.at(sums, np.array([row[n] for n in ids]), vectors)
    return names, sums


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


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
    if len(name) > 200:
        return "identity name is longer than 200 characters"
    return None


class Gallery:
    """Open with `Gallery.open(path)` (readers) or `Gallery.open(path, writable=True)`."""

    def __init__(self, path: Path, db: sqlite3.Connection, lock_fd: int | None):
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self.meta = self._read_meta()
        self.model = _model_from_meta(self.meta)
        self.settings = _settings_from_meta(self.meta)
        self._vector_dtype = np.dtype("<f4") if self.settings.dtype == "f32" else np.dtype("<f2")
        self._dirty_identities: set[str] = set()
        self._full_rebuild = False
        self.repaired: str | None = None
        self.memory_mapped = False  # True when the index file is viewed (mmap), not loaded
        self.projection = self._load_projection()
        self._load_centroids()
        self.index = self._open_index()

    # ---- opening ------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / DB_FILE).is_file()

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> Gallery:
        path = Path(path)
        if not cls.exists(path):
            raise GalleryError(
                f"no gallery at {path}; create one with `agent enroll DIR --gallery {path}`"
            )
        lock_fd = cls._lock(path) if writable else None
        try:
            db = cls._connect(path, writable)
            return cls(path, db, lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @classmethod
    def create(cls, path: Path, model: GalleryModel, settings: GallerySettings) -> Gallery:
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
                "model_name": model.name,
                "model_variant": model.variant,
                "model_fingerprint": model.fingerprint,
                "model_sha256": model.sha256,
                "dim": model.dim,
                "dtype": settings.dtype,
                "connectivity": settings.connectivity,
                "expansion_add": settings.expansion_add,
                "expansion_search": settings.expansion_search,
                "flip": int(settings.flip),
                "whiten_dim": settings.whiten_dim,
                "identity_weight": settings.identity_weight,
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

    @classmethod
    def open_or_create(cls, path: Path, model: GalleryModel, settings: GallerySettings) -> Gallery:
        if cls.exists(path):
            gallery = cls.open(path, writable=True)
            gallery.check_model(model)
            return gallery
        return cls.create(path, model, settings)

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

    @staticmethod
    def _writer_active(path: Path) -> bool:
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDONLY)
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

    def _read_meta(self) -> dict[str, str]:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if int(meta.get("format", -1)) != FORMAT:
            raise GalleryError(
                f"{self.path}: gallery format {meta.get('format', '?')} is not supported "
                f"(this agent reads format {FORMAT})"
            )
        return meta

    def close(self) -> None:
        if self.writable and (self._dirty_identities or self._full_rebuild):
            self.flush()
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.writable:
            # Committed rows stay (the next open repairs the index); skip the expensive flush.
            self._dirty_identities.clear()
            self._full_rebuild = False
        self.close()

    # ---- properties -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self._meta_value("version"))

    @property
    def index_version(self) -> int:
        """The version the saved index file belongs to (lags `version` while a writer works)."""
        return int(self._meta_value("index_version"))

    def _meta_value(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0]

    @property
    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    @property
    def search_dim(self) -> int:
        return self.projection.out_dim if self.projection else self.model.dim

    def check_model(self, model: GalleryModel) -> None:
        if model.fingerprint == self.model.fingerprint:
            return
        what = (
            f"{model.label} ({model.dim}-d)"
            if model.label != self.model.label or model.dim != self.model.dim
            else f"{model.label} with different weights or preprocessing"
        )
        raise GalleryError(
            f"gallery {self.path} was built with {self.model.label} ({self.model.dim}-d), "
            f"not {what}; re-enroll into a new --gallery, or run "
            f"`agent gallery reindex --model {model.name} --variant {model.variant}`"
        )

    # ---- derived state: projection, centroids, index ---------------------------------------

    def _load_projection(self) -> PCAProjection | None:
        row = self._db.execute(
            "SELECT mean, components, scale FROM projection WHERE id=1"
        ).fetchone()
        if row is None:
            return None
        mean = np.frombuffer(row[0], "<f4")
        scale = np.frombuffer(row[2], "<f4")
        components = np.frombuffer(row[1], "<f4").reshape(len(scale), len(mean))
        return PCAProjection(mean, components, scale)

    def to_search_space(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.shape[1] != self.model.dim:
            raise GalleryError(
                f"query has {vectors.shape[1]} dimensions, gallery {self.path} has "
                f"{self.model.dim} ({self.model.label})"
            )
        return self.projection.transform(vectors) if self.projection else vectors

    def _load_centroids(self) -> None:
        rows = self._db.execute(
            "SELECT identity, count, vector FROM centroids ORDER BY identity"
        ).fetchall()
        self.centroid_ids = [r[0] for r in rows]
        self._centroid_row = {name: i for i, name in enumerate(self.centroid_ids)}
        dim = self.search_dim
        self.centroids = (
            np.stack([np.frombuffer(r[2], "<f4") for r in rows])
            if rows
            else np.zeros((0, dim), np.float32)
        )

    def _new_index(self, ndim: int) -> Index:
        s = self.settings
        return Index(
            ndim=ndim,
            metric="cos",
            dtype=s.dtype,
            connectivity=s.connectivity,
            expansion_add=s.expansion_add,
            expansion_search=s.expansion_search,
        )

    def _index_consistent(self) -> str | None:
        """Why the stored index cannot be served, or None when it matches the database."""
        if self._meta_value("index_version") != self._meta_value("version"):
            return "index is older than the metadata (interrupted write)"
        if self.count and not (self.path / INDEX_FILE).exists():
            return "index file is missing"
        if len(self.centroid_ids) != self._identity_count():
            return "identity centroids disagree with the metadata"
        return None

    def _identity_count(self) -> int:
        return int(self._db.execute("SELECT count(DISTINCT identity) FROM vectors").fetchone()[0])

    def _open_index(self) -> Index:
        problem = self._index_consistent()
        if problem and not self.writable and self._writer_active(self.path):
            deadline = time.monotonic() + READER_WAIT_S
            while problem and time.monotonic() < deadline:
                time.sleep(0.05)
                problem = self._index_consistent()
            if not problem:
                self.projection = self._load_projection()
                self._load_centroids()
        index = None
        if not problem and self.count:
            try:
                index = Index.restore(str(self.path / INDEX_FILE), view=not self.writable)
            except Exception as exc:  # corrupt or truncated file
                problem = f"index file cannot be read ({exc})"
            else:
                if index is None or len(index) != self.count or index.ndim != self.search_dim:
                    problem = "index size or dimension disagrees with the metadata"
                self.memory_mapped = not self.writable and problem is None
        if problem is None:
            return index if index is not None else self._new_index(self.search_dim)
        self.repaired = problem
        if self.writable:
            log.warning(
                "gallery %s: %s; rebuilding the index from the database", self.path, problem
            )
            self._full_rebuild = True
            self.flush()
            return self.index
        log.warning(
            "gallery %s: %s; serving an index rebuilt in memory (`agent gallery repair` "
            "saves the repair)",
            self.path,
            problem,
        )
        projection, _ = self._plan_projection()
        self.projection = projection
        self.centroid_ids, self.centroids = self._compute_centroids(None)
        self._centroid_row = {name: i for i, name in enumerate(self.centroid_ids)}
        return self._build_index()

    def _iter_vectors(
        self, where: str = "", params: Sequence = (), chunk: int = 8192
    ) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """(keys, identities, raw vectors) in chunks, in key order."""
        cursor = self._db.execute(
            f"SELECT key, identity, vector FROM vectors {where} ORDER BY key", params
        )
        while rows := cursor.fetchmany(chunk):
            keys = np.array([r[0] for r in rows], dtype=np.uint64)
            vectors = np.frombuffer(b"".join(r[2] for r in rows), self._vector_dtype)
            yield keys, [r[1] for r in rows], vectors.reshape(len(rows), -1).astype(np.float32)

    def raw_vectors(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """All (keys, identities, model-space vectors) in key order."""
        keys, ids, vecs = [], [], []
        for k, i, v in self._iter_vectors():
            keys.append(k)
            ids += i
            vecs.append(v)
        if not keys:
            return np.zeros(0, np.uint64), [], np.zeros((0, self.model.dim), np.float32)
        return np.concatenate(keys), ids, np.concatenate(vecs)

    def _plan_projection(self) -> tuple[PCAProjection | None, bool]:
        """The projection the gallery should use now, and whether it differs from the current."""
        want = self.settings.whiten_dim
        count = self.count
        current = self.projection
        if not want or count < WHITEN_MIN_RATIO * want or want >= self.model.dim:
            return None, current is not None
        fitted = int(self._meta_value("whiten_fitted_count") or 0) if current else 0
        if current is not None and abs(count - fitted) <= REFIT_GROWTH * max(fitted, 1):
            return current, False
        _, _, raw = self.raw_vectors()
        sample = raw
        if len(raw) > 50_000:
            rng = np.random.default_rng(0)
            sample = raw[rng.choice(len(raw), 50_000, replace=False)]
        return PCAProjection.fit(sample, want, whiten=True), True

    def _compute_centroids(self, identities: Iterable[str] | None) -> tuple[list[str], np.ndarray]:
        """Normalised mean search-space vector per identity (all identities when None)."""
        if identities is None:
            chunks = self._iter_vectors()
        else:
            wanted = sorted(set(identities))
            marks = ",".join("?" * len(wanted))
            chunks = self._iter_vectors(f"WHERE identity IN ({marks})", wanted) if wanted else []
        sums: dict[str, np.ndarray] = {}
        for _, ids, raw in chunks:
            space = self.projection.transform(raw) if self.projection else raw
            names, part = _sum_by_identity(space, ids)
            for name, total in zip(names, part, strict=True):
                sums[name] = sums[name] + total if name in sums else total
        names = sorted(sums)
        if not names:
            return names, np.zeros((0, self.search_dim), np.float32)
        return names, _normalise(np.stack([sums[n] for n in names])).astype(np.float32)

    def _build_index(self) -> Index:
        index = self._new_index(self.search_dim)
        for keys, _, raw in self._iter_vectors():
            space = self.projection.transform(raw) if self.projection else raw
            index.add(keys, space)
        return index

    def flush(self) -> None:
        """Bring projection, centroids and the index file up to date with the database."""
        if not self.writable:
            raise GalleryError("gallery opened read-only")
        projection, changed = self._plan_projection()
        if changed:
            self.projection = projection
            self._full_rebuild = True
        if self._full_rebuild:
            self.index = self._build_index()
            names, mat = self._compute_centroids(None)
            stale: Iterable[str] = []
        else:
            names, mat = self._compute_centroids(self._dirty_identities)
            stale = self._dirty_identities - set(names)
        version = self._meta_value("version")
        if self.count:
            atomic_write_with(self.path / INDEX_FILE, lambda tmp: self.index.save(str(tmp)))
        else:
            (self.path / INDEX_FILE).unlink(missing_ok=True)
        with self._db:
            if self._full_rebuild:
                self._db.execute("DELETE FROM centroids")
                self._db.execute("DELETE FROM projection")
                if self.projection is not None:
                    p = self.projection
                    self._db.execute(
                        "INSERT INTO projection VALUES (1, ?, ?, ?, ?)",
                        (
                            self.count,
                            p.mean.astype("<f4").tobytes(),
                            p.components.astype("<f4").tobytes(),
                            p.scale.astype("<f4").tobytes(),
                        ),
                    )
                self._set_meta(whiten_fitted_count=self.count if self.projection else 0)
            self._db.executemany("DELETE FROM centroids WHERE identity=?", [(n,) for n in stale])
            counts = dict(
                self._db.execute("SELECT identity, count(*) FROM vectors GROUP BY identity")
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO centroids VALUES (?, ?, ?)",
                [
                    (n, counts[n], v.astype("<f4").tobytes())
                    for n, v in zip(names, mat, strict=True)
                ],
            )
            self._set_meta(index_version=version)
        self._dirty_identities.clear()
        self._full_rebuild = False
        self._load_centroids()

    def _set_meta(self, **values) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(k, str(v)) for k, v in values.items()],
        )

    # ---- changes --------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if not self.writable:
            raise GalleryError("gallery opened read-only")

    def _bump(self) -> None:
        self._set_meta(version=int(self._meta_value("version")) + 1, updated_at=time.time())

    def apply(
        self,
        add: Sequence[NewVector] = (),
        remove: Sequence[int] = (),
        model: GalleryModel | None = None,
    ) -> list[int]:
        """Add and remove vectors in one transaction; returns the new keys.

        The index in memory follows at once; the index file at the next `flush()`.
        """
        self._require_writable()
        model = model or self.model
        self.check_model(model)
        for item in add:
            problem = check_identity(item.identity)
            if problem:
                raise GalleryError(problem)
            if item.vector.shape != (self.model.dim,):
                raise GalleryError(
                    f"vector of {item.source} has shape {item.vector.shape}, "
                    f"gallery expects ({self.model.dim},)"
                )
        if not add and not remove:
            return []
        removed_ids = []
        now = time.time()
        with self._db:
            if remove:
                marks = ",".join("?" * len(remove))
                removed_ids = [
                    r[0]
                    for r in self._db.execute(
                        f"SELECT DISTINCT identity FROM vectors WHERE key IN ({marks})",
                        list(remove),
                    )
                ]
                self._db.execute(f"DELETE FROM vectors WHERE key IN ({marks})", list(remove))
            keys = []
            for item in add:
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
                        np.asarray(item.vector, self._vector_dtype).tobytes(),
                    ),
                )
                keys.append(int(cur.lastrowid))
            self._bump()
        if remove:
            self.index.remove(np.array(remove, dtype=np.uint64))
        if add:
            raw = np.stack([np.asarray(i.vector, self._vector_dtype) for i in add])
            space = self.to_search_space(raw.astype(np.float32))
            self.index.add(np.array(keys, dtype=np.uint64), space)
        self._dirty_identities |= {i.identity for i in add} | set(removed_ids)
        return keys

    def remove_identity(self, identity: str) -> int:
        keys = [e.key for e in self.entries(identity=identity)]
        if not keys:
            raise GalleryError(f"identity {identity!r} is not in gallery {self.path}")
        self.apply(remove=keys)
        return len(keys)

    def replace_model(
        self, model: GalleryModel, vectors: dict[int, np.ndarray], drop: Sequence[int] = ()
    ) -> None:
        """Re-embedding (reindex): new vectors for every key and the new model, atomically."""
        self._require_writable()
        with self._db:
            if drop:
                self._db.executemany("DELETE FROM vectors WHERE key=?", [(k,) for k in drop])
            self._db.executemany(
                "UPDATE vectors SET vector=?, model=?, variant=?, model_sha256=? WHERE key=?",
                [
                    (np.asarray(v, self._vector_dtype).tobytes(), model.name, model.variant,
                     model.sha256, k)
                    for k, v in vectors.items()
                ],
            )  # fmt: skip
            self._set_meta(
                model_name=model.name,
                model_variant=model.variant,
                model_fingerprint=model.fingerprint,
                model_sha256=model.sha256,
                dim=model.dim,
            )
            self._db.execute("DELETE FROM projection")
            self._bump()
        self.model = model
        self.projection = None
        self._full_rebuild = True
        self.flush()

    # ---- reading --------------------------------------------------------------------------

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

    def _lookup(self, keys: Iterable[int]) -> dict[int, tuple[str, str]]:
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

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        threshold: float | None = None,
        candidates: int = 100,
        identity_weight: float | None = None,
    ) -> list[SearchResult]:
        """Per query: the top-k images and top-k identities, scores in [-1, 1], best first."""
        space = self.to_search_space(queries)
        size = len(self.index)  # not count(*): that scans the table on every query
        if size == 0:
            return [SearchResult() for _ in range(len(space))]
        weight = self.settings.identity_weight if identity_weight is None else identity_weight
        count = min(max(candidates, k), size)
        matches = self.index.search(space, count, exact=size <= EXACT_BELOW)
        all_keys = np.atleast_2d(matches.keys)
        all_dist = np.atleast_2d(matches.distances)
        info = self._lookup(all_keys[all_keys != np.iinfo(np.uint64).max].ravel())
        centroid_scores = space @ self.centroids.T if len(self.centroids) else None
        results = []
        for row in range(len(space)):
            valid = [
                (int(key), 1.0 - float(d))
                for key, d in zip(all_keys[row], all_dist[row], strict=True)
                if int(key) in info
            ]
            cents = centroid_scores[row] if centroid_scores is not None else None
            centroid = partial(self._centroid_score, cents)
            hits = []
            best: dict[str, float] = {}
            for key, score in valid:
                identity, source = info[key]
                final = float(blend(score, centroid(identity, score), weight))
                hits.append(Hit(key, identity, source, final, score))
                best[identity] = max(best.get(identity, -2.0), score)
            if weight > 0 and cents is not None:
                for i in np.argsort(-cents)[:k]:
                    best.setdefault(self.centroid_ids[i], float(cents[i]))
            idents = [
                IdentityMatch(
                    name, float(blend(b, centroid(name, b), weight)), b, centroid(name, b)
                )
                for name, b in best.items()
            ]
            hits.sort(key=lambda h: -h.score)
            idents.sort(key=lambda m: -m.score)
            if threshold is not None:
                hits = [h for h in hits if h.score >= threshold]
                idents = [m for m in idents if m.score >= threshold]
            results.append(SearchResult(hits[:k], idents[:k]))
        return results

    def _centroid_score(self, cents: np.ndarray | None, identity: str, fallback: float) -> float:
        """An identity's centroid score for one query; `fallback` when it has no centroid."""
        i = self._centroid_row.get(identity) if cents is not None else None
        return fallback if i is None else float(cents[i])

    def score_matrix(
        self, queries: np.ndarray, plain: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """Exact scores of every query against every gallery image (for evaluation).

        plain: raw cosine in model space, ignoring whitening and identity aggregation.
        """
        _, ids, raw = self.raw_vectors()
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if plain or self.projection is None:
            gal, q = _normalise(raw), _normalise(queries)
        else:
            gal, q = self.projection.transform(raw), self.projection.transform(queries)
        scores = q @ gal.T
        weight = 0.0 if plain else self.settings.identity_weight
        if weight > 0 and ids:
            names, sums = _sum_by_identity(gal, ids)
            column = {n: i for i, n in enumerate(names)}
            owner = np.array([column[n] for n in ids])
            cent = q @ _normalise(sums).astype(np.float32).T
            scores = blend(scores, cent[:, owner], weight)
        return scores, ids

    def stats(self) -> dict:
        index_file = self.path / INDEX_FILE
        return {
            "path": str(self.path),
            "model": self.model.label,
            "model_fingerprint": self.model.fingerprint,
            "dim": self.model.dim,
            "search_dim": self.search_dim,
            "whitened": self.projection is not None,
            "settings": asdict(self.settings),
            "vectors": self.count,
            "identities": self._identity_count(),
            "version": self.version,
            "index_bytes": index_file.stat().st_size if index_file.exists() else 0,
            "db_bytes": (self.path / DB_FILE).stat().st_size,
            "repaired": self.repaired,
            "created_at": float(self.meta["created_at"]),
            "updated_at": float(self._meta_value("updated_at")),
        }

    def export(self, target: Path) -> None:
        """The whole gallery as one portable SQLite file (vectors, metadata; no pickle)."""

        def write(tmp: Path) -> None:
            tmp.unlink(missing_ok=True)
            self._db.execute("VACUUM INTO ?", (str(tmp),))

        atomic_write_with(Path(target), write)


def read_export_meta(path: Path) -> dict[str, str]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise GalleryError(f"{path} is not a gallery export: {exc}") from None
    if int(meta.get("format", -1)) != FORMAT:
        raise GalleryError(f"{path} is not a gallery export of format {FORMAT}")
    return meta


def import_gallery(source: Path, target: Path) -> tuple[Gallery, int, int]:
    """Add an exported gallery's vectors to `target` (created when absent).

    Returns (gallery, added, skipped): vectors already present (same identity and content) are
    skipped. Refused when the models differ.
    """
    meta = read_export_meta(source)
    model = _model_from_meta(meta)
    gallery = Gallery.open_or_create(target, model, _settings_from_meta(meta))
    try:
        present = {
            (r[0], r[1]) for r in gallery._db.execute("SELECT identity, content_hash FROM vectors")
        }
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dtype = np.dtype("<f4") if meta["dtype"] == "f32" else np.dtype("<f2")
        new, skipped = [], 0
        try:
            for identity, src_path, chash, blob in src.execute(
                "SELECT identity, source, content_hash, vector FROM vectors ORDER BY key"
            ):
                if (identity, chash) in present:
                    skipped += 1
                    continue
                present.add((identity, chash))
                vec = np.frombuffer(blob, dtype).astype(np.float32)
                new.append(NewVector(identity, src_path, chash, vec))
        finally:
            src.close()
        gallery.apply(add=new, model=model)
        gallery.flush()
    except BaseException:
        gallery.close()
        raise
    return gallery, len(new), skipped

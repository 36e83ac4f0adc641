"""`Gallery`: one gallery directory as a store (the truth) plus its search space (derived).

Consistency: every change is one SQLite transaction that also bumps `version`. The index file
is then rewritten atomically (temp file, fsync, rename) and `index_version` is set to `version`
in a second transaction. On open, an index whose `index_version` or size disagrees with the
database is rebuilt from the database (a writer saves the repair; a reader repairs in memory
and says so), so a crash at any point is never served as a wrong answer. A reader that opens
while a writer is between its two transactions waits briefly for the writer to finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.atomic import atomic_write_with
from agent.gallery.calibration import METHOD, Samples, measure
from agent.gallery.scoring import (
    ScoredImage,
    SearchResult,
    blended_matrix,
    normalise,
    rank_candidates,
)
from agent.gallery.store import (
    DB_FILE,
    INDEX_FILE,
    Entry,
    GalleryError,
    GalleryModel,
    GallerySettings,
    GalleryStore,
    NewVector,
    check_identity,
)

if TYPE_CHECKING:
    from agent.gallery.space import Index, PCAProjection, SearchSpace

log = logging.getLogger(__name__)

READER_WAIT_S = 10.0
VERIFY_ON_OPEN_BYTES = 64 << 20  # readers verify the index checksum at open up to this size
CALIBRATION_MAX_VECTORS = 20_000  # larger galleries are calibrated on a fixed random subset
EXACT_BELOW = 4096  # galleries this small are searched exhaustively: exact, and about as fast
_NO_KEY = np.iinfo(np.uint64).max


class Gallery:
    """Open with `Gallery.open(path)` (readers) or `Gallery.open(path, writable=True)`."""

    def __init__(self, store: GalleryStore):
        self.store = store
        self.path = store.path
        self.meta = store.meta
        self.model = GalleryModel.from_meta(store.meta)
        self.settings = GallerySettings.from_meta(store.meta)
        self._space: SearchSpace | None = None  # loaded on first use (usearch, numpy)
        self._dirty_identities: set[str] = set()
        self._full_rebuild = False
        self._repaired: str | None = None
        self._memory_mapped = False
        self._calibration: Samples | None = None
        self._problem = self._check_index()

    # ---- opening ------------------------------------------------------------------------

    @staticmethod
    def exists(path: Path) -> bool:
        return GalleryStore.exists(path)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> Gallery:
        return cls._over(GalleryStore.open(path, writable))

    @classmethod
    def create(cls, path: Path, model: GalleryModel, settings: GallerySettings) -> Gallery:
        return cls._over(GalleryStore.create(path, model, settings))

    @classmethod
    def _over(cls, store: GalleryStore) -> Gallery:
        """The facade over an open store; the store (and its lock) is released on failure."""
        try:
            return cls(store)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_or_create(cls, path: Path, model: GalleryModel, settings: GallerySettings) -> Gallery:
        if cls.exists(path):
            gallery = cls.open(path, writable=True)
            try:
                gallery.check_model(model)
            except BaseException:
                gallery.close()
                raise
            return gallery
        return cls.create(path, model, settings)

    @property
    def writable(self) -> bool:
        return self.store.writable

    def close(self) -> None:
        if self.writable and (self._dirty_identities or self._full_rebuild):
            self.flush()
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.writable:
            # Committed rows stay (the next open repairs the index); skip the expensive flush.
            self._dirty_identities.clear()
            self._full_rebuild = False
        self.close()

    # ---- what it holds --------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.store.meta_value("version"))

    @property
    def index_version(self) -> int:
        """The version the saved index file belongs to (lags `version` while a writer works)."""
        return int(self.store.meta_value("index_version"))

    @property
    def count(self) -> int:
        return self.store.count

    @property
    def repaired(self) -> str | None:
        """Why the index had to be rebuilt from the database, or None when it was sound."""
        _ = self.space
        return self._repaired

    @property
    def memory_mapped(self) -> bool:
        """True when the index file is viewed (mmap, readers), not loaded into memory."""
        _ = self.space
        return self._memory_mapped

    @property
    def space(self) -> SearchSpace:
        """Projection, centroids and index, loaded (or rebuilt in memory) on first use."""
        if self._space is None:
            self._space = self._load_space()
        return self._space

    @property
    def index(self) -> Index:
        return self.space.index

    @property
    def projection(self) -> PCAProjection | None:
        return self.space.projection

    @property
    def search_dim(self) -> int:
        return self.space.dim

    def entries(self, identity: str | None = None) -> list[Entry]:
        return self.store.entries(identity)

    def identities(self) -> list[tuple[str, int, float]]:
        """(identity, image count, last enrolled time), sorted by name."""
        return self.store.identities()

    def raw_vectors(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """All (keys, identities, model-space vectors) in key order."""
        chunks = list(self.store.iter_vectors())
        if not chunks:
            return np.zeros(0, np.uint64), [], np.zeros((0, self.model.dim), np.float32)
        ids = [i for _, chunk_ids, _ in chunks for i in chunk_ids]
        return np.concatenate([c[0] for c in chunks]), ids, np.concatenate([c[2] for c in chunks])

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

    def to_search_space(self, vectors: np.ndarray) -> np.ndarray:
        return self.space.transform(vectors, f"gallery {self.path} ({self.model.label})")

    # ---- index consistency ------------------------------------------------------------------

    def _index_problem(self) -> str | None:
        """Why the stored index cannot be served, or None when it matches the database."""
        store = self.store
        if store.meta_value("index_version") != store.meta_value("version"):
            return "index is older than the metadata (interrupted write)"
        if store.count and not (self.path / INDEX_FILE).exists():
            return "index file is missing"
        if store.centroid_count() != store.identity_count():
            return "identity centroids disagree with the metadata"
        return None

    def _check_index(self) -> str | None:
        """Metadata checks at open: a reader waits out a writer between its two transactions;
        a writer repairs at once. The index file itself is read with the space."""
        problem = self._index_problem()
        if not problem and self.writable and self.count and self._calibration_outdated():
            problem = "no decision calibration, or an older one (saved by an older agent)"
        if problem and not self.writable and self.store.writer_active():
            deadline = time.monotonic() + READER_WAIT_S
            while problem and time.monotonic() < deadline:
                time.sleep(0.05)
                problem = self._index_problem()
        if problem and self.writable:
            self._repair(problem)
            return None
        return problem

    def _calibration_outdated(self) -> bool:
        text = self.store.meta_value("calibration")
        return not text or json.loads(text).get("method") != METHOD

    def _repair(self, problem: str) -> None:
        self._repaired = problem
        log.warning("gallery %s: %s; rebuilding the index from the database", self.path, problem)
        from agent.gallery.space import SearchSpace

        self._space = SearchSpace(self.settings, self.model.dim, self.store)
        self._full_rebuild = True
        self.flush()

    def index_checksum_problem(self, force: bool = False) -> str | None:
        """Whether the index file still has the checksum recorded when it was saved (writers
        and small indexes always check; readers of large ones skip it, repair forces it)."""
        path = self.path / INDEX_FILE
        recorded = self.store.meta_value("index_sha256")
        if not recorded or not path.exists():
            return None
        if not (force or self.writable or path.stat().st_size <= VERIFY_ON_OPEN_BYTES):
            return None
        if _sha256(path) != recorded:
            return "index file does not match the checksum recorded when it was saved"
        return None

    def _load_space(self) -> SearchSpace:
        from agent.gallery.space import SearchSpace, restore_index

        space = SearchSpace(self.settings, self.model.dim, self.store)
        problem = self._problem
        if not problem and self.count:
            problem = self.index_checksum_problem()
        if not problem and self.count:
            try:
                index = restore_index(self.path / INDEX_FILE, view=not self.writable)
            except Exception as exc:  # corrupt or truncated file
                problem = f"index file cannot be read ({exc})"
            else:
                if index is None or len(index) != self.count or index.ndim != space.dim:
                    problem = "index size or dimension disagrees with the metadata"
                else:
                    space.index = index
                    self._memory_mapped = not self.writable
        if problem is None:
            return space
        if self.writable:
            self._space = space
            self._repair(problem)
            return self._space
        self._repaired = problem
        log.warning(
            "gallery %s: %s; serving an index rebuilt in memory (`agent gallery repair` "
            "saves the repair)",
            self.path,
            problem,
        )
        projection, _ = space.plan_projection(self.store)
        space.rebuild(self.store, projection)
        return space

    def flush(self) -> None:
        """Bring projection, centroids and the index file up to date with the database."""
        self.store.require_writable()
        store = self.store
        changed = self._dirty_identities or self._full_rebuild
        if not changed and store.meta_value("index_version") == store.meta_value("version"):
            return  # nothing changed since the index was saved
        space = self.space
        projection, changed = space.plan_projection(store)
        if changed:
            self._full_rebuild = True
        if self._full_rebuild:
            space.rebuild(store, projection)
            centroids, stale = space.compute_centroids(store), set()
        else:
            centroids = space.compute_centroids(store, self._dirty_identities)
            stale = self._dirty_identities - set(centroids.names)
        version = store.meta_value("version")
        checksum = ""
        if store.count:
            atomic_write_with(self.path / INDEX_FILE, lambda tmp: space.index.save(str(tmp)))
            checksum = _sha256(self.path / INDEX_FILE)
        else:
            (self.path / INDEX_FILE).unlink(missing_ok=True)
        samples = self._measure()
        with store.transaction():
            if self._full_rebuild:
                stored = space.projection.stored() if space.projection else None
                store.save_projection(stored, store.count)
            store.save_centroids(centroids.names, centroids.vectors, stale, self._full_rebuild)
            store.set_meta(index_version=version, index_sha256=checksum,
                           calibration=json.dumps(samples.to_json()))  # fmt: skip
        self._calibration = samples
        self._dirty_identities.clear()
        self._full_rebuild = False
        space.reload_centroids(store)

    def _measure(self) -> Samples:
        """Calibration samples of the gallery as it is now (see `agent.gallery.calibration`)."""
        share = min(1.0, CALIBRATION_MAX_VECTORS / max(self.count, 1))
        rng = np.random.default_rng(0)
        ids: list[str] = []
        vectors = [np.zeros((0, self.search_dim), np.float32)]
        for _, chunk_ids, raw in self.store.iter_vectors():
            keep = rng.random(len(chunk_ids)) < share
            ids += [i for i, k in zip(chunk_ids, keep, strict=True) if k]
            vectors.append(self.space.project(raw[keep]))
        return measure(np.concatenate(vectors), ids, self.settings.identity_weight)

    @property
    def calibration(self) -> Samples:
        """The samples measured at the last save; measured now for a gallery saved before
        this calibration method (a writer saves them: any change, or `agent gallery repair`)."""
        if self._calibration is None:
            text = self.store.meta_value("calibration")
            stored = json.loads(text) if text else {}
            if stored.get("method") == METHOD:
                self._calibration = Samples.from_json(stored)
            else:
                if not self.writable and self.count:
                    log.warning("gallery %s: its decision calibration was saved by an older "
                                "agent; measured again in memory (`agent gallery repair` "
                                "saves it)", self.path)  # fmt: skip
                self._calibration = self._measure()
        return self._calibration

    # ---- changes --------------------------------------------------------------------------

    def apply(
        self,
        add: Sequence[NewVector] = (),
        remove: Sequence[int] = (),
        model: GalleryModel | None = None,
    ) -> list[int]:
        """Add and remove vectors in one transaction; returns the new keys.

        The index in memory follows at once; the index file at the next `flush()`.
        """
        self.store.require_writable()
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
            if not np.all(np.isfinite(item.vector)) or float(np.linalg.norm(item.vector)) < 1e-6:
                raise GalleryError(f"vector of {item.source} is not finite or has zero norm")
        if not add and not remove:
            return []
        space = self.space  # loaded (and checked against the file) before the rows change
        with self.store.transaction():
            removed_ids = self.store.delete(remove)
            keys = self.store.insert(add, model)
            self.store.bump_version()
        if remove:
            space.remove(list(remove))
        if add:
            dtype = self.settings.vector_dtype
            raw = np.stack([np.asarray(i.vector, dtype) for i in add]).astype(np.float32)
            space.add(keys, raw)
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
        self.store.require_writable()
        with self.store.transaction():
            self.store.delete(drop)
            self.store.replace_vectors(model, vectors)
            self.store.save_projection(None, 0)
            self.store.bump_version()
        self.model = model
        from agent.gallery.space import SearchSpace

        self._space = SearchSpace(self.settings, model.dim, self.store)
        self._full_rebuild = True
        self.flush()

    # ---- scoring --------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        threshold: float | None = None,
        candidates: int = 100,
        identity_weight: float | None = None,
        exact: bool = False,
    ) -> list[SearchResult]:
        """Per query: the top-k images and top-k identities, scores in [-1, 1], best first.

        exact: compare with every vector (small galleries always are).
        """
        return self.search_space(self.to_search_space(queries), k, threshold, candidates,
                                 identity_weight, exact)  # fmt: skip

    def search_space(
        self,
        space: np.ndarray,
        k: int = 5,
        threshold: float | None = None,
        candidates: int = 100,
        identity_weight: float | None = None,
        exact: bool = False,
    ) -> list[SearchResult]:
        """`search` for queries already in search space (`to_search_space`)."""
        size = len(self.index)  # not count(*): that scans the table on every query
        if size == 0:
            return [SearchResult() for _ in range(len(space))]
        weight = self.settings.identity_weight if identity_weight is None else identity_weight
        count = min(max(candidates, k), size)
        found = self.index.search(space, count, exact=exact or size <= EXACT_BELOW)
        all_keys = np.atleast_2d(found.keys)
        all_dist = np.atleast_2d(found.distances)
        info = self.store.lookup(all_keys[all_keys != _NO_KEY].ravel())
        centroid_scores = self.space.centroid_scores(space)
        results = []
        for row in range(len(space)):
            cands = [
                ScoredImage(int(key), *info[int(key)], 1.0 - float(d))
                for key, d in zip(all_keys[row], all_dist[row], strict=True)
                if int(key) in info
            ]
            results.append(
                rank_candidates(
                    cands,
                    centroid_scores[row] if centroid_scores is not None else None,
                    self.space.centroid_row,
                    self.space.centroid_ids,
                    weight,
                    k,
                    threshold,
                )
            )
        return results

    def score_matrix(
        self, queries: np.ndarray, plain: bool = False
    ) -> tuple[np.ndarray, list[str]]:
        """Exact image-level scores of every query against every gallery image, blended with
        the stored centroids as `search` blends its hits (for evaluation).

        plain: raw cosine in model space, ignoring whitening and identity aggregation.
        """
        _, ids, raw = self.raw_vectors()
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if plain:
            return normalise(queries) @ normalise(raw).T, ids
        q = self.to_search_space(queries)
        gallery = self.space.project(raw)
        row = self.space.centroid_row
        owners = np.array([row.get(i, -1) for i in ids], dtype=np.int64)
        scores = blended_matrix(
            q @ gallery.T, owners, self.space.centroid_scores(q), self.settings.identity_weight
        )
        return scores, ids

    # ---- reports --------------------------------------------------------------------------

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
            "identities": self.store.identity_count(),
            "version": self.version,
            "index_bytes": index_file.stat().st_size if index_file.exists() else 0,
            "db_bytes": (self.path / DB_FILE).stat().st_size,
            "repaired": self.repaired,
            "created_at": float(self.meta["created_at"]),
            "updated_at": float(self.store.meta_value("updated_at")),
        }

    def export(self, target: Path) -> None:
        """The whole gallery as one portable SQLite file (vectors, metadata; no pickle)."""
        self.store.export(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()

"""The search space: the whitening projection, identity centroids and the USearch index.

All three are derived from the store's vectors and can be rebuilt from them at any time. The
projection is refitted when the gallery has grown or shrunk enough; centroids are the normalised
mean search-space vector of each identity; the index holds every vector in search space.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# onnxruntime's extension must load before usearch's: the other order segfaults while loading
# onnxruntime (onnxruntime 1.31 with usearch 2.26), and most processes that search also embed.
import onnxruntime  # noqa: F401
from usearch.index import Index

from agent.errors import InputError
from agent.gallery.scoring import normalise, sum_by_identity
from agent.gallery.store import GalleryError, GallerySettings, GalleryStore, StoredProjection

WHITEN_MIN_RATIO = 4  # images per whitened dimension before whitening is applied
REFIT_GROWTH = 0.25  # refit the projection when the gallery size moved by this fraction
FIT_SAMPLE = 50_000  # at most this many vectors are used to fit the projection


def restore_index(path: Path, view: bool) -> Index | None:
    """A saved index: memory-mapped (`view`, for readers) or loaded into memory (writers)."""
    return Index.restore(str(path), view=view)


class PCAProjection:
    """Project L2-normalised embeddings to fewer dimensions (optionally whitened), re-normalise."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray):
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)  # [out_dim, in_dim]
        self.scale = scale.astype(np.float32)  # [out_dim]; 1 unless whitened

    @property
    def in_dim(self) -> int:
        return self.components.shape[1]

    @property
    def out_dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, samples: np.ndarray, dim: int, whiten: bool = False, eps: float = 1e-6):
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise InputError("PCA needs at least 2 sample embeddings")
        if not 0 < dim <= min(x.shape):
            raise InputError(f"PCA dim must be in 1..{min(x.shape)} for {x.shape} samples")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        variance = (s[:dim] ** 2) / (len(x) - 1)
        scale = 1.0 / np.sqrt(variance + eps) if whiten else np.ones(dim)
        return cls(mean, vt[:dim], scale)

    @classmethod
    def from_stored(cls, stored: StoredProjection | None) -> PCAProjection | None:
        return None if stored is None else cls(stored.mean, stored.components, stored.scale)

    def stored(self) -> StoredProjection:
        return StoredProjection(self.mean, self.components, self.scale)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        y = ((np.asarray(embeddings, np.float32) - self.mean) @ self.components.T) * self.scale
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return y / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Centroids:
    """Normalised mean search-space vector per identity, rows in name order."""

    names: list[str]
    vectors: np.ndarray

    @property
    def row(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


class SearchSpace:
    """Projection + centroids + index of one gallery, as loaded or rebuilt."""

    def __init__(self, settings: GallerySettings, model_dim: int, store: GalleryStore):
        self.settings = settings
        self.model_dim = model_dim
        self.projection = PCAProjection.from_stored(store.load_projection())
        self.set_centroids(self._stored_centroids(store))
        self.index: Index = self.new_index()

    # ---- vectors into the space -----------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.projection.out_dim if self.projection else self.model_dim

    def transform(self, vectors: np.ndarray, where: object = "gallery") -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.shape[1] != self.model_dim:
            raise GalleryError(
                f"query has {vectors.shape[1]} dimensions, {where} has {self.model_dim}"
            )
        return self.project(vectors)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Model-space vectors into the search space: projected, or just unit length."""
        return self.projection.transform(vectors) if self.projection else normalise(vectors)

    def centroid_scores(self, space: np.ndarray) -> np.ndarray | None:
        """[queries, identities] cosine to each centroid; None when there are none."""
        return space @ self.centroids.T if len(self.centroids) else None

    # ---- centroids ----------------------------------------------------------------------

    def _stored_centroids(self, store: GalleryStore) -> Centroids:
        names, vectors = store.load_centroids()
        if vectors is None:
            vectors = np.zeros((0, self.dim), np.float32)
        return Centroids(names, vectors)

    def reload_centroids(self, store: GalleryStore) -> None:
        self.set_centroids(self._stored_centroids(store))

    def set_centroids(self, centroids: Centroids) -> None:
        self.centroid_ids = centroids.names
        self.centroid_row = centroids.row
        self.centroids = centroids.vectors

    def compute_centroids(
        self, store: GalleryStore, identities: Iterable[str] | None = None
    ) -> Centroids:
        """Centroids of the given identities (all when None) from the stored vectors."""
        sums: dict[str, np.ndarray] = {}
        for _, ids, raw in store.iter_vectors(identities):
            space = self.project(raw)
            names, part = sum_by_identity(space, ids)
            for name, total in zip(names, part, strict=True):
                sums[name] = sums[name] + total if name in sums else total
        names = sorted(sums)
        if not names:
            return Centroids(names, np.zeros((0, self.dim), np.float32))
        return Centroids(names, normalise(np.stack([sums[n] for n in names])).astype(np.float32))

    # ---- projection ---------------------------------------------------------------------

    def plan_projection(self, store: GalleryStore) -> tuple[PCAProjection | None, bool]:
        """The projection the gallery should use now, and whether it differs from the current."""
        want = self.settings.whiten_dim
        count = store.count
        current = self.projection
        if not want or count < WHITEN_MIN_RATIO * want or want >= self.model_dim:
            return None, current is not None
        fitted = int(store.meta_value("whiten_fitted_count") or 0) if current else 0
        if current is not None and abs(count - fitted) <= REFIT_GROWTH * max(fitted, 1):
            return current, False
        raw = np.concatenate([v for _, _, v in store.iter_vectors()])
        if len(raw) > FIT_SAMPLE:
            raw = raw[np.random.default_rng(0).choice(len(raw), FIT_SAMPLE, replace=False)]
        return PCAProjection.fit(raw, want, whiten=True), True

    # ---- index --------------------------------------------------------------------------

    def new_index(self) -> Index:
        """Inner product: every vector in the space is unit length, so it equals cosine, and it
        costs one dot product per comparison instead of three (BENCHMARKS.md, search)."""
        s = self.settings
        return Index(
            ndim=self.dim,
            metric="ip",
            dtype=s.dtype,
            connectivity=s.connectivity,
            expansion_add=s.expansion_add,
            expansion_search=s.expansion_search,
        )

    def build_index(self, store: GalleryStore) -> Index:
        index = self.new_index()
        for keys, _, raw in store.iter_vectors():
            index.add(keys, self.project(raw))
        return index

    def rebuild(self, store: GalleryStore, projection: PCAProjection | None) -> None:
        """Everything derived, from the stored vectors, under `projection` (in memory only)."""
        self.projection = projection
        self.set_centroids(self.compute_centroids(store))
        self.index = self.build_index(store)

    def add(self, keys: list[int], raw: np.ndarray) -> None:
        self.index.add(np.array(keys, dtype=np.uint64), self.transform(raw))

    def remove(self, keys: list[int]) -> None:
        self.index.remove(np.array(keys, dtype=np.uint64))

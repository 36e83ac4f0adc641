"""Scoring: from raw similarities to ranked images and identities. Pure functions.

`agent search`, `agent eval` and `agent run` all rank through `rank_candidates`, and every
image-level score anywhere is `blend(image, centroid)` against the gallery's stored identity
centroids, so evaluation measures exactly what the running agent serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Score = float | np.ndarray


@dataclass(frozen=True)
class Hit:
    key: int
    identity: str
    source: str
    score: float  # after identity blending; equals image_score when identity_weight is 0
    image_score: float


@dataclass(frozen=True)
class IdentityMatch:
    identity: str
    score: float
    best_image_score: float
    centroid_score: float


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit] = field(default_factory=list)
    identities: list[IdentityMatch] = field(default_factory=list)


@dataclass(frozen=True)
class ScoredImage:
    """One gallery image found for a query, before blending."""

    key: int
    identity: str
    source: str
    image_score: float


def blend(image_scores: Score, centroid_scores: Score, weight: float) -> Score:
    """Identity aggregation: an image's score pulled towards its identity centroid's score."""
    if weight == 0.0:
        return image_scores
    return (1.0 - weight) * image_scores + weight * centroid_scores


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sum_by_identity(vectors: np.ndarray, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Sorted identity names and the (unnormalised) sum of each one's vectors."""
    names = sorted(set(ids))
    row = {n: i for i, n in enumerate(names)}
    sums = np.zeros((len(names), vectors.shape[1]), np.float64)
    np.add.at(sums, np.array([row[n] for n in ids], dtype=np.int64), vectors)
    return names, sums


def rank_candidates(
    candidates: Sequence[ScoredImage],
    centroid_scores: np.ndarray | None,
    centroid_row: Mapping[str, int],
    centroid_ids: Sequence[str],
    weight: float,
    k: int,
    threshold: float | None = None,
) -> SearchResult:
    """One query's top-k images and top-k identities, best first.

    An identity's score is its best candidate image's score blended with its centroid score;
    with aggregation on, the k identities whose centroids score highest compete too, even when
    none of their images is among the candidates.
    """

    def centroid(identity: str, fallback: float) -> float:
        i = centroid_row.get(identity) if centroid_scores is not None else None
        return fallback if i is None else float(centroid_scores[i])

    hits = []
    best: dict[str, float] = {}
    for c in candidates:
        final = float(blend(c.image_score, centroid(c.identity, c.image_score), weight))
        hits.append(Hit(c.key, c.identity, c.source, final, c.image_score))
        best[c.identity] = max(best.get(c.identity, -2.0), c.image_score)
    if weight > 0 and centroid_scores is not None:
        for i in np.argsort(-centroid_scores, kind="stable")[:k]:
            best.setdefault(centroid_ids[i], float(centroid_scores[i]))
    identities = [
        IdentityMatch(name, float(blend(b, centroid(name, b), weight)), b, centroid(name, b))
        for name, b in best.items()
    ]
    hits.sort(key=lambda h: -h.score)
    identities.sort(key=lambda m: -m.score)
    if threshold is not None:
        hits = [h for h in hits if h.score >= threshold]
        identities = [m for m in identities if m.score >= threshold]
    return SearchResult(hits[:k], identities[:k])


def blended_matrix(
    image_scores: np.ndarray,
    owners: np.ndarray,
    centroid_scores: np.ndarray | None,
    weight: float,
) -> np.ndarray:
    """Image-level scores of a [queries, images] matrix, blended as `rank_candidates` blends
    each hit; `owners` holds each image's centroid row (-1: none, the image score stands)."""
    if weight == 0.0 or centroid_scores is None or centroid_scores.shape[1] == 0:
        return image_scores
    centroid = centroid_scores[:, np.maximum(owners, 0)]
    centroid = np.where(owners[None, :] >= 0, centroid, image_scores)
    return blend(image_scores, centroid, weight)


def fuse(image: SearchResult, text: SearchResult, image_weight: float = 0.5) -> list[IdentityMatch]:
    """Late fusion of one query's image and caption results: each modality's identity scores
    standardised over the identities it returned (the two models' score scales differ), then
    weighted; an identity one modality did not return gets that modality's lowest score."""
    parts = []
    for result in (image, text):
        scores = {m.identity: m.score for m in result.identities}
        values = np.array(list(scores.values()), float) if scores else np.zeros(1)
        spread = float(values.std()) or 1.0
        parts.append((scores, float(values.mean()), spread, float(values.min())))
    names = sorted({n for scores, *_ in parts for n in scores})
    fused = []
    for name in names:
        z = [(scores.get(name, low) - mean) / spread for scores, mean, spread, low in parts]
        score = image_weight * z[0] + (1.0 - image_weight) * z[1]
        fused.append(IdentityMatch(name, float(score), float("nan"), float("nan")))
    return sorted(fused, key=lambda m: -m.score)

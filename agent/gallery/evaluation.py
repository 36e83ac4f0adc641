"""Retrieval quality: recall@K, precision@K, mAP, score distributions, a suggested threshold.

Definitions (image-level ranking of the whole gallery per query, as in `../shared/data`):
recall@K is the share of queries with at least one same-identity image in the top K;
precision@K the mean share of same-identity images among the top K; AP the mean of precision
at each same-identity image's rank. identity_recall@K counts a query when its identity is among
the first K distinct identities of the ranking (what an operator sees). Queries whose identity
is not in the gallery are counted and left out of these averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TARGET_PRECISION = 0.95


def _distribution(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"count": 0}
    p5, p50, p95 = np.percentile(x, [5, 50, 95])
    return {
        "count": len(x),
        "mean": round(float(x.mean()), 4),
        "std": round(float(x.std()), 4),
        "p5": round(float(p5), 4),
        "p50": round(float(p50), 4),
        "p95": round(float(p95), 4),
    }


def _first_distinct(ranked: np.ndarray, k: int, truth: str) -> bool:
    """Whether `truth` is among the first k distinct labels of a ranking."""
    seen: set[str] = set()
    for name in ranked:
        if name == truth:
            return True
        seen.add(name)
        if len(seen) >= k:
            return False
    return False


def suggest_threshold(top_scores: np.ndarray, correct: np.ndarray) -> dict[str, float | None]:
    """Thresholds on the top-1 score: the F1-best one, and the lowest reaching the target
    precision (accept = score >= t; precision over accepted, recall over all queries)."""
    order = np.argsort(-top_scores, kind="stable")
    scores, hits = top_scores[order], correct[order].astype(float)
    tp = np.cumsum(hits)
    accepted = np.arange(1, len(scores) + 1)
    precision = tp / accepted
    recall = tp / max(len(scores), 1)
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    reach = np.flatnonzero(precision >= TARGET_PRECISION)
    at_target = int(reach[-1]) if len(reach) else None
    return {
        "f1_threshold": round(float(scores[best]), 4),
        "f1": round(float(f1[best]), 4),
        "f1_precision": round(float(precision[best]), 4),
        "f1_recall": round(float(recall[best]), 4),
        f"precision{TARGET_PRECISION:g}_threshold": (
            round(float(scores[at_target]), 4) if at_target is not None else None
        ),
        f"precision{TARGET_PRECISION:g}_recall": (
            round(float(recall[at_target]), 4) if at_target is not None else None
        ),
    }


def retrieval_metrics(
    scores: np.ndarray,
    gallery_ids: Sequence[str],
    query_ids: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
    """Metrics of a [queries, gallery] score matrix (higher = more similar)."""
    gallery_ids = np.asarray(gallery_ids)
    query_ids = np.asarray(query_ids)
    known = np.isin(query_ids, gallery_ids)
    scores, query_ids = scores[known], query_ids[known]
    order = np.argsort(-scores, axis=1, kind="stable")
    relevant = gallery_ids[order] == query_ids[:, None]
    out: dict = {"queries": int(known.sum()), "unknown_queries": int((~known).sum())}
    if len(query_ids) == 0:
        return out
    for k in ks:
        top = relevant[:, :k]
        out[f"recall@{k}"] = round(float(top.any(axis=1).mean()), 4)
        out[f"precision@{k}"] = round(float(top.mean(axis=1).mean()), 4)
    ranked_ids = gallery_ids[order]
    for k in ks:
        found = [
            _first_distinct(row, k, truth) for truth, row in zip(query_ids, ranked_ids, strict=True)
        ]
        out[f"identity_recall@{k}"] = round(float(np.mean(found)), 4)
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    ap = (hits / ranks * relevant).sum(axis=1) / relevant.sum(axis=1)
    out["mAP"] = round(float(ap.mean()), 4)
    same = gallery_ids[None, :] == query_ids[:, None]
    same_scores, diff_scores = scores[same], scores[~same]
    out["same_identity"] = _distribution(same_scores)
    out["different_identity"] = _distribution(diff_scores)
    if len(same_scores) and len(diff_scores):
        gap = float(same_scores.mean() - diff_scores.mean())
        pooled = np.sqrt((same_scores.var() + diff_scores.var()) / 2)
        out["gap"] = round(gap, 4)
        out["d_prime"] = round(float(gap / pooled), 3) if pooled > 0 else None
    top1 = scores[np.arange(len(scores)), order[:, 0]]
    out["threshold"] = suggest_threshold(top1, relevant[:, 0])
    return out

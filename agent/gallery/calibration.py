"""Decision thresholds from the gallery itself, for a target precision.

Score scales move with the model, whitening and identity aggregation, so no fixed number fits
every gallery. Instead each gallery measures how its own images score:

* genuine: every image of an identity with at least two captures, searched against the gallery
  without its capture (leave-one-capture-out): without the image itself and without the images
  of its identity that are near-duplicates of it, and with its identity's centroid recomputed
  without them. Near-duplicates are images more alike than 99 in 100 images are to their
  nearest image of another identity: frames of one burst, one video or one re-id tracklet.
  Left in, they score a genuine query higher than a new sighting of the object ever will (a new
  camera frame is a new capture), and the thresholds would be too lax. An image whose other
  images are all that alike is only left out itself: its identity is one burst or a tight
  cluster, which the gallery cannot tell apart (the thresholds' note counts such identities);
* impostor: the same image against the other identities only (leave-one-identity-out), which is
  what an object that was never enrolled scores.

Each sample is ranked as `scoring.rank_candidates` ranks a query (best image blended with the
identity centroid) and reduced to what the match policy looks at: the top identity's score, its
margin over the runner-up identity, and (genuine only) whether the top identity is the right one.
The samples are stored with the gallery; `thresholds()` turns them into the policy's numbers for
a target precision and an expected share of never-enrolled objects, so a config change needs no
re-enrollment.

The margin is the decision statistic: on the shared sets it separates right from wrong answers
better than the top score (at precision 0.95 it reaches 0.70 recall vs 0.63 on ETH-80, 0.18 vs
0.08 on GroceryStore; BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.gallery.scoring import blend, normalise

MAX_SAMPLES = 2000  # queries drawn from larger galleries (fixed seed)
METHOD = 2  # of measure(): samples stored by an older method are measured again
DUPLICATE_QUANTILE = 0.99  # of images' nearest-other-identity similarity: above it, one capture
BLOCK = 256  # query rows scored at once
NO_RUNNER_UP = 0.0  # runner-up score when there is none: unrelated (cosine 0)


@dataclass(frozen=True)
class Samples:
    """Per sampled gallery image: genuine (top, margin, right) and impostor (top, margin)
    identity decisions, and views (nearest other image of the same object, nearest image of
    any other object): what "the same object seen again" looks like between two views.
    `all_alike`: identities (of `identities` with two images or more) whose images are all
    near-copies of each other, one burst or a tight cluster: the gallery cannot tell which."""

    genuine: np.ndarray  # [n, 3]
    impostor: np.ndarray  # [m, 2]
    views: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [v, 2]
    all_alike: int = 0
    identities: int = 0

    def to_json(self) -> dict:
        return {
            "method": METHOD,
            "genuine": np.round(self.genuine, 5).tolist(),
            "impostor": np.round(self.impostor, 5).tolist(),
            "views": np.round(self.views, 5).tolist(),
            "all_alike": self.all_alike,
            "identities": self.identities,
        }

    @classmethod
    def from_json(cls, data: dict) -> Samples:
        genuine = np.asarray(data.get("genuine", []), np.float64).reshape(-1, 3)
        impostor = np.asarray(data.get("impostor", []), np.float64).reshape(-1, 2)
        views = np.asarray(data.get("views", []), np.float64).reshape(-1, 2)
        return cls(genuine, impostor, views, int(data.get("all_alike", 0)),
                   int(data.get("identities", 0)))  # fmt: skip


@dataclass(frozen=True)
class Thresholds:
    """What the match policy applies: a match needs score >= unknown_threshold and a margin >=
    min_margin over the runner-up; below unknown_threshold the object is unknown. Two views
    at least `same_object` alike show the same object (unknown ids)."""

    min_margin: float
    unknown_threshold: float
    expected_precision: float | None = None
    expected_recall: float | None = None
    calibrated: bool = True
    note: str = ""
    same_object: float | None = None

    def as_dict(self) -> dict:
        return {
            "min_margin": round(self.min_margin, 4),
            "unknown_threshold": round(self.unknown_threshold, 4),
            "expected_precision": _r(self.expected_precision),
            "expected_recall": _r(self.expected_recall),
            "calibrated": self.calibrated,
            "note": self.note,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def measure(
    vectors: np.ndarray, identities: Sequence[str], identity_weight: float, seed: int = 0
) -> Samples:
    """Leave-one-capture-out and leave-one-identity-out samples of a gallery in search space
    (unit vectors, one row per image)."""
    names, owner = np.unique(np.asarray(identities), return_inverse=True)
    n, k = len(owner), len(names)
    if k < 2:
        return Samples(np.zeros((0, 3)), np.zeros((0, 2)))
    sums = np.zeros((k, vectors.shape[1]), np.float64)
    np.add.at(sums, owner, vectors)
    centroids = normalise(sums).astype(np.float32)
    counts = np.bincount(owner, minlength=k)
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(k))
    rows = np.arange(n)
    if n > MAX_SAMPLES:
        rows = np.sort(np.random.default_rng(seed).choice(n, MAX_SAMPLES, replace=False))
    impostor, views, rivals = [], [], []
    for start in range(0, len(rows), BLOCK):
        idx = rows[start : start + BLOCK]
        q, own, at = vectors[idx], owner[idx], np.arange(len(idx))
        image = q @ vectors.T
        image[at, idx] = -np.inf  # the image itself is left out
        best = np.maximum.reduceat(image[:, order], starts, axis=1)  # [b, k] best image
        same = best[at, own]
        best[at, own] = -np.inf
        views.append(np.stack([same, best.max(axis=1)], axis=1))
        scores = blend(best, q @ centroids.T, identity_weight)
        scores[at, own] = -np.inf  # the other identities only: never enrolled
        top2 = -np.sort(-scores, axis=1)[:, :2]
        other, runner = top2[:, 0], np.where(np.isfinite(top2[:, 1]), top2[:, 1], NO_RUNNER_UP)
        impostor.append(np.stack([other, other - runner], axis=1))
        rivals.append(np.stack([other, runner], axis=1))
    seen = np.concatenate(views)
    duplicate = float(np.quantile(seen[:, 1], DUPLICATE_QUANTILE))  # nearest other identity
    members = np.split(order, starts[1:])
    genuine, all_alike = [], set()
    for row, (other, runner) in zip(rows, np.concatenate(rivals), strict=True):
        o = owner[row]
        kin = members[o][members[o] != row]
        if not len(kin):
            continue  # no other image of its own
        q = vectors[row]
        likeness = vectors[kin] @ q
        copies = likeness > duplicate  # the rest of its capture
        if copies.all():
            all_alike.add(int(o))  # nothing to leave out but the image itself
            copies[:] = False
        rest = sums[o] - q - vectors[kin[copies]].sum(axis=0)  # its identity without its capture
        own_score = blend(float(likeness[~copies].max()), float(normalise(rest) @ q),
                          identity_weight)  # fmt: skip
        right = own_score > other
        top = max(own_score, other)
        second = other if right else max(own_score, runner)
        genuine.append((top, top - second, float(right)))
    return Samples(np.asarray(genuine, np.float64).reshape(-1, 3), np.concatenate(impostor),
                   seen[np.isfinite(seen[:, 0])], len(all_alike),
                   int((counts > 1).sum()))  # fmt: skip


def _unknown_threshold(
    gen: np.ndarray, right: np.ndarray, imp: np.ndarray, w_gen: float, w_imp: float, target: float
) -> float:
    """The highest score below which calling an object unknown is right with the target
    precision (it was never enrolled, or its best match would have been wrong)."""
    scores = np.concatenate([gen[:, 0], imp[:, 0]])
    weight = np.concatenate([np.full(len(gen), w_gen), np.full(len(imp), w_imp)])
    harm = np.concatenate([right * w_gen, np.zeros(len(imp))])  # a right match lost
    order = np.argsort(scores, kind="stable")
    scores, weight, harm = scores[order], np.cumsum(weight[order]), np.cumsum(harm[order])
    precision = 1.0 - harm / weight
    reach = np.flatnonzero(precision >= target)
    if not len(reach):
        return float(scores[0])  # nothing is confidently unknown
    i = reach[-1]
    return float(scores[i + 1]) if i + 1 < len(scores) else float(scores[i]) + 1e-6


def thresholds(samples: Samples, target_precision: float, unknown_share: float) -> Thresholds:
    """The lowest margin whose accepted decisions reach the target precision, when a share
    `unknown_share` of the objects seen were never enrolled; and the score below which calling
    an object unknown is right with the same precision."""
    gen, imp = samples.genuine, samples.impostor
    right = gen[:, 2] > 0.5 if len(gen) else np.zeros(0, bool)
    if len(gen) < 10 or right.sum() < 5 or len(imp) < 10:
        return Thresholds(0.1, 0.5, calibrated=False, note="too few images per identity to "
                          "calibrate: fixed fallback thresholds (enroll >= 2 images of >= 2 "
                          "identities, or set [match] numbers)")  # fmt: skip
    w_gen = (1.0 - unknown_share) / len(gen)
    w_imp = unknown_share / len(imp)
    unknown = _unknown_threshold(gen, right, imp, w_gen, w_imp, target_precision)
    gen_ok = gen[:, 0] >= unknown
    imp_ok = imp[:, 0] >= unknown
    margin = np.concatenate([gen[gen_ok, 1], imp[imp_ok, 1]])
    tp = np.concatenate([right[gen_ok] * w_gen, np.zeros(imp_ok.sum())])
    fp = np.concatenate([~right[gen_ok] * w_gen, np.full(imp_ok.sum(), w_imp)])
    order = np.argsort(-margin, kind="stable")
    margin, tp, fp = margin[order], np.cumsum(tp[order]), np.cumsum(fp[order])
    precision = tp / np.maximum(tp + fp, 1e-12)
    last_of_value = np.r_[margin[1:] != margin[:-1], True]  # accept everything >= that value
    reach = np.flatnonzero(last_of_value & (precision >= target_precision) & (tp > 0))
    if not len(reach):
        top = float(max(gen[:, 1].max(), imp[:, 1].max()))
        return Thresholds(top + 1e-6, unknown, 0.0, 0.0, note="no margin reaches the target "
                          "precision on this gallery: nothing will be matched")  # fmt: skip
    i = reach[-1]
    return Thresholds(float(margin[i]), unknown, float(precision[i]),
                      float(tp[i] / (1.0 - unknown_share)), note=_all_alike_note(samples),
                      same_object=_same_object(samples.views, target_precision))  # fmt: skip


def _all_alike_note(samples: Samples) -> str:
    if not samples.all_alike:
        return ""
    return (f"{samples.all_alike} of {samples.identities} identities have only near-identical "
            "images (one burst each?): a new photo of them scores lower than these expect; "
            "enroll photos taken apart")  # fmt: skip


def _same_object(views: np.ndarray, target: float) -> float | None:
    """The lowest similarity at which the nearest of two candidate views is the same object
    with the target precision (same and other objects equally likely), or None."""
    if len(views) < 10:
        return None
    sims = np.concatenate([views[:, 0], views[:, 1]])
    same = np.concatenate([np.ones(len(views)), np.zeros(len(views))])
    order = np.argsort(-sims, kind="stable")
    sims, hits = sims[order], np.cumsum(same[order])
    precision = hits / np.arange(1, len(sims) + 1)
    reach = np.flatnonzero(precision >= target)
    return float(sims[reach[-1]]) if len(reach) else None

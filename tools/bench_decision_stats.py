"""Which statistic should decide a match: top score, margin, or normalised scores.

    python tools/bench_decision_stats.py [--sets retrieval products/grocery]

For each shared set (../shared/data/<set>), every 5th identity (by name) is left out of a
gallery enrolled with the default settings; the queries are embedded as `agent eval` embeds
them. For each statistic, a threshold is calibrated on the gallery alone (leave-one-image-out
and leave-one-identity-out samples, as `agent.gallery.calibration` does, for precision 0.95 with
20% never-enrolled objects) and applied to the real queries (precision and recall as
`decisions_check.py` counts them); "oracle" is the best recall any threshold on that statistic
reaches at precision 0.95 on the queries themselves.

Statistics: top identity score; margin to the runner-up (what the agent uses); cohort z-score of
the top score and margin / cohort spread (against the other identities' scores of the same
query); per-identity z-norm of the top score and its margin (each identity normalised by the
scores other identities' images give it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from agent.config import load_config
from agent.gallery.enroll import enroll, read_image_file, scan
from agent.gallery.gallery import Gallery
from agent.gallery.models import embedder_for, gallery_model
from agent.gallery.scoring import blend, normalise
from agent.gallery.store import GallerySettings

SHARED = Path(__file__).resolve().parents[2] / "shared"
TARGET, SHARE = 0.95, 0.2


def identity_scores(g, owner, k, weight, queries=None):
    """[queries, identities] blended scores; gallery rows left out of themselves if no queries."""
    sums = np.zeros((k, g.shape[1]))
    np.add.at(sums, owner, g)
    q = g if queries is None else queries
    image = q @ g.T
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(k))
    if queries is None:
        np.fill_diagonal(image, -np.inf)
    best = np.maximum.reduceat(image[:, order], starts, axis=1)
    cent = q @ normalise(sums).T
    if queries is None:
        cent[np.arange(len(g)), owner] = np.einsum("ij,ij->i", g, normalise(sums[owner] - g))
        scores = blend(best, cent, weight)
        alone = np.bincount(owner, minlength=k)[owner] < 2
        scores[alone, owner[alone]] = -np.inf
        return scores
    return blend(best, cent, weight)


def statistics(scores, z_mu, z_sd):
    s = -np.sort(-scores, axis=1)
    rest = np.where(np.isfinite(s[:, 1:]), s[:, 1:], np.nan)
    mu, sd = np.nanmean(rest, axis=1), np.nanstd(rest, axis=1) + 1e-6
    z = (scores - z_mu) / z_sd
    zs = -np.sort(-z, axis=1)
    return {
        "top score": s[:, 0],
        "margin": s[:, 0] - s[:, 1],
        "cohort z-score": (s[:, 0] - mu) / sd,
        "margin / cohort spread": (s[:, 0] - s[:, 1]) / sd,
        "per-identity z-norm": zs[:, 0],
        "per-identity z-norm margin": zs[:, 0] - zs[:, 1],
    }, z.argmax(axis=1)


def calibrate(gen, right, imp):
    m = np.concatenate([gen, imp])
    tp = np.concatenate([right * (1 - SHARE) / len(gen), np.zeros(len(imp))])
    fp = np.concatenate([~right * (1 - SHARE) / len(gen), np.full(len(imp), SHARE / len(imp))])
    o = np.argsort(-m, kind="stable")
    m, tp, fp = m[o], np.cumsum(tp[o]), np.cumsum(fp[o])
    ok = np.flatnonzero(np.r_[m[1:] != m[:-1], True] & (tp / np.maximum(tp + fp, 1e-12) >= TARGET))
    return m[ok[-1]] if len(ok) else np.inf


def oracle(stat, correct, known):
    order = np.argsort(-stat, kind="stable")
    hits = np.cumsum(correct[order])
    good = hits / np.arange(1, len(order) + 1) >= TARGET
    return float(hits[good].max()) / known if good.any() else 0.0


def one_set(name: str, tmp: Path) -> list[tuple]:
    root = SHARED / "data" / name
    cfg = load_config(None)
    files, _ = scan(root / "gallery")
    ids = sorted({f.identity for f in files})
    left = set(ids[4::5])
    queries, _ = scan(root / "queries")
    with embedder_for(cfg, None) as emb:
        settings = GallerySettings.from_config(cfg.gallery)
        with Gallery.create(tmp / name.replace("/", "_"), gallery_model(emb.model), settings) as g:
            enroll(g, emb, [f for f in files if f.identity not in left])
            q = g.to_search_space(emb.embed([read_image_file(f.path) for f in queries]).vectors)
            _, gids, raw = g.raw_vectors()
            vectors, weight = g.space.project(raw), g.settings.identity_weight
    names, owner = np.unique(np.array(gids), return_inverse=True)
    k = len(names)
    loo = identity_scores(vectors, owner, k, weight)
    z_mu = np.array([np.nanmean(np.where(np.isfinite(c := loo[owner != j, j]), c, np.nan))
                     for j in range(k)])  # fmt: skip
    z_sd = np.array([np.nanstd(np.where(np.isfinite(c := loo[owner != j, j]), c, np.nan))
                     for j in range(k)]) + 1e-6  # fmt: skip
    own = loo[np.arange(len(vectors)), owner]
    valid = np.isfinite(own)
    gen, gen_top = statistics(loo[valid], z_mu, z_sd)
    raw_right = loo[valid].argmax(axis=1) == owner[valid]
    imp_scores = loo.copy()
    imp_scores[np.arange(len(vectors)), owner] = -np.inf
    imp, _ = statistics(imp_scores, z_mu, z_sd)
    qs, q_top = statistics(identity_scores(vectors, owner, k, weight, q), z_mu, z_sd)
    truth = np.array([f.identity for f in queries])
    known = ~np.isin(truth, list(left))
    rows = []
    for key in gen:
        normalised = key.startswith("per-identity")
        right = (gen_top == owner[valid]) if normalised else raw_right
        top = q_top if normalised else identity_scores(vectors, owner, k, weight, q).argmax(1)
        correct = names[top] == truth
        accept = qs[key] >= calibrate(gen[key], right, imp[key])
        tp = int((accept & correct & known).sum())
        errors = int((accept & ~(correct & known)).sum())
        rows.append((name, key, oracle(qs[key], correct, known.sum()),
                     tp / max(1, tp + errors), tp / known.sum()))  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["retrieval", "products/grocery"])
    args = ap.parse_args()
    os.environ.setdefault("AGENT_MODELS_DIR", str(SHARED / "models"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_DATA_HOME"] = tmp
        print("| set | statistic | oracle recall | precision | recall |\n|---|---|---|---|---|")
        for name in args.sets:
            for row in one_set(name, Path(tmp)):
                print("| {} | {} | {:.3f} | {:.3f} | {:.3f} |".format(*row))


if __name__ == "__main__":
    main()

"""`agent eval`: retrieval metrics and the match policy's decisions on labelled folders, with
the gallery enrolled and the queries embedded and judged exactly as `agent run` does."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.decide.policy import UNKNOWN, decision_rule, label
from agent.errors import InputError
from agent.gallery.enroll import Problem, enroll, read_image_file, scan
from agent.gallery.evaluation import retrieval_metrics
from agent.gallery.gallery import Gallery
from agent.gallery.models import embedder_for, gallery_model
from agent.gallery.store import GallerySettings

log = logging.getLogger(__name__)
Progress = Callable[[str, int], Callable[[int], None]]  # (task, total) -> advance(n)


def _no_progress(task: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def evaluate(
    cfg: AgentConfig,
    gallery: Path,
    queries: Path,
    ks: Sequence[int] = (1, 5, 10),
    model: str | None = None,
    variant: str | None = None,
    plain: bool = False,
    per_query: bool = False,
    progress: Progress = _no_progress,
    report: Path | None = None,
) -> dict:
    """Retrieval metrics of labelled queries (DIR/<identity>/<image>) against a gallery, or
    against a folder of images enrolled into a temporary gallery with the configured settings.

    per_query: also each query's top identity and score, from `Gallery.search` (the ranking
    `agent run` publishes), with the gallery searched exactly.
    report: write the evaluation as an HTML page there (`agent.decide.report`).
    """
    query_items, problems = scan(queries)
    for p in problems:
        log.warning("queries: %s: %s", p.path, p.message)
    with ExitStack() as stack:
        if Gallery.exists(gallery):
            g = stack.enter_context(Gallery.open(gallery))
            embedder = stack.enter_context(embedder_for(cfg, g, model, variant))
            if plain and g.settings.flip:
                log.warning(
                    "gallery %s was enrolled with flip averaging; for the plain baseline "
                    "enroll it with --plain",
                    gallery,
                )
            on_the_fly = False
        elif gallery.is_dir():
            embedder = stack.enter_context(embedder_for(cfg, None, model, variant))
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-eval-")))
            settings = GallerySettings.from_config(cfg.gallery, plain=plain)
            g = stack.enter_context(
                Gallery.create(tmp / "gallery", gallery_model(embedder.model), settings)
            )
            files, _ = scan(gallery)
            enroll(g, embedder, files, progress=progress("enrolling gallery", len(files)))
            on_the_fly = True
        else:
            raise InputError(f"{gallery}: neither a gallery nor a folder of images")
        items, read_ok = [], []
        for item in query_items:
            image = read_image_file(item.path)
            if isinstance(image, Problem):
                log.warning("query skipped: %s", image.message)
                continue
            items.append(image)
            read_ok.append(item)
        if not items:
            raise InputError("no query image could be read")
        flip = g.settings.flip and cfg.gallery.flip_queries and not plain
        embedded = embedder.embed(
            items, flip=flip, progress=progress("embedding queries", len(items))
        )
        for err in embedded.errors:
            log.warning("query skipped: %s", err.message)
        ok = np.flatnonzero(embedded.ok)
        if len(ok) == 0:
            raise InputError("no query image could be embedded")
        vectors = embedded.vectors[ok]
        truth = [read_ok[i].identity for i in ok]
        scores, gallery_ids = g.score_matrix(vectors, plain=plain)
        metrics = retrieval_metrics(scores, gallery_ids, truth, ks)
        metrics.update(
            {
                "model": g.model.label,
                "gallery": str(gallery),
                "gallery_enrolled_on_the_fly": on_the_fly,
                "gallery_images": g.count,
                "plain": plain,
                "features": {
                    "flip_gallery": g.settings.flip,
                    "flip_queries": flip,
                    "whitened_dim": g.projection.out_dim if (g.projection and not plain) else 0,
                    "identity_weight": 0.0 if plain else g.settings.identity_weight,
                },
                "failed_queries": len(embedded.errors),
                "inferences": embedder.inferences,
            }
        )
        results = g.search(vectors, k=5, candidates=cfg.gallery.candidates, exact=True)
        metrics["policy"] = policy_point(cfg, g, results, truth, [True] * len(truth))
        if report is not None:
            from agent.atomic import atomic_write_bytes
            from agent.decide.report import query_scores, render

            page = render(metrics, query_scores(scores, gallery_ids, truth))
            atomic_write_bytes(report, page.encode())
        if per_query:
            metrics["per_query"] = [
                {
                    "path": str(read_ok[i].path),
                    "identity": read_ok[i].identity,
                    "top_identity": r.identities[0].identity if r.identities else None,
                    "top_score": round(r.identities[0].score, 6) if r.identities else None,
                }
                for i, r in zip(ok, results, strict=True)
            ]
    return metrics


def policy_point(cfg: AgentConfig, gallery: Gallery, results, truth, known) -> dict:
    """The configured match policy's decisions on these queries, each judged on its own as
    `agent run` judges a frame with cooldown_s = 0: precision over published identities
    (a wrong one, or any on a never-enrolled query, is an error), recall over enrolled queries."""
    rule = decision_rule(cfg.match, gallery.calibration)
    labels = [label(r, rule) for r in results]
    known = np.asarray(known)
    said = np.array([lab.identity not in (None, UNKNOWN) for lab in labels])
    right = np.array([lab.identity == t for lab, t in zip(labels, truth, strict=True)])
    correct = int((said & right & known).sum())
    wrong = int((said & ~right & known).sum())
    false_open = int((said & ~known).sum())
    tops = np.array([r.identities[0].score if r.identities else -1.0 for r in results])
    top_right = np.array([bool(r.identities) and r.identities[0].identity == t
                          for r, t in zip(results, truth, strict=True)])  # fmt: skip
    return {
        "rule": rule.as_dict(),
        "precision": round(correct / max(1, correct + wrong + false_open), 4),
        "recall": round(correct / max(1, int(known.sum())), 4),
        "wrong_identity": wrong,
        "never_enrolled": int((~known).sum()),
        "never_enrolled_matched": false_open,
        "false_accept_rate": round(false_open / max(1, int((~known).sum())), 4),
        "unknown_events": int(sum(lab.identity == UNKNOWN for lab in labels)),
        "oracle_recall": _oracle(tops, top_right, int(known.sum()), cfg.match.target_precision),
    }


def _oracle(scores: np.ndarray, right: np.ndarray, known: int, target: float) -> float:
    """Best recall any threshold on the top score reaches at precision >= target."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(right[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = precision >= target
    return round(float(hits[ok].max()) / max(known, 1), 4) if ok.any() else 0.0


def evaluate_open_set(
    cfg: AgentConfig,
    gallery: Path,
    queries: Path,
    leave_out: int = 5,
    model: str | None = None,
    variant: str | None = None,
    progress: Progress = _no_progress,
) -> dict:
    """The open-set protocol: every `leave_out`-th identity (sorted by name, starting with the
    `leave_out`-th) is left out of a gallery enrolled from the folder with the configured
    settings; every query is judged by the configured policy as `agent run` would."""
    if leave_out < 2:
        raise InputError("--leave-out must be >= 2 (every Nth identity is left out)")
    files, _ = scan(gallery)
    identities = sorted({f.identity for f in files})
    left = set(identities[leave_out - 1 :: leave_out])
    query_files, problems = scan(queries)
    for p in problems:
        log.warning("queries: %s: %s", p.path, p.message)
    with ExitStack() as stack:
        embedder = stack.enter_context(embedder_for(cfg, None, model, variant))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-eval-")))
        settings = GallerySettings.from_config(cfg.gallery)
        g = stack.enter_context(
            Gallery.create(tmp / "gallery", gallery_model(embedder.model), settings)
        )
        kept = [f for f in files if f.identity not in left]
        enroll(g, embedder, kept, progress=progress("enrolling gallery", len(kept)))
        items, read_ok = [], []
        for item in query_files:
            image = read_image_file(item.path)
            if not isinstance(image, Problem):
                items.append(image)
                read_ok.append(item)
        if not items:
            raise InputError("no query image could be read")
        flip = g.settings.flip and cfg.gallery.flip_queries
        advance = progress("embedding queries", len(items))
        embedded = embedder.embed(items, flip=flip, progress=advance)
        ok = np.flatnonzero(embedded.ok)
        if len(ok) == 0:
            raise InputError("no query image could be embedded")
        truth = [read_ok[i].identity for i in ok]
        results = g.search(embedded.vectors[ok], k=5, candidates=cfg.gallery.candidates)
        report = policy_point(cfg, g, results, truth, [t not in left for t in truth])
        report |= {
            "model": g.model.label,
            "gallery_identities": len(identities) - len(left),
            "left_out_identities": sorted(left),
            "gallery_images": g.count,
            "queries": len(truth),
            "failed_queries": len(embedded.errors),
        }
    return report

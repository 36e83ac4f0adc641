"""`agent eval`: retrieval quality of a gallery against labelled queries."""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from agent.cli.common import JsonOption, console, print_json, state
from agent.cli.galleries import ModelOption, VariantOption, embedder_for
from agent.cli.progress import image_progress
from agent.enroll import Problem, enroll, read_image_file, scan
from agent.errors import InputError
from agent.evaluation import retrieval_metrics
from agent.gallery import Gallery, GalleryModel, GallerySettings

log = logging.getLogger(__name__)


def eval_command(
    ctx: typer.Context,
    gallery: Path = typer.Option(
        ..., "--gallery", "-g", help="A gallery made by `agent enroll`, or DIR/<identity>/<image>."
    ),
    queries: Path = typer.Option(..., "--queries", "-Q", help="DIR/<identity>/<image> queries."),
    k: str = typer.Option("1,5,10", "-k", help="Comma-separated K values."),
    model: str | None = ModelOption,
    variant: str | None = VariantOption,
    plain: bool = typer.Option(
        False, "--plain", help="Raw cosine, no quality features (the reference baseline)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """recall@K, precision@K, mAP, score distributions and a suggested threshold."""
    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        raise InputError(f"-k must be comma-separated integers, not {k!r}") from None
    if not ks or ks[0] < 1:
        raise InputError("-k values must be >= 1")
    cfg = state(ctx).config
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
                Gallery.create(tmp / "gallery", GalleryModel.of(embedder.model), settings)
            )
            candidates, _ = scan(gallery)
            with image_progress() as bar:
                task = bar.add_task("enrolling gallery", total=len(candidates))
                enroll(g, embedder, candidates, progress=lambda n: bar.advance(task, n))
            on_the_fly = True
        else:
            raise InputError(f"{gallery}: neither a gallery nor a folder of images")
        items, read_ok = [], []
        for cand in query_items:
            image = read_image_file(cand.path)
            if isinstance(image, Problem):
                log.warning("query skipped: %s", image.message)
                continue
            items.append(image)
            read_ok.append(cand)
        query_items = read_ok
        if not items:
            raise InputError("no query image could be read")
        flip = g.settings.flip and cfg.gallery.flip_queries and not plain
        with image_progress() as bar:
            task = bar.add_task("embedding queries", total=len(items))
            embedded = embedder.embed(items, flip=flip, progress=lambda n: bar.advance(task, n))
        for err in embedded.errors:
            log.warning("query skipped: %s", err.message)
        ok = np.flatnonzero(embedded.ok)
        if len(ok) == 0:
            raise InputError("no query image could be embedded")
        scores, gallery_ids = g.score_matrix(embedded.vectors[ok], plain=plain)
        metrics = retrieval_metrics(scores, gallery_ids, [query_items[i].identity for i in ok], ks)
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
    if as_json:
        print_json(metrics)
        return
    table = Table(
        title=f"{metrics['model']}: {metrics['queries']} queries vs "
        f"{metrics['gallery_images']} gallery images{' (plain)' if plain else ''}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in [f"recall@{x}" for x in ks] + [f"precision@{x}" for x in ks] + ["mAP", "gap"]:
        table.add_row(key, str(metrics.get(key)))
    for side in ("same_identity", "different_identity"):
        d = metrics[side]
        table.add_row(f"{side} mean/p5/p95", f"{d['mean']} / {d['p5']} / {d['p95']}")
    th = metrics["threshold"]
    table.add_row(
        "suggested threshold (max F1)",
        f"{th['f1_threshold']} (P {th['f1_precision']}, R {th['f1_recall']})",
    )
    console.print(table)

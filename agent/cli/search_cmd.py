"""`agent search IMAGE...` / `agent search --text "..."`: nearest identities in the gallery."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.cli.galleries import GalleryOption, ModelOption, VariantOption
from agent.cli.galleries import gallery_path as resolve_gallery_path
from agent.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from agent.gallery.gallery import Gallery
    from agent.gallery.scoring import SearchResult


def search_command(
    ctx: typer.Context,
    images: list[Path] = typer.Argument(None, help="Query images (files or folders)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="Query text (repeatable)."),
    gallery: Path | None = GalleryOption,
    model: str | None = ModelOption,
    variant: str | None = VariantOption,
    k: int = typer.Option(5, "-k", min=1, help="Results per query."),
    threshold: float | None = typer.Option(None, help="Drop results scoring below this."),
    captions: Path | None = typer.Option(
        None,
        "--captions",
        help="Caption gallery of the same identities: images and --text together are one "
        "query each (one text for all images, or one per image), their scores fused.",
    ),
    image_weight: float = typer.Option(
        0.5, min=0.0, max=1.0, help="With --captions: weight of the image score in the fusion."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Identities (and images) nearest to each query, best first."""
    import numpy as np

    from agent.cli.inputs import collect_images
    from agent.gallery.enroll import Problem, read_image_file
    from agent.gallery.gallery import Gallery
    from agent.gallery.models import embedder_for

    cfg = state(ctx).config
    if images and text and captions is not None:
        _fused(cfg, resolve_gallery_path(cfg, gallery), captions, images, text, k, image_weight,
               as_json)  # fmt: skip
        return
    if bool(images) == bool(text):
        raise InputError(
            "give query images or --text, not both or neither (both: with --captions GALLERY)"
        )
    path = resolve_gallery_path(cfg, gallery)
    with Gallery.open(path) as g:
        if text:
            queries, labels = _encode_text(cfg, g, text), list(text)
        else:
            files = collect_images(images)
            with embedder_for(cfg, g, model, variant) as embedder:
                items = [read_image_file(f) for f in files]
                for item in items:
                    if isinstance(item, Problem):
                        raise InputError(item.message)
                flip = g.settings.flip and cfg.gallery.flip_queries
                embedded = embedder.embed(items, flip=flip)
            for err in embedded.errors:
                console.print(f"[yellow]skipped[/] {err.message}", highlight=False)
            keep = np.flatnonzero(embedded.ok)
            if len(keep) == 0:
                raise InputError("no query image could be embedded")
            queries, labels = embedded.vectors[keep], [str(files[i]) for i in keep]
        results = g.search(queries, k=k, threshold=threshold, candidates=cfg.gallery.candidates)
        label = g.model.label
    _show(labels, results, label, as_json)


def _fused(
    cfg,
    path: Path,
    captions: Path,
    images: list[Path],
    texts: list[str],
    k: int,
    image_weight: float,
    as_json: bool,
) -> None:
    """Each image with its text (or the one text): image gallery and caption gallery searched,
    identity scores fused (`agent.gallery.scoring.fuse`)."""
    from agent.api import open_gallery
    from agent.cli.inputs import collect_images
    from agent.gallery.gallery import Gallery
    from agent.gallery.scoring import SearchResult, fuse

    files = collect_images(images)
    if len(texts) not in (1, len(files)):
        raise InputError(f"{len(files)} images and {len(texts)} texts: give one text, or one "
                         "per image")  # fmt: skip
    texts = texts * len(files) if len(texts) == 1 else texts
    with open_gallery(path, cfg) as g:
        n = max(k, len(g.identities()))
        by_image = g.search(files, k=n)
    with Gallery.open(captions) as c:
        by_text = c.search(_encode_text(cfg, c, texts), k=n, candidates=max(100, 4 * n))
    fused = [SearchResult([], fuse(a, b, image_weight)[:k])
             for a, b in zip(by_image, by_text, strict=True)]  # fmt: skip
    labels = [f"{f} + {t!r}" for f, t in zip(files, texts, strict=True)]
    _show(labels, fused, f"fused image ({image_weight}) + captions", as_json)


def _encode_text(cfg, g: Gallery, texts: list[str]) -> np.ndarray:
    """Text queries need a text gallery, or an image gallery whose model has a text tower."""
    from agent.gallery.models import gallery_model
    from agent.gallery.store import GalleryError
    from agent.runtime.extract import TextExtractor
    from agent.runtime.registry import ModelRegistry

    registry = ModelRegistry.from_config(cfg)
    manifest = registry.get(g.model.name)
    if manifest.modality == "text":
        name, variant = g.model.name, g.model.variant
    elif manifest.paired_with:
        name, variant = manifest.paired_with, None
    else:
        raise GalleryError(
            f"gallery {g.path} holds {g.model.label} image embeddings, which have no text "
            "tower; --text needs a gallery built with a text model or a CLIP-style pair"
        )
    encoder = TextExtractor.from_config(cfg, name, variant)
    if manifest.modality == "text":
        g.check_model(gallery_model(encoder.model))
    return encoder.encode(texts)


def _show(labels: list[str], results: list[SearchResult], model: str, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print_json(
            {
                "model": model,
                "queries": [
                    {
                        "query": q,
                        "identities": [m.__dict__ for m in r.identities],
                        "hits": [h.__dict__ for h in r.hits],
                    }
                    for q, r in zip(labels, results, strict=True)
                ],
            }
        )
        return
    if len(labels) > 1:  # many queries (a folder): one table, a row each, paths under their root
        import os

        root = os.path.commonpath(labels) if all(os.path.isabs(q) for q in labels) else ""
        shown = [os.path.relpath(q, root) for q in labels] if root else labels
        table = Table(title=f"{len(labels)} queries{f' under {root}' if root else ''} ({model})")
        table.add_column("query", overflow="fold")
        for col in ("top identity", "score", "runner-up", "score"):
            table.add_column(col, overflow="fold")
        for q, r in zip(shown, results, strict=True):
            cells = [(m.identity, f"{m.score:.3f}") for m in r.identities[:2]]
            cells += [("", "")] * (2 - len(cells))
            table.add_row(q, *cells[0], *cells[1])
        console.print(table, markup=False)
        return
    for q, r in zip(labels, results, strict=True):
        table = Table(title=f"{q} ({model})")
        for col in ("rank", "identity", "score", "best image score", "best image"):
            table.add_column(col)
        best_source = {}
        for h in sorted(r.hits, key=lambda h: -h.image_score):
            best_source.setdefault(h.identity, h.source)
        for rank, m in enumerate(r.identities, 1):
            table.add_row(
                str(rank),
                m.identity,
                f"{m.score:.3f}",
                f"{m.best_image_score:.3f}",
                best_source.get(m.identity, ""),
            )
        console.print(table)

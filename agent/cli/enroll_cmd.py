"""`agent enroll DIR`: add a folder of identities to the gallery."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.cli.galleries import GalleryOption, ModelOption, VariantOption
from agent.cli.galleries import gallery_path as resolve_gallery_path
from agent.errors import InputError

if TYPE_CHECKING:
    from agent.gallery.enroll import EnrollReport


def enroll_command(
    ctx: typer.Context,
    directory: Path = typer.Argument(
        ..., help="DIR/<identity>/<image>, or a flat folder with --id-from filename."
    ),
    gallery: Path | None = GalleryOption,
    model: str | None = ModelOption,
    variant: str | None = VariantOption,
    id_from: str = typer.Option(
        "folder", "--id-from", help="folder (DIR/<identity>/...) or filename (alice_01.jpg)."
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Include nested folders under each identity."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Identities in DIR keep only the images now in DIR."
    ),
    prune: bool = typer.Option(False, "--prune", help="Remove vectors whose files are gone."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Report what would change; change nothing."
    ),
    plain: bool = typer.Option(
        False, "--plain", help="New gallery without quality features (no flip, whitening, ...)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Enroll images; re-runs add only new or changed files (by content hash). With a text model
    (--model minilm_l6, or a gallery built with one): captions, DIR/<identity>/*.txt, one per
    line."""
    from agent.cli.progress import progress_bars
    from agent.gallery.enroll import EnrollReport, enroll, scan
    from agent.gallery.gallery import Gallery
    from agent.gallery.models import embedder_for, gallery_model
    from agent.gallery.store import GalleryError, GallerySettings

    if id_from not in ("folder", "filename"):
        raise InputError(f"--id-from must be folder or filename, not {id_from!r}")
    cfg = state(ctx).config
    path = resolve_gallery_path(cfg, gallery)
    if _text_model(cfg, path, model):
        _show(_enroll_captions(cfg, path, directory, model, variant, dry_run, plain), as_json)
        return
    candidates, problems = scan(directory, id_from, recursive)  # type: ignore[arg-type]
    settings = GallerySettings.from_config(cfg.gallery, plain=plain)
    with ExitStack() as stack:
        existing = None
        if Gallery.exists(path):
            existing = stack.enter_context(Gallery.open(path, writable=not dry_run))
            if plain and existing.settings != existing.settings.as_plain():
                raise GalleryError(
                    f"gallery {path} was created with quality features; --plain applies to a "
                    "new gallery (use another --gallery)"
                )
        embedder = stack.enter_context(embedder_for(cfg, existing, model, variant))
        target = existing
        if target is None and not dry_run:
            target = Gallery.create(path, gallery_model(embedder.model), settings)
            stack.enter_context(target)
        if target is None:  # dry run against a gallery that does not exist yet
            report = EnrollReport(str(path), embedder.model.label, True)
            report.scanned = report.added = len(candidates)
            report.changes = [("add", c.identity, str(c.path.resolve())) for c in candidates]
        else:
            with progress_bars() as start:
                advance = start("enrolling", len(candidates))
                report = enroll(
                    target,
                    embedder,
                    candidates,
                    replace=replace,
                    prune=prune,
                    dry_run=dry_run,
                    progress=advance,
                    root=directory,
                )
    report.problems = problems + report.problems
    _show(report, as_json)
    if report.scanned and report.failed == report.scanned:
        raise InputError("no image could be enrolled")


def _text_model(cfg, path: Path, model: str | None) -> bool:
    """Whether this enrollment embeds text: the named model's (else the gallery's) modality."""
    from agent.gallery.gallery import Gallery
    from agent.runtime.registry import ModelRegistry

    if model is None and Gallery.exists(path):
        with Gallery.open(path) as existing:
            model = existing.model.name
    if model is None:
        return False
    return ModelRegistry.from_config(cfg).get(model).modality == "text"


def _enroll_captions(
    cfg,
    path: Path,
    directory: Path,
    model: str | None,
    variant: str | None,
    dry_run: bool,
    plain: bool,
) -> EnrollReport:
    """Captions (DIR/<identity>/*.txt, a caption per line) with a text model."""
    from dataclasses import replace

    from agent.gallery.captions import enroll_captions, scan_captions
    from agent.gallery.enroll import EnrollReport
    from agent.gallery.gallery import Gallery
    from agent.gallery.models import gallery_model
    from agent.gallery.store import GallerySettings
    from agent.runtime.extract import TextExtractor

    captions, problems = scan_captions(directory)
    with ExitStack() as stack:
        existing = None
        if Gallery.exists(path):
            existing = stack.enter_context(Gallery.open(path, writable=not dry_run))
            if model is None:
                model, variant = existing.model.name, variant or existing.model.variant
        encoder = TextExtractor.from_config(cfg, model, variant)
        if existing is not None:
            existing.check_model(gallery_model(encoder.model))
        target = existing
        if target is None and not dry_run:  # no flip for text; the other settings as images
            settings = replace(GallerySettings.from_config(cfg.gallery, plain=plain), flip=False)
            target = stack.enter_context(Gallery.create(path, gallery_model(encoder.model),
                                                        settings))  # fmt: skip
        if target is None:
            report = EnrollReport(str(path), encoder.model.label, True)
            report.scanned = report.added = len(captions)
            report.changes = [("add", c.identity, c.source) for c in captions]
        else:
            report = enroll_captions(target, encoder, captions, directory, dry_run)
    report.problems = problems + report.problems
    return report


def _show(report: EnrollReport, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print_json(report.as_dict())
        return
    title = f"{'dry run: ' if report.dry_run else ''}{report.gallery} ({report.model})"
    table = Table(title=title, show_header=False)
    rate = report.scanned / report.seconds if report.seconds else 0.0
    for label, value in (
        ("scanned", report.scanned),
        ("added", report.added),
        ("updated (content changed)", report.updated),
        ("unchanged", report.unchanged),
        ("removed (--replace/--prune)", report.removed),
        ("failed", report.failed),
        ("duplicates skipped", report.skipped_duplicates),
        ("inferences", report.inferences),
        ("embedding cache hits", report.cache_hits),
        ("images/s", f"{rate:.1f}"),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for action, identity, path in report.changes:  # a dry run: each file it would change
        console.print(f"would {action}: {identity}  {path}", markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip
    if report.problems:
        problems = Table(title="problems (skipped or worth a look)")
        problems.add_column("kind")
        problems.add_column("path")
        problems.add_column("message")
        for p in report.problems:
            problems.add_row(p.kind, p.path, p.message)
        console.print(problems)
    console.print(
        f"gallery: {report.gallery_vectors} vectors, {report.identities} identities, "
        f"version {report.gallery_version}"
    )

"""`agent bench extract`: end-to-end extraction from files vs the bare session, same run."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import InputError

app = typer.Typer(help="Benchmarks (results belong in BENCHMARKS.md).", no_args_is_help=True)


@app.command("extract")
def bench_extract(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str | None = typer.Option(None, "--model", "-m"),
    variant: str | None = typer.Option(None),
    batch: int = typer.Option(16, min=1, help="Inference batch size."),
    rounds: int = typer.Option(3, min=1, help="Alternating rounds; medians are reported."),
    as_json: bool = JsonOption,
) -> None:
    """Images/s from files (decode + preprocess + inference) against the bare session on
    already-preprocessed tensors, alternating in rounds, same model and variant."""
    import numpy as np
    from rich.table import Table

    from agent.cli.inputs import collect_images
    from agent.runtime.extract import ImageExtractor

    images = collect_images(paths)
    cfg = state(ctx).config
    cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={"max_batch": batch})})
    with ImageExtractor.from_config(cfg, model, variant) as ex:
        tensors, _ = ex.load_tensors(images)
        if not len(tensors):
            raise InputError("no image could be decoded")
        ex.embed_tensors(tensors[:batch])
        bare, files = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ex.embed_tensors(tensors)
            bare.append(len(tensors) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            result = ex.extract(images)
            files.append(len(images) / (time.perf_counter() - t0))
        stats = ex.stats.summary()
        label, provider = ex.model.label, ex.provider
    ratio = float(np.median(np.array(files) / np.array(bare)))
    data = {
        "model": label,
        "provider": provider,
        "images": len(images),
        "batch": batch,
        "errors": len(result.errors),
        "bare_images_per_s": round(float(np.median(bare)), 1),
        "files_images_per_s": round(float(np.median(files)), 1),
        "ratio_files_over_bare": round(ratio, 3),
        "rounds": rounds,
        "stages": stats["stages"],
    }
    if as_json:
        print_json(data)
        return
    table = Table(title=f"{label} on {provider}: {len(images)} images, batch {batch}")
    table.add_column("path")
    table.add_column("images/s", justify="right")
    table.add_row("bare session (preprocessed tensors)", f"{data['bare_images_per_s']:.1f}")
    table.add_row("from files (decode+preprocess+infer)", f"{data['files_images_per_s']:.1f}")
    console.print(table)
    console.print(f"files / bare = {ratio:.3f} (median of {rounds} rounds)")

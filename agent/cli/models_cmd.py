"""`agent models list|info|import|pull|quantize|bench`"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import InputError

if TYPE_CHECKING:
    from agent.runtime.registry import ModelRegistry

app = typer.Typer(help="Model manifests and weight files.", no_args_is_help=True)


def _registry(ctx: typer.Context) -> ModelRegistry:
    from agent.runtime.registry import ModelRegistry

    return ModelRegistry.from_config(state(ctx).config)


@app.command("list")
def list_models(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Known models, their variants, and whether each file is present and verified."""
    from rich.table import Table

    reg = _registry(ctx)
    rows = []
    for name, manifest in sorted(reg.all_manifests().items()):
        for st in reg.status(manifest):
            rows.append(
                {
                    "model": name,
                    "variant": st.name,
                    "default": st.name == manifest.default_variant,
                    "modality": manifest.modality,
                    "dim": getattr(manifest, "embedding_dim", None),
                    "precision": st.variant.precision,
                    "state": st.state,
                    "path": str(st.path) if st.path else None,
                }
            )
    if as_json:
        print_json(rows)
        return
    table = Table(title="models")
    for col in ("model", "variant", "modality", "dim", "state"):
        table.add_column(col, no_wrap=True)
    table.add_column("path", overflow="fold")
    for r in rows:
        colour = {"verified": "green", "missing": "dim"}.get(r["state"], "yellow")
        table.add_row(
            r["model"],
            r["variant"] + (" *" if r["default"] else ""),
            r["modality"],
            str(r["dim"] or "-"),
            f"[{colour}]{r['state']}[/]",
            r["path"] or "",
        )
    console.print(table)
    console.print(
        "* default variant; search path: " + ", ".join(str(d) for d in reg.search_dirs),
        highlight=False,
    )


@app.command("info")
def info(ctx: typer.Context, name: str, as_json: bool = JsonOption) -> None:
    """A model's manifest and the state of each variant."""
    from rich.table import Table

    reg = _registry(ctx)
    manifest = reg.any(name)
    data = manifest.model_dump(mode="json")
    data["manifest_path"] = str(manifest.path)
    data["files"] = {
        st.name: {"path": str(st.path) if st.path else None, "state": st.state}
        for st in reg.status(manifest)
    }
    if data.get("modality") == "detector":
        data["used_by"] = _modes_using(ctx, name)
    if as_json:
        print_json(data)
        return
    table = Table(show_header=False, title=name)
    for key, value in data.items():
        table.add_row(key, str(value))
    console.print(table)


def _modes_using(ctx: typer.Context, name: str) -> dict[str, str]:
    """For each detect.mode, which detector it would use now (this one or another) and why."""
    from agent.errors import AgentError
    from agent.stream.detect import DEFAULT_DETECTORS, choose_detector

    cfg = state(ctx).config
    out = {}
    for mode in DEFAULT_DETECTORS:
        try:
            choice, _ = choose_detector(cfg.model_copy(
                update={"detect": cfg.detect.model_copy(update={"mode": mode})}))  # fmt: skip
        except AgentError as exc:
            out[mode] = f"none: {exc}"
            continue
        out[mode] = f"{choice.detector} ({choice.reason})"
    return {m: why for m, why in out.items() if name in why}


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="ONNX file to import."),
    as_name: str = typer.Option(..., "--as", help="Manifest name to file it under."),
    variant: str | None = typer.Option(None, help="Variant name (default: manifest default)."),
    like: str | None = typer.Option(None, help="For a new name: copy preprocessing from MODEL."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (for a new variant)."),
) -> None:
    """Copy a user's ONNX file into the models directory, verified against its manifest."""
    from agent.runtime.model_import import import_model

    manifest, variant_name, path = import_model(
        _registry(ctx), file, as_name, variant, like, precision
    )
    console.print(f"imported {manifest.name}:{variant_name} -> {path}")


@app.command("pull")
def pull(
    ctx: typer.Context,
    name: str,
    variant: str | None = typer.Option(None, help="Variant to download."),
    timeout: float = typer.Option(30.0, help="Network timeout in seconds."),
) -> None:
    """Download a manifest's file by URL and verify its sha256."""
    path = _registry(ctx).pull(name, variant, timeout)
    console.print(f"downloaded {name} -> {path}")


@app.command("quantize")
def quantize(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model to quantise (its fp32 variant)."),
    calib: Path = typer.Option(..., "--calib", help="Folder of your own calibration images."),
    samples: int = typer.Option(64, min=1, help="Calibration images to use."),
    holdout: int = typer.Option(16, min=1, help="Images held out to compare fp32 and int8."),
    variant_name: str = typer.Option("int8-calib", "--variant-name", help="New variant's name."),
    source_variant: str = typer.Option("fp32", "--from", help="Variant to quantise."),
    force: bool = typer.Option(False, help="Keep the result even if fp32/int8 agree poorly."),
    method: str = typer.Option("percentile", help="Activation range: percentile or minmax."),
    as_json: bool = JsonOption,
) -> None:
    """Static int8 QDQ quantisation calibrated on your images; reports fp32-vs-int8 cosine."""
    from agent.runtime.images import list_images
    from agent.runtime.quantize import REFUSE_BELOW, quantize_static_int8
    from agent.runtime.registry import ModelRegistry

    cfg = state(ctx).config
    if method not in ("percentile", "minmax"):
        raise InputError(f"--method must be percentile or minmax, not {method!r}")
    if not calib.is_dir():
        raise InputError(f"{calib}: not a directory")
    images = list_images(calib)
    if not images:
        raise InputError(f"{calib}: no images (jpg, png, webp, bmp, tif)")
    reg = ModelRegistry.from_config(cfg)
    source = reg.resolve(name, source_variant, cfg.models.verify_sha256)
    with console.status(f"calibrating {name} on {min(samples, len(images))} images"):
        report = quantize_static_int8(
            reg, source, cfg.models, images, variant_name, samples, holdout, force, method
        )
    data = {**report.__dict__, "path": str(report.path)}
    if as_json:
        print_json(data)
    else:
        console.print(
            f"{name}:{variant_name}: cosine(fp32, int8) mean {report.cosine_mean:.4f} "
            f"min {report.cosine_min:.4f} on {report.holdout_images} held-out images"
        )
    if not report.accepted:
        raise InputError(
            f"int8 mean cosine {report.cosine_mean:.3f} < {REFUSE_BELOW}: refused "
            "(nothing written; --force keeps it anyway)"
        )
    if not as_json:
        console.print(f"wrote {report.path}; use it with `--variant {variant_name}`")


@app.command("bench")
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="Model (default: config's models.default)."),
    variant: str = typer.Option("", help="Comma-separated variants (default: all present)."),
    batch: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    seconds: float = typer.Option(3.0, help="Seconds per variant and batch size."),
    as_json: bool = JsonOption,
) -> None:
    """Images/s and latency of bare inference per variant and batch size, in one run."""
    from rich.table import Table

    from agent.runtime.bench import bench_model

    cfg = state(ctx).config
    name = name or cfg.models.default
    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"--batch must be comma-separated integers, not {batch!r}") from None
    if not batches or min(batches) < 1:
        raise InputError("--batch values must be >= 1")
    variants = [v.strip() for v in variant.split(",") if v.strip()]
    with console.status(f"benchmarking {name} at batch {batch}"):
        result = bench_model(cfg, name, variants, batches, seconds)
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"{name} inference (bare session, random input)")
    for col in ("variant", "provider", "nodes run by", "batch", "images/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for r in result.rows:
        table.add_row(
            r.variant,
            r.provider,
            ", ".join(f"{p} {n}" for p, n in result.nodes_by_provider[r.variant].items()),
            str(r.batch),
            f"{r.images_per_s:.1f}",
            f"{r.latency_p50_ms:.2f}",
            f"{r.latency_p95_ms:.2f}",
        )
    console.print(table)
    for key, value in result.ratios.items():
        console.print(f"{key}: {value:.2f}x")
    wanted = result.requested_provider
    import onnxruntime as ort

    from agent.runtime.session import ORT_PROVIDER

    in_build = ORT_PROVIDER.get(wanted) in ort.get_available_providers()
    for v, nodes in result.fallbacks.items():
        ran = ", ".join(f"{n} nodes on {p}" for p, n in nodes.items())
        if in_build:  # the provider was there and still left nodes elsewhere: worth a warning
            console.print(f"[yellow]warning:[/] {name}:{v}: {wanted} was asked for; ran {ran}"
                          " (`agent doctor` lists the providers)")  # fmt: skip
        else:  # a CPU-only build: the expected outcome, said plainly
            console.print(f"{name}:{v}: {ran} ({wanted} is not in this onnxruntime build)")

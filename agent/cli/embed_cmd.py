"""`agent embed`: images to embeddings, on stdout (JSON summary) or to a file."""

from __future__ import annotations

import io
from pathlib import Path

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import InputError


def embed(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model manifest name."),
    variant: str | None = typer.Option(None, help="Model variant (fp32, int8, ...)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help=".npz (embeddings + paths) or .emb (compact binary)."
    ),
    dtype: str = typer.Option("float32", help="float32 or float16 for the output file."),
    flip: bool = typer.Option(False, help="Average with the mirrored image."),
    vectors: bool = typer.Option(
        False, "--vectors", help="With --json: put each embedding in the JSON (per image)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Extract embeddings of images; corrupt files are reported and skipped. Without --out
    (or --json --vectors) only a summary is shown."""
    import numpy as np
    from rich.table import Table

    from agent.atomic import atomic_write_bytes
    from agent.cli.inputs import collect_images
    from agent.cli.progress import progress_bars
    from agent.runtime.embeddings import to_bytes
    from agent.runtime.extract import ImageExtractor

    if out is not None and out.suffix not in (".npz", ".emb"):
        raise InputError(f"--out must end in .npz or .emb, not {out.suffix or out.name!r}")
    if dtype not in ("float32", "float16"):
        raise InputError(f"--dtype must be float32 or float16, not {dtype!r}")
    images = collect_images(paths)
    with ImageExtractor.from_config(state(ctx).config, model, variant) as ex:
        with progress_bars() as start:
            advance = start("embedding", len(images))
            result = ex.extract(images, flip=flip, progress=advance)
        stats = ex.stats.summary()
        label, provider = ex.model.label, ex.provider
    ok_paths = [str(p) for p, ok in zip(images, result.ok, strict=True) if ok]
    if out is not None and ok_paths:
        if out.suffix == ".emb":
            data = to_bytes(result.valid, dtype)
        else:
            buf = io.BytesIO()
            np.savez(buf, embeddings=result.valid.astype(dtype), paths=np.array(ok_paths))
            data = buf.getvalue()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
    errors = [{"path": e.source, "error": e.message} for e in result.errors]
    if as_json:
        print_json(
            {
                "model": label,
                "provider": provider,
                "dim": int(result.embeddings.shape[1]),
                "count": len(images),
                "ok": len(ok_paths),
                "errors": errors,
                "out": str(out) if out else None,
                "stats": stats,
                **(
                    {"embeddings": [{"path": p, "vector": [round(float(x), 6) for x in v]}
                                    for p, v in zip(ok_paths, result.valid, strict=True)]}
                    if vectors else {}
                ),
            }
        )  # fmt: skip
    else:
        table = Table(title=f"{label} on {provider}")
        for col in (
            "images",
            "embedded",
            "failed",
            "img/s",
            "decode p50",
            "preproc p50",
            "infer p50/img",
        ):
            table.add_column(col, justify="right")
        st = stats["stages"]
        table.add_row(
            str(len(images)),
            str(len(ok_paths)),
            str(len(errors)),
            f"{stats['items_per_s']:.1f}",
            f"{st['decode']['p50_ms']:.2f} ms",
            f"{st['preprocess']['p50_ms']:.2f} ms",
            f"{st['inference']['p50_ms']:.2f} ms",
        )
        console.print(table)
        for e in errors:
            console.print(f"[yellow]skipped[/] {e['error']}", highlight=False)
        if out is not None:
            console.print(f"wrote {len(ok_paths)} embeddings to {out}")
        else:
            console.print("embeddings not kept: --out FILE.npz|.emb writes them, "
                          "--json --vectors prints them", markup=False)  # fmt: skip
    if not ok_paths:
        raise InputError("no image could be embedded")

"""`agent eval`: retrieval quality of a gallery against labelled queries."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.cli.galleries import ModelOption, VariantOption
from agent.errors import InputError


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
    per_query: bool = typer.Option(
        False, "--per-query", help="Also each query's top identity and score (JSON output)."
    ),
    open_set: bool = typer.Option(
        False,
        "--open-set",
        help="Leave every Nth identity out of the gallery folder and judge each query with the "
        "configured match policy: precision, recall, false accepts on never-enrolled queries.",
    ),
    leave_out: int = typer.Option(
        5, "--leave-out", help="--open-set: leave every Nth identity out."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Also write the evaluation as pictures: FILE.html."
    ),
    as_json: bool = JsonOption,
) -> None:
    """recall@K, precision@K, mAP, score distributions and a suggested threshold."""
    from rich.markup import escape
    from rich.table import Table

    from agent.cli.progress import progress_bars
    from agent.decide.evaluation import evaluate, evaluate_open_set

    try:
        ks = sorted({int(x) for x in k.split(",") if x.strip()})
    except ValueError:
        raise InputError(f"-k must be comma-separated integers, not {k!r}") from None
    if not ks or ks[0] < 1:
        raise InputError("-k values must be >= 1")
    cfg = state(ctx).config
    if open_set:
        with progress_bars() as progress:
            report = evaluate_open_set(cfg, gallery, queries, leave_out, model, variant, progress)
        _show_open_set(report, as_json)
        return
    with progress_bars() as progress:
        metrics = evaluate(cfg, gallery, queries, ks, model, variant, plain, per_query, progress,
                           report)  # fmt: skip
    if as_json:
        print_json(metrics)
        return
    table = Table(
        title=f"{metrics['model']}: {metrics['queries']} queries vs "
        f"{metrics['gallery_images']} gallery images{' (plain)' if plain else ''}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = [f"recall@{x}" for x in ks] + [f"identity_recall@{x}" for x in ks]
    for key in [*keys, *(f"precision@{x}" for x in ks), "mAP", "gap"]:
        if key in metrics:
            table.add_row(key, str(metrics[key]))
    for side in ("same_identity", "different_identity"):
        d = metrics[side]
        table.add_row(f"{side} mean/p5/p95", f"{d['mean']} / {d['p5']} / {d['p95']}")
    th = metrics["threshold"]
    policy = metrics["policy"]
    table.add_row(
        "match policy (as agent run)",
        escape(f"P {policy['precision']}, R {policy['recall']} with [match] threshold = "
               f"{policy['rule']['match_score']}, min_margin = {policy['rule']['min_margin']}"),
    )  # fmt: skip
    table.add_row(
        escape("[match] threshold for max F1"),
        f"threshold = {th['f1_threshold']} (P {th['f1_precision']}, R {th['f1_recall']})",
    )
    console.print(table)


def _show_open_set(report: dict, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print_json(report)
        return
    table = Table(
        title=f"{report['model']}: open set, {report['gallery_identities']} identities enrolled, "
        f"{len(report['left_out_identities'])} left out, {report['queries']} queries"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("precision", "recall", "oracle_recall", "wrong_identity",
                "never_enrolled_matched", "false_accept_rate", "unknown_events"):  # fmt: skip
        table.add_row(key, str(report[key]))
    rule = report["rule"]
    table.add_row("rule", f"score >= {rule['match_score']}, margin >= {rule['min_margin']}, "
                  f"unknown below {rule['unknown_below']}")  # fmt: skip
    console.print(table)

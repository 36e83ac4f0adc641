"""`agent doctor`: what `agent run` needs, checked, with what to fix."""

from __future__ import annotations

from dataclasses import asdict

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import ConfigError


def doctor_command(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Check config, model and providers, gallery, sources and broker; exit 1 if any fails."""
    from rich.markup import escape
    from rich.table import Table

    from agent.config import load_config
    from agent.ops.doctor import Check, run_checks

    st = state(ctx)
    try:
        cfg = load_config(st.config_path)
        checks = [Check("config", "ok", str(st.config_path or "defaults + AGENT_* environment"))]
        checks += run_checks(cfg)
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc), "fix the key named above")]
    if as_json:
        print_json([asdict(c) for c in checks])
    else:
        table = Table(title="agent doctor")
        for col in ("check", "", "detail", "fix"):
            table.add_column(col)
        style = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
        for c in checks:
            table.add_row(c.name, style[c.level], escape(c.detail), escape(c.fix))
        console.print(table)
    if any(c.level == "fail" for c in checks):
        raise typer.Exit(1)

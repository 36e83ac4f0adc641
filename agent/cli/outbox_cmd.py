"""`agent outbox list|purge`: see and drop the events waiting for delivery, and dead letters."""

from __future__ import annotations

import typer

from agent.cli.common import JsonOption, console, print_json, state
from agent.errors import InputError

app = typer.Typer(help="Events waiting in the durable outbox, and dead letters.",
                  no_args_is_help=True)  # fmt: skip
DeadOption = typer.Option(False, "--dead", help="The dead letters (undeliverable events).")


@app.command("list")
def list_events(
    ctx: typer.Context,
    dead: bool = DeadOption,
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, oldest first."),
    as_json: bool = JsonOption,
) -> None:
    """Events an earlier run left for delivery (replayed at the next start), or dead letters."""
    import datetime as dt

    from rich.table import Table

    from agent.publish.outbox import Outbox

    outbox = Outbox.from_config(state(ctx).config)
    try:
        rows, total = outbox.listing(dead, limit), (outbox.dead_letters if dead else len(outbox))
    finally:
        outbox.close()
    if as_json:
        print_json({"total": total, "events": rows})
        return
    table = Table(title=f"{total} {'dead letters' if dead else 'events waiting'}")
    columns = ["seq", "event_id", "topic", "bytes", "created"] + (["reason"] if dead else [])
    for col in columns:
        table.add_column(col)
    for row in rows:
        row["created"] = dt.datetime.fromtimestamp(row["created"]).isoformat(timespec="seconds")
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


@app.command("purge")
def purge(
    ctx: typer.Context,
    dead: bool = DeadOption,
    pending: bool = typer.Option(False, "--pending", help="The events waiting for delivery."),
    yes: bool = typer.Option(False, "--yes", help="Really delete them."),
) -> None:
    """Delete waiting events and/or dead letters (they are gone for every consumer)."""
    from agent.publish.outbox import Outbox

    if not (dead or pending):
        raise InputError("say what to purge: --pending, --dead, or both")
    if not yes:
        raise InputError("purging cannot be undone; add --yes")
    outbox = Outbox.from_config(state(ctx).config)
    try:
        removed = outbox.purge(pending, dead)
    finally:
        outbox.close()
    console.print(f"purged {removed} event(s)")

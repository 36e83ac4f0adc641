"""`agent run`: the long-running service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.common import set_broker, state
from agent.cli.galleries import GalleryOption
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.config import AgentConfig


def apply_overrides(
    cfg: AgentConfig,
    sources: list[str] | None,
    realtime: bool | None,
    loop: bool | None,
    broker: str | None,
    gallery: Path | None,
) -> None:
    from agent.config import source_from_spec

    if sources:
        parsed = [source_from_spec(s, i) for i, s in enumerate(sources)]
        ids = [s.id for s in parsed]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"source ids must be unique, got {ids}; name them ID=URI")
        cfg.sources = parsed
    for source in cfg.sources:
        if realtime is not None:
            source.realtime = realtime
        if loop is not None:
            source.loop = loop
    set_broker(cfg, broker)
    if gallery is not None:
        cfg.gallery.path = gallery


def run_command(
    ctx: typer.Context,
    source: list[str] = typer.Option(
        None, "--source", "-s", help="ID=URI or URI; replaces [[sources]] (repeatable)."
    ),
    realtime: bool | None = typer.Option(
        None,
        "--realtime/--fast",
        help="Files: pace at their frame rate, or read all as fast as possible.",
    ),
    loop: bool | None = typer.Option(
        None, "--loop/--no-loop", help="Files: start again at the end."
    ),
    broker: str | None = typer.Option(
        None,
        "--broker",
        help="MQTT HOST[:PORT], mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS); overrides [mqtt].",
    ),
    gallery: Path | None = GalleryOption,
    print_events: bool = typer.Option(
        False, "--print-events", help="Also print match events on stdout when publishing to MQTT."
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, help="Stop after this many seconds."
    ),
) -> None:
    """Read the sources, match against the gallery, publish events (stdout when no broker)."""
    from agent.service import Agent

    cfg = state(ctx).config
    apply_overrides(cfg, source, realtime, loop, broker, gallery)
    agent = Agent(cfg, print_events=print_events)
    raise typer.Exit(agent.run(duration))

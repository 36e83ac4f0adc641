"""Shared CLI plumbing: global options, console, JSON output."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from agent.config import AgentConfig


class _LazyConsole:
    """A rich Console made on first use: commands that print nothing never import rich."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console: Console | None = None

    def get(self) -> Console:
        """The rich Console itself (for rich objects that take one)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.get(), name)


console = _LazyConsole(stderr=False)
err_console = _LazyConsole(stderr=True)


@dataclass
class State:
    config_path: Path | None = None
    verbosity: int = 0
    _config: AgentConfig | None = None

    @property
    def config(self) -> AgentConfig:
        if self._config is None:
            from agent.config import load_config

            self._config = load_config(self.config_path)
        return self._config


def setup_logging(verbosity: int) -> None:
    from rich.logging import RichHandler

    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if verbosity < -1:
        level = logging.ERROR
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console.get(), show_path=False, show_time=False)],
        force=True,
    )


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


JsonOption = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
BrokerOption = typer.Option(
    None, "--broker", help="MQTT broker HOST[:PORT], mqtt://... or mqtts://... (TLS)."
)


def set_broker(cfg: AgentConfig, broker: str | None) -> None:
    """Apply a --broker value over the config's [mqtt] host, port and TLS."""
    from agent.config import parse_broker

    if not broker:
        return
    cfg.mqtt.host, port, tls = parse_broker(broker)
    if port is not None:
        cfg.mqtt.port = port
    if tls is not None:
        cfg.mqtt.tls = tls

"""`agent events schema`: the JSON schema of what the agent publishes."""

from __future__ import annotations

import typer

from agent.cli.common import print_json
from agent.errors import InputError

app = typer.Typer(help="Event payloads.", no_args_is_help=True)


@app.command("schema")
def schema(
    name: str = typer.Argument(
        "all", help="One of match, status, metrics, command-result, track, or all."
    ),
) -> None:
    """Print the JSON schema of a payload (or of all of them)."""
    from agent.events import PAYLOADS, SCHEMA_VERSION

    if name == "all":
        schemas = {k: m.model_json_schema() for k, m in PAYLOADS.items()}
        print_json({"schema_version": SCHEMA_VERSION, "payloads": schemas})
        return
    if name not in PAYLOADS:
        raise InputError(f"unknown payload {name!r}; choose from {', '.join(PAYLOADS)} or all")
    print_json(PAYLOADS[name].model_json_schema())

"""`agent config show|schema`"""

from __future__ import annotations

import typer

from agent.cli.common import print_json, state

app = typer.Typer(help="Show the effective configuration or its JSON schema.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Print the effective configuration (file + AGENT_* environment + defaults) as JSON."""
    print_json(state(ctx).config.model_dump(mode="json"))


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of agent.toml."""
    from agent.config import AgentConfig

    print_json(AgentConfig.model_json_schema())

"""The Typer application: every command and sub-command of `agent`."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli import (
    bench_cmd,
    config_cmd,
    doctor_cmd,
    embed_cmd,
    enroll_cmd,
    eval_cmd,
    events_cmd,
    fleet_cmd,
    gallery_cmd,
    models_cmd,
    outbox_cmd,
    run_cmd,
    search_cmd,
    service_cmd,
    status_cmd,
)
from agent.cli.common import State, setup_logging

app = typer.Typer(
    name="agent",
    help="Edge embedding agent: ONNX feature extraction, a local gallery, MQTT events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: Rich's help renderer alone doubles `--help` time
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models_cmd.app, name="models")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(gallery_cmd.app, name="gallery")
app.add_typer(events_cmd.app, name="events")
app.add_typer(service_cmd.app, name="service")
app.add_typer(outbox_cmd.app, name="outbox")
app.add_typer(fleet_cmd.app, name="fleet")
EXAMPLES = {  # shown at the end of each command's --help
    "run": "agent run -s door=rtsp://user@10.0.0.5/stream -g gallery/ --broker mqtt.local",
    "status": "agent status --json",
    "doctor": "agent -c /etc/agent/agent.toml doctor",
    "embed": "agent embed photos/ --out vectors.npy",
    "enroll": "agent enroll examples/gallery -g my_gallery   (re-run: only changes)",
    "search": "agent search query.jpg -g my_gallery -k 3",
    "eval": "agent eval gallery_dir/ queries_dir/ --open-set",
    "sink": "agent sink --qdrant http://qdrant:6333 --broker mqtt.central",
}


def _command(name: str, fn) -> None:
    app.command(name, epilog=f"Example: {EXAMPLES[name]}")(fn)


_command("run", run_cmd.run_command)
_command("status", status_cmd.status_command)
_command("doctor", doctor_cmd.doctor_command)
_command("embed", embed_cmd.embed)
_command("enroll", enroll_cmd.enroll_command)
_command("search", search_cmd.search_command)
_command("eval", eval_cmd.eval_command)
_command("sink", fleet_cmd.sink_command)


def _print_version(value: bool) -> None:
    if value:
        from agent import __version__

        print(f"agent {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        envvar="AGENT_CONFIG",
        help="agent.toml to load.",
        dir_okay=False,
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-vv)."),
    quiet: int = typer.Option(0, "--quiet", "-q", count=True, help="Less logging (-qq)."),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    setup_logging(verbose - quiet)
    ctx.obj = State(config_path=config, verbosity=verbose - quiet)

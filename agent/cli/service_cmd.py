"""`agent service install|uninstall`: run the agent under systemd on this host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from agent.cli.common import console
from agent.errors import InputError

if TYPE_CHECKING:
    from agent.ops.deploy import Installer

app = typer.Typer(help="Install or remove the systemd unit (agent.service).", no_args_is_help=True)

RootOption = typer.Option(
    Path("/"), "--root", help="Write under this directory instead of / (no systemctl, no useradd)."
)
DryRunOption = typer.Option(False, "--dry-run", help="Print what would be done; change nothing.")


def _report(installer: Installer) -> None:
    for line in installer.actions:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _broker_table(text: str) -> dict:
    from agent.config import parse_broker

    host, port, tls = parse_broker(text)
    table: dict = {"host": host}
    if port is not None:
        table["port"] = port
    if tls is not None:
        table["tls"] = tls
    return table


@app.command("install")
def install(
    source: list[str] = typer.Option(
        [], "--source", "-s", help="Camera or file as ID=URI (repeatable); written to the config."
    ),
    broker: str = typer.Option(
        "", "--broker", help="MQTT broker HOST[:PORT], mqtt://... or mqtts://... (TLS)."
    ),
    device_id: str = typer.Option("", "--device-id", help="Device id (default: hostname)."),
    mqtt_password_file: Path | None = typer.Option(
        None, "--mqtt-password-file", help="Broker password, stored as a systemd credential."
    ),
    exec_path: Path | None = typer.Option(
        None, "--exec", help="agent executable for ExecStart (default: this installation's)."
    ),
    config_dir: Path = typer.Option(Path("/etc/agent"), help="Where agent.toml and agent.env go."),
    no_start: bool = typer.Option(False, "--no-start", help="Enable the unit but do not start it."),
    root: Path = RootOption,
    dry_run: bool = DryRunOption,
) -> None:
    """Write agent.service, /etc/agent/agent.toml (kept if present) and agent.env; enable, start."""
    from agent.config import source_from_spec
    from agent.ops.deploy import UNIT, Installer, installed_agent

    if not config_dir.is_absolute():
        raise InputError(f"--config-dir must be an absolute path, not {config_dir}")
    installer = Installer(root=root.absolute(), config_dir=config_dir, dry_run=dry_run)
    agent = (exec_path or installed_agent()).absolute()
    not_started = installer.install(
        exec_path=agent,
        sources=[
            source_from_spec(s, i, require_id=True).model_dump(include={"id", "uri"})
            for i, s in enumerate(source)
        ],
        broker=_broker_table(broker) if broker else None,
        device_id=device_id or None,
        password_file=mqtt_password_file,
        start=not no_start,
    )
    _report(installer)
    config = root.absolute() / config_dir.relative_to("/") / "agent.toml"  # where it was written
    if not_started and not no_start:
        console.print(f"not started: {not_started}. Then: sudo systemctl start {UNIT}",
                      markup=False, soft_wrap=True)  # fmt: skip
    console.print(
        f"follow the logs:  journalctl -u {UNIT} -f\n"
        f"health:           {agent} -c {config} status   (or systemctl status {UNIT})\n"
        f"enroll:           sudo -u agent {agent} -c {config} enroll images/",
        highlight=False,
        soft_wrap=True,
    )


@app.command("uninstall")
def uninstall(root: Path = RootOption, dry_run: bool = DryRunOption) -> None:
    """Stop, disable and remove the unit. Config (/etc/agent) and state (/var/lib/agent) stay."""
    from agent.ops.deploy import Installer

    installer = Installer(root=root.absolute(), dry_run=dry_run)
    installer.uninstall()
    _report(installer)
    console.print("kept /etc/agent and /var/lib/agent (gallery, models); remove them by hand "
                  "if they are no longer wanted", highlight=False, soft_wrap=True)  # fmt: skip

"""`agent fleet keygen|search` and `agent sink`: galleries signed for many boxes, and one place
to search what all of them saw."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli.common import console

app = typer.Typer(help="Fleets: signing keys, and searching every box's events.",
                  no_args_is_help=True)  # fmt: skip


@app.command("keygen", epilog="Example: agent fleet keygen /secure/fleet.pem")
def keygen(
    private_key: Path = typer.Argument(..., help="File for the private key (never overwritten)."),
) -> None:
    """Make an Ed25519 signing key; print the public key that boxes put in [fleet] public_key."""
    from agent.fleet.keys import generate

    public = generate(private_key)
    console.print(f"private key: {private_key} (mode 0600; keep it with the publisher)")
    print(f'[fleet]\npublic_key = "{public}"')

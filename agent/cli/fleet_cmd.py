"""`agent fleet keygen|search` and `agent sink`: galleries signed for many boxes, and one place
to search what all of them saw."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.cli.common import BrokerOption, JsonOption, console, print_json, set_broker, state
from agent.errors import InputError

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


def _sightings(cfg, qdrant: str, collection: str, model: str | None):
    from agent.fleet.sightings import Sightings
    from agent.runtime.registry import resolve_image_model

    resolved = resolve_image_model(cfg, model)
    return Sightings(qdrant, resolved.manifest.embedding_dim, collection), resolved


QdrantOption = typer.Option(
    ..., "--qdrant", help="Qdrant: http(s)://host:6333 (server or cluster) or a folder "
    "(embedded, one process at a time).",
)  # fmt: skip
CollectionOption = typer.Option("agent_sightings", "--collection", help="Qdrant collection.")
ModelOption = typer.Option(
    None, "--model", help="The fleet's image model (default: the configured one)."
)


def sink_command(
    ctx: typer.Context,
    qdrant: str = QdrantOption,
    collection: str = CollectionOption,
    group: str | None = typer.Option(
        None,
        "--group",
        help="Share the subscription with the other sinks of this group (MQTT 5 $share: the "
        "broker spreads events over them); default: one sink, plain subscription.",
    ),
    topic: str = typer.Option("agent/+/match", "--topic", help="Topic filter of match events."),
    client_id: str | None = typer.Option(
        None, "--client-id", help="Stable per sink instance (default from group and device id)."
    ),
    model: str | None = ModelOption,
    broker: str | None = BrokerOption,
    duration: float | None = typer.Option(
        None, "--duration", min=0.1, help="Stop after this many seconds."
    ),
) -> None:
    """Write every box's match events into Qdrant (idempotent by event_id) until stopped."""
    import json
    import signal

    from agent.fleet.sink import Sink

    cfg = state(ctx).config
    set_broker(cfg, broker)
    sightings, _ = _sightings(cfg, qdrant, collection, model)
    with sightings:
        sink = Sink(cfg, sightings, group, topic, client_id)
        signal.signal(signal.SIGTERM, sink.stop)
        signal.signal(signal.SIGINT, sink.stop)
        stats = sink.run(duration)
    print(json.dumps(stats.as_dict()))


@app.command("search", epilog="Example: agent fleet search shelf.jpg --qdrant http://db:6333")
def search(
    ctx: typer.Context,
    image: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, help="An image of what to look for."
    ),
    identity: str | None = typer.Option(None, "--identity", help="Look for an identity."),
    qdrant: str = QdrantOption,
    collection: str = CollectionOption,
    device: str | None = typer.Option(None, "--device", help="Only this box."),
    source: str | None = typer.Option(None, "--source", help="Only this camera."),
    limit: int = typer.Option(10, "--limit", "-k", min=1, max=1000, help="Sightings shown."),
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Where and when was this seen, on any box: by image (most alike first) or identity
    (newest first)."""
    import dataclasses
    import datetime as dt

    from rich.table import Table

    if (image is None) == (identity is None):
        raise InputError("give an IMAGE or --identity ID (one of them)")
    cfg = state(ctx).config
    sightings, resolved = _sightings(cfg, qdrant, collection, model)
    with sightings:
        if image is not None:
            from agent.runtime.embedder import CachedEmbedder
            from agent.runtime.images import EncodedImage

            try:
                query = EncodedImage(image.read_bytes(), str(image))
            except OSError as exc:
                raise InputError(f"cannot read {image}: {exc.strerror}") from None
            with CachedEmbedder(cfg, resolved, cache=None) as embedder:
                embedded = embedder.embed([query], cached=False)
            if not embedded.ok[0]:
                raise InputError(f"{image}: {embedded.errors[0].message}")
            found = sightings.by_image(embedded.vectors[0], resolved.label, limit,
                                       device_id=device, source_id=source)  # fmt: skip
        else:
            found = sightings.by_identity(identity, limit, device_id=device, source_id=source)
    if as_json:
        print_json([dataclasses.asdict(s) for s in found])
        return
    table = Table(title=f"{len(found)} sightings")
    for col in ("device", "source", "identity", "track", "when", "media s",
                "similarity" if image is not None else "score"):  # fmt: skip
        table.add_column(col)
    for s in found:
        when = dt.datetime.fromtimestamp(s.ts).isoformat(timespec="seconds")
        value = s.similarity if image is not None else s.score
        table.add_row(s.device_id, s.source_id, s.identity or "unknown", s.track_id or "-", when,
                      f"{s.frame_time_s:.1f}", f"{value:.3f}")  # fmt: skip
    console.print(table)

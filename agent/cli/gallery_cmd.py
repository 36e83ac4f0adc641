"""`agent gallery list|stats|remove|repair|export|import|reindex|publish`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from agent.cli.common import BrokerOption, JsonOption, console, print_json, set_broker, state
from agent.cli.galleries import GalleryOption, ModelOption, VariantOption
from agent.cli.galleries import gallery_path as resolve_gallery_path
from agent.errors import InputError

app = typer.Typer(help="Inspect and maintain the gallery.", no_args_is_help=True)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


@app.command("list")
def list_identities(
    ctx: typer.Context, gallery: Path | None = GalleryOption, as_json: bool = JsonOption
) -> None:
    """Identities with their image counts."""
    from rich.table import Table

    from agent.gallery.store import GalleryStore

    store = GalleryStore.open(resolve_gallery_path(state(ctx).config, gallery))
    try:  # metadata only: the index is not opened
        rows = store.identities()
    finally:
        store.close()
    if as_json:
        print_json([{"identity": n, "images": c, "last_enrolled": t} for n, c, t in rows])
        return
    table = Table(title=f"{len(rows)} identities")
    for col in ("identity", "images", "last enrolled"):
        table.add_column(col)
    for name, count, last in rows:
        table.add_row(name, str(count), _when(last))
    console.print(table)


@app.command("stats")
def stats(
    ctx: typer.Context, gallery: Path | None = GalleryOption, as_json: bool = JsonOption
) -> None:
    """Model, size, version and settings of the gallery."""
    from rich.table import Table

    from agent.decide.policy import decision_rule
    from agent.gallery.gallery import Gallery

    cfg = state(ctx).config
    with Gallery.open(resolve_gallery_path(cfg, gallery)) as g:
        info = g.stats()
        samples = g.calibration
        info["calibration"] = {
            "genuine_samples": len(samples.genuine),
            "impostor_samples": len(samples.impostor),
            "decisions": decision_rule(cfg.match, samples).as_dict(),
        }
    if as_json:
        print_json(info)
        return
    table = Table(show_header=False, title=info["path"])
    for key, value in info.items():
        if key in ("created_at", "updated_at"):
            value = _when(value)
        table.add_row(key, str(value))
    console.print(table)


@app.command("remove")
def remove(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Identity to remove (all its images)."),
    gallery: Path | None = GalleryOption,
) -> None:
    """Remove an identity and all its vectors."""
    from agent.gallery.gallery import Gallery

    with Gallery.open(resolve_gallery_path(state(ctx).config, gallery), writable=True) as g:
        removed = g.remove_identity(identity)
        g.flush()
        version = g.version
    console.print(f"removed {identity!r}: {removed} vectors (gallery version {version})")


@app.command("repair")
def repair(ctx: typer.Context, gallery: Path | None = GalleryOption) -> None:
    """Check the index against the metadata and rebuild it if they disagree."""
    from agent.gallery.gallery import Gallery
    from agent.gallery.store import GalleryError

    with Gallery.open(resolve_gallery_path(state(ctx).config, gallery), writable=True) as g:
        corrupt = g.store.integrity_problem()
        if corrupt:
            raise GalleryError(
                f"{g.path / 'gallery.db'} is damaged ({corrupt}); the database is the truth and "
                "cannot be rebuilt: restore a backup or an export (`agent gallery import`), or "
                "enroll again"
            )
        problem, count = g.repaired, g.count
    if problem:
        console.print(f"repaired: {problem}; index rebuilt with {count} vectors")
    else:
        console.print(f"consistent: {count} vectors")


@app.command("export")
def export(
    ctx: typer.Context,
    target: Path = typer.Argument(..., help="File to write (a portable SQLite database)."),
    gallery: Path | None = GalleryOption,
) -> None:
    """Write the whole gallery (vectors + metadata) to one portable file."""
    from agent.gallery.gallery import Gallery

    if target.is_dir():
        raise InputError(f"{target} is a directory; give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    with Gallery.open(resolve_gallery_path(state(ctx).config, gallery)) as g:
        g.export(target)
        count = g.count
    console.print(f"exported {count} vectors to {target}")


@app.command("import")
def import_(
    ctx: typer.Context,
    source: Path = typer.Argument(..., exists=True, dir_okay=False, help="An exported file."),
    gallery: Path | None = GalleryOption,
) -> None:
    """Add an exported gallery to this one (created when absent; the model must match)."""
    from agent.gallery.transfer import import_gallery

    path = resolve_gallery_path(state(ctx).config, gallery)
    g, added, skipped = import_gallery(source, path)
    with g:
        count = g.count
    console.print(f"imported {added} vectors ({skipped} already present); {count} in {path}")


@app.command("reindex")
def reindex(
    ctx: typer.Context,
    gallery: Path | None = GalleryOption,
    model: str | None = ModelOption,
    variant: str | None = VariantOption,
    drop_missing: bool = typer.Option(
        False, "--drop-missing", help="Drop vectors whose source file is gone instead of failing."
    ),
) -> None:
    """Re-embed every vector from its source file (e.g. with a new model), atomically."""
    from agent.cli.progress import progress_bars
    from agent.gallery.enroll import reindex as reindex_gallery
    from agent.gallery.gallery import Gallery
    from agent.runtime.embedder import CachedEmbedder

    cfg = state(ctx).config
    path = resolve_gallery_path(cfg, gallery)
    with Gallery.open(path, writable=True) as g:
        if model is None:
            model, variant = g.model.name, variant or g.model.variant
        with CachedEmbedder.from_config(cfg, model, variant) as embedder, progress_bars() as start:
            kept, dropped = reindex_gallery(g, embedder, drop_missing, start)
            inferences = embedder.inferences
        console.print(
            f"reindexed {kept} vectors with {g.model.label} ({inferences} inferences); "
            f"dropped {dropped}; gallery version {g.version}"
        )


PUBLISH_EXAMPLE = (
    "Example: agent gallery publish shops -g gallery/ --key fleet.pem --to /srv/galleries "
    "--url https://files.example/galleries"
)


@app.command("publish", epilog=PUBLISH_EXAMPLE)
def publish(
    ctx: typer.Context,
    group: str = typer.Argument(..., help="Group of boxes that serve this gallery."),
    key: Path = typer.Option(..., "--key", help="Ed25519 private key (agent fleet keygen)."),
    to: str = typer.Option(
        ..., "--to", help="Where the artefact goes: a directory, or an http(s):// URL taking PUT."
    ),
    url: str | None = typer.Option(
        None, "--url", help="Base URL boxes download from (default: --to, as file:// for a dir)."
    ),
    version: int | None = typer.Option(
        None, "--version", min=1, help="Version to release (default: the announced one + 1)."
    ),
    gallery: Path | None = GalleryOption,
    broker: str | None = BrokerOption,
    as_json: bool = JsonOption,
) -> None:
    """Release the gallery to a group: a signed artefact stored at --to and announced (retained)
    on <fleet prefix>/gallery/<group>; boxes of the group verify it and swap it in."""
    from agent.fleet.release import release

    cfg = state(ctx).config
    set_broker(cfg, broker)
    done = release(cfg, resolve_gallery_path(cfg, gallery), group, key, to, url, version)
    a = done.announcement
    if as_json:
        print_json(a.model_dump(mode="json"))
        return
    m = a.manifest
    console.print(
        f"group {group}: version {m.version} (was {done.previous_version or 'none'}), "
        f"{m.vectors} vectors of {m.identities} identities, {m.model}, sha256 {m.sha256[:12]}; "
        f"at {a.url}"
    )

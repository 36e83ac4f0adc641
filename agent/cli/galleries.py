"""Opening a gallery and the embedder that matches it, for the CLI commands."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.config import AgentConfig
from agent.embedder import CachedEmbedder
from agent.gallery import Gallery, GalleryModel

GalleryOption = typer.Option(
    None, "--gallery", "-g", help="Gallery directory (default: [gallery] path in the config)."
)
ModelOption = typer.Option(None, "--model", "-m", help="Model manifest name.")
VariantOption = typer.Option(None, "--variant", help="Model variant (fp32, int8, ...).")


def gallery_path(cfg: AgentConfig, path: Path | None) -> Path:
    return Path(path) if path is not None else cfg.gallery_path


def embedder_for(
    cfg: AgentConfig, gallery: Gallery | None, model: str | None, variant: str | None
) -> CachedEmbedder:
    """The gallery's own model unless one is named; a named one must match the gallery."""
    if gallery is not None and model is None:
        model, variant = gallery.model.name, variant or gallery.model.variant
    embedder = CachedEmbedder.from_config(cfg, model, variant)
    if gallery is not None:
        try:
            gallery.check_model(GalleryModel.of(embedder.model))
        except BaseException:
            embedder.close()
            raise
    return embedder

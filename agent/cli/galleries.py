"""Opening a gallery and the embedder that matches it, for the CLI commands."""

from __future__ import annotations

from pathlib import Path

import typer

from agent.config import AgentConfig
from agent.embedder import embedder_for  # noqa: F401  (the CLI commands import it from here)

GalleryOption = typer.Option(
    None, "--gallery", "-g", help="Gallery directory (default: [gallery] path in the config)."
)
ModelOption = typer.Option(None, "--model", "-m", help="Model manifest name.")
VariantOption = typer.Option(None, "--variant", help="Model variant (fp32, int8, ...).")


def gallery_path(cfg: AgentConfig, path: Path | None) -> Path:
    return Path(path) if path is not None else cfg.gallery_path

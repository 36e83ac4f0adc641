"""Gallery and model options shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from agent.config import AgentConfig

GalleryOption = typer.Option(
    None, "--gallery", "-g", help="Gallery directory (default: [gallery] path in the config)."
)
ModelOption = typer.Option(None, "--model", "-m", help="Model manifest name.")
VariantOption = typer.Option(None, "--variant", help="Model variant (fp32, int8, ...).")


def gallery_path(cfg: AgentConfig, path: Path | None) -> Path:
    return Path(path) if path is not None else cfg.gallery_path

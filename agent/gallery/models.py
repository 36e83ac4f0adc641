"""Which model a gallery needs, and the embedder that serves it.

The one place where the gallery meets the runtime: the store records a `GalleryModel`, and this
turns a resolved model into one and refuses an embedder whose model the gallery was not built
with.
"""

from __future__ import annotations

from agent.config import AgentConfig
from agent.gallery.gallery import Gallery
from agent.gallery.store import GalleryModel
from agent.runtime.embedder import CachedEmbedder
from agent.runtime.registry import ResolvedModel


def gallery_model(model: ResolvedModel) -> GalleryModel:
    return GalleryModel(
        model.manifest.name,
        model.variant_name,
        model.fingerprint,
        model.sha256,
        model.manifest.embedding_dim,
    )


def embedder_for(
    cfg: AgentConfig, gallery: Gallery | None, model: str | None = None, variant: str | None = None
) -> CachedEmbedder:
    """The gallery's own model unless one is named; a named one must match the gallery."""
    if gallery is not None and model is None:
        model, variant = gallery.model.name, variant or gallery.model.variant
    embedder = CachedEmbedder.from_config(cfg, model, variant)
    if gallery is not None:
        try:
            gallery.check_model(gallery_model(embedder.model))
        except BaseException:
            embedder.close()
            raise
    return embedder

"""Extraction behind the embedding cache: content-addressed, with the model loaded on first miss.

Enrollment, search, evaluation and the running agent ask this for embeddings; only content the
cache has not seen (for this model fingerprint and flip setting) reaches the ONNX session.
onnxruntime, OpenCV and numpy are loaded by the first `embed`, so a command that ends up with
nothing to embed (re-enrolling an unchanged folder) never loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.runtime.cache import EmbeddingCache, cache_key, content_hash
from agent.runtime.images import ArrayImage, EncodedImage, ItemError
from agent.runtime.registry import ResolvedModel, resolve_image_model

if TYPE_CHECKING:
    import numpy as np

    from agent.runtime.extract import ImageExtractor


@dataclass
class Embedded:
    """Rows aligned with the inputs; `ok` False where the item failed (see `errors`)."""

    vectors: np.ndarray
    ok: np.ndarray
    errors: list[ItemError]


class CachedEmbedder:
    def __init__(
        self,
        cfg: AgentConfig,
        model: ResolvedModel,
        cache: EmbeddingCache | None,
    ):
        self.cfg = cfg
        self.model = model
        self.cache = cache
        self.fingerprint = model.fingerprint
        self.dim = model.manifest.embedding_dim
        self._extractor: ImageExtractor | None = None
        self.inferences = 0  # images that went through the model

    @classmethod
    def from_config(
        cls, cfg: AgentConfig, name: str | None = None, variant: str | None = None
    ) -> CachedEmbedder:
        model = resolve_image_model(cfg, name, variant)
        return cls(cfg, model, EmbeddingCache.from_config(cfg))

    @property
    def extractor(self) -> ImageExtractor:
        if self._extractor is None:
            from agent.runtime.extract import ImageExtractor

            self._extractor = ImageExtractor(self.model, self.cfg.models, self.cfg.trt_cache_path)
        return self._extractor

    def load(self) -> ImageExtractor:
        """Create the ONNX session now rather than on the first cache miss."""
        return self.extractor

    @property
    def batches(self) -> int:
        """Inference batches run so far (0 while every request was served by the cache)."""
        return self._extractor.stats.batches if self._extractor else 0

    @property
    def provider(self) -> str | None:
        return self._extractor.provider if self._extractor else None

    def embed(
        self,
        items: Sequence[EncodedImage | ArrayImage],
        hashes: Sequence[str] | None = None,
        flip: bool = False,
        progress: Callable[[int], None] | None = None,
        cached: bool = True,
    ) -> Embedded:
        """Embed items, serving what the cache holds; `hashes` are the items' content hashes.

        cached=False skips the cache (no hashing, lookups or writes), e.g. for live frames.
        """
        import numpy as np

        n = len(items)
        if not cached:
            result = self.extractor.extract(items, flip=flip, progress=progress)
            self.inferences += int(result.ok.sum())
            return Embedded(result.embeddings, result.ok, result.errors)
        if hashes is None:
            hashes = [
                content_hash(i.data if isinstance(i, EncodedImage) else i.pixels) for i in items
            ]
        keys = [cache_key(h, self.fingerprint, flip) for h in hashes]
        cached = self.cache.get_many(keys) if self.cache is not None else {}
        out = Embedded(np.zeros((n, self.dim), np.float32), np.zeros(n, bool), [])
        todo = []
        for i, key in enumerate(keys):
            if key in cached:
                out.vectors[i] = cached[key]
                out.ok[i] = True
            else:
                todo.append(i)
        if progress is not None and n - len(todo):
            progress(n - len(todo))
        if todo:
            result = self.extractor.extract([items[i] for i in todo], flip=flip, progress=progress)
            self.inferences += int(result.ok.sum())
            fresh = {}
            for row, i in enumerate(todo):
                if result.ok[row]:
                    out.vectors[i] = result.embeddings[row]
                    out.ok[i] = True
                    fresh[keys[i]] = result.embeddings[row]
            out.errors = [ItemError(todo[e.index], e.source, e.message) for e in result.errors]
            if self.cache is not None:
                self.cache.put_many(fresh)
        return out

    def close(self) -> None:
        if self._extractor is not None:
            self._extractor.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> CachedEmbedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Embedding extractors: images and text in, validated L2-normalised float32 embeddings out."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.config import AgentConfig, ModelsConfig
from agent.errors import InputError, ModelError
from agent.metrics import PipelineStats, Stopwatch
from agent.runtime.images import ImageLike, ItemError, describe
from agent.runtime.preprocess import Preprocessor, load_pixels
from agent.runtime.registry import ModelRegistry, ResolvedModel, resolve_image_model
from agent.runtime.session import (
    GPU_PROVIDERS,
    BoundRunner,
    GraphInput,
    create_session,
)

log = logging.getLogger(__name__)
MIN_NORM = 1e-12


@dataclass
class ExtractResult:
    """Embeddings aligned with the inputs; rows of failed items are zero and `ok` is False."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: list[ItemError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def valid(self) -> np.ndarray:
        return self.embeddings[self.ok]


def normalise_checked(raw: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """L2-normalise rows; report rows that are not finite or have (near) zero norm."""
    raw = raw.astype(np.float32, copy=False)
    finite = np.isfinite(raw).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], raw, 0.0), axis=1)
    bad: dict[int, str] = {}
    for i in np.flatnonzero(~finite):
        bad[int(i)] = "embedding has NaN or inf values"
    for i in np.flatnonzero(finite & (norms < MIN_NORM)):
        bad[int(i)] = "embedding has zero norm"
    good = finite & (norms >= MIN_NORM)
    out = np.zeros_like(raw)
    out[good] = raw[good] / norms[good, None]
    return out, bad


class _OnnxModel:
    """What image and text extractors share: the session, output lookup, validation."""

    def __init__(
        self,
        model: ResolvedModel,
        cfg: ModelsConfig,
        trt_cache_dir: Path | None,
        graph_input: GraphInput | None = None,
    ):
        self.model = model
        self.cfg = cfg
        self.session, self.session_info = create_session(
            model.path,
            cfg,
            trt_cache_dir,
            sha256=model.sha256,
            precision=model.variant.precision,
            graph_input=graph_input,
            label=model.label,
        )
        outputs = {o.name: o for o in self.session.get_outputs()}
        manifest = model.manifest
        if manifest.output not in outputs:
            raise ModelError(
                f"{model.label}: graph has no output {manifest.output!r} "
                f"(outputs: {', '.join(outputs)})"
            )
        dim = outputs[manifest.output].shape[-1]
        if isinstance(dim, int) and dim != manifest.embedding_dim:
            raise ModelError(
                f"{model.label}: output {manifest.output!r} has dim {dim}, manifest says "
                f"{manifest.embedding_dim}"
            )
        self.fingerprint = model.fingerprint

    @property
    def dim(self) -> int:
        return self.model.manifest.embedding_dim

    @property
    def provider(self) -> str:
        return self.session_info.provider


class ImageExtractor(_OnnxModel):
    """Batched, pipelined image embedding: decode/preprocess threads overlap inference."""

    def __init__(self, model: ResolvedModel, cfg: ModelsConfig, trt_cache_dir: Path | None = None):
        if model.manifest.modality != "image" or model.manifest.image is None:
            raise ModelError(f"{model.label} is a {model.manifest.modality} model, not an image")
        self.spec = model.manifest.image
        self.preprocessor = Preprocessor(self.spec)
        graph_input = GraphInput(self.spec.name, self.preprocessor.shape, cfg.max_batch)
        super().__init__(model, cfg, trt_cache_dir, graph_input)
        graph_input = {i.name: i for i in self.session.get_inputs()}.get(self.spec.name)
        if graph_input is None:
            raise ModelError(f"{model.label}: graph has no input {self.spec.name!r}")
        fixed_batch = graph_input.shape[0]
        self._async_lock = threading.Lock()
        self.max_batch = cfg.max_batch
        if isinstance(fixed_batch, int) and fixed_batch > 0:
            self.max_batch = min(self.max_batch, fixed_batch)
        self._fixed_batch = fixed_batch if isinstance(fixed_batch, int) else None
        self._bound: BoundRunner | None = None
        if self.provider in GPU_PROVIDERS and cfg.cuda_graph and not self._fixed_batch:
            self._bound = BoundRunner(self.session, self.spec.name, model.manifest.output,
                                      "cuda", cuda_graph=True)  # fmt: skip
        workers = cfg.decode_workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preprocess")
        self.stats = PipelineStats(("decode", "preprocess", "inference"))
        if cfg.warmup and self.provider in GPU_PROVIDERS:
            # At the largest batch too: CUDA picks its kernels per shape on the first call.
            for size in sorted({1, self.max_batch}):
                self._run(np.zeros((size, *self.preprocessor.shape), dtype=np.float32))
            self.stats = PipelineStats(("decode", "preprocess", "inference"))

    @classmethod
    def from_config(
        cls, cfg: AgentConfig, name: str | None = None, variant: str | None = None
    ) -> ImageExtractor:
        return cls(resolve_image_model(cfg, name, variant), cfg.models, cfg.trt_cache_path)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ImageExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch and len(batch) != self._fixed_batch:
            return np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        with Stopwatch() as sw:
            if self._bound is not None:
                raw = self._bound.run(batch, self.max_batch)
            else:
                raw = self.session.run([self.model.manifest.output], {self.spec.name: batch})[0]
        self.stats.record("inference", sw.seconds, len(batch))
        return raw.reshape(len(batch), -1)

    def _run_chunked(self, tensors: np.ndarray) -> np.ndarray:
        step = self.max_batch
        chunks = [self._run(tensors[i : i + step]) for i in range(0, len(tensors), step)]
        return np.concatenate(chunks)

    def embed_tensors(self, tensors: np.ndarray) -> np.ndarray:
        """Bare inference on already-preprocessed input; L2-normalised, NaN/zero rows raise."""
        emb, bad = normalise_checked(self._run_chunked(tensors))
        if bad:
            i, msg = next(iter(bad.items()))
            raise ModelError(f"{self.model.label}: input tensor {i}: {msg}")
        return emb

    def load_tensor(self, item: ImageLike, flip: bool = False) -> np.ndarray | InputError:
        """Decode and preprocess one input; a bad input is returned (not raised) as InputError."""
        try:
            with Stopwatch() as decode:
                pixels, color = load_pixels(item)
            with Stopwatch() as prep:
                tensor = self.preprocessor(pixels, color)
                if flip:
                    tensor = np.stack([tensor, self.preprocessor(pixels, color, flip=True)])
        except InputError as exc:
            return exc
        except Exception as exc:  # a decoder or resize failure must not sink the batch
            return InputError(f"{describe(item)}: {type(exc).__name__}: {exc}")
        self.stats.record("decode", decode.seconds)
        self.stats.record("preprocess", prep.seconds)
        return tensor

    def load_tensors(self, items: Sequence[ImageLike]) -> tuple[np.ndarray, list[ItemError]]:
        """Preprocess many inputs into one stacked tensor, skipping (and returning) bad ones."""
        loaded = list(self._pool.map(self.load_tensor, items))
        errors = [
            ItemError(i, describe(items[i]), str(t))
            for i, t in enumerate(loaded)
            if isinstance(t, InputError)
        ]
        good = [t for t in loaded if not isinstance(t, InputError)]
        if not good:
            return np.zeros((0, *self.preprocessor.shape), dtype=np.float32), errors
        return np.stack(good), errors

    async def aextract(self, items: Sequence[ImageLike], flip: bool = False) -> ExtractResult:
        """`extract` in a worker thread, so an asyncio event loop keeps running meanwhile;
        concurrent calls run one after the other."""

        def serial() -> ExtractResult:
            with self._async_lock:
                return self.extract(items, flip)

        return await asyncio.to_thread(serial)

    def extract(
        self,
        items: Sequence[ImageLike],
        flip: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ExtractResult:
        """Embed many images. Bad items are reported in `errors`; the rest succeed.

        flip: average the embeddings of the image and its mirror (test-time augmentation).
        progress: called with the number of items finished after each batch.
        """
        n = len(items)
        result = ExtractResult(
            np.zeros((n, self.dim), dtype=np.float32), np.zeros(n, dtype=bool), []
        )
        starts = list(range(0, n, self.max_batch))
        queued: deque[tuple[int, list[Future]]] = deque()

        def submit(start: int) -> None:
            stop = min(start + self.max_batch, n)
            load = self.load_tensor
            futures = [self._pool.submit(load, items[i], flip) for i in range(start, stop)]
            queued.append((start, futures))

        with Stopwatch() as wall:
            for start in starts[:2]:
                submit(start)
            for k in range(len(starts)):
                start, futures = queued.popleft()
                if k + 2 < len(starts):
                    submit(starts[k + 2])
                self._embed_batch(items, start, [f.result() for f in futures], flip, result)
                if progress is not None:
                    progress(len(futures))
        self.stats.count(n, len(result.errors), len(starts), wall.seconds)
        return result

    def _embed_batch(self, items, start, loaded, flip, result: ExtractResult) -> None:
        good = [(start + j, t) for j, t in enumerate(loaded) if not isinstance(t, InputError)]
        for j, t in enumerate(loaded):
            if isinstance(t, InputError):
                result.errors.append(ItemError(start + j, describe(items[start + j]), str(t)))
        if not good:
            return
        index = np.array([i for i, _ in good])
        tensors = np.concatenate([t for _, t in good]) if flip else np.stack([t for _, t in good])
        raw = self._run_chunked(tensors)
        if flip:
            emb, bad = normalise_checked(raw)
            raw = emb.reshape(len(good), 2, -1).sum(axis=1)
            raw[[i // 2 for i in bad]] = np.nan  # either view broken: report the image
        emb, bad = normalise_checked(raw)
        for row, msg in bad.items():
            i = int(index[row])
            result.errors.append(ItemError(i, describe(items[i]), f"{describe(items[i])}: {msg}"))
        keep = np.ones(len(index), dtype=bool)
        keep[list(bad)] = False
        result.embeddings[index[keep]] = emb[keep]
        result.ok[index[keep]] = True

    def extract_one(self, item: ImageLike, flip: bool = False) -> np.ndarray:
        """One image's embedding; raises InputError for a bad input."""
        result = self.extract([item], flip=flip)
        if result.errors:
            raise InputError(result.errors[0].message)
        return result.embeddings[0]


class TextExtractor(_OnnxModel):
    """Sentence embeddings with a `tokenizers` tokenizer; batched by similar length."""

    def __init__(
        self,
        model: ResolvedModel,
        cfg: ModelsConfig,
        tokenizer_path: Path,
        trt_cache_dir: Path | None = None,
    ):
        from tokenizers import Tokenizer

        if model.manifest.modality != "text" or model.manifest.text is None:
            raise ModelError(f"{model.label} is a {model.manifest.modality} model, not a text one")
        super().__init__(model, cfg, trt_cache_dir)
        self.spec = model.manifest.text
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:
            raise ModelError(f"cannot load tokenizer {tokenizer_path}: {exc}") from None
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(
            pad_id=pad.get("pad_id", 0),
            pad_token=pad.get("pad_token", "[PAD]"),
            pad_to_multiple_of=self.spec.pad_to_multiple,
        )
        self.tokenizer.enable_truncation(max_length=self.spec.max_length)
        self._graph_inputs = {i.name for i in self.session.get_inputs()}
        self.max_batch = cfg.max_batch
        self.stats = PipelineStats(("tokenize", "inference"))

    @classmethod
    def from_config(
        cls, cfg: AgentConfig, name: str | None = None, variant: str | None = None
    ) -> TextExtractor:
        registry = ModelRegistry.from_config(cfg)
        model = registry.resolve(name or cfg.models.text_model, variant, cfg.models.verify_sha256)
        assert model.manifest.text is not None
        tokenizer = registry.find_file(model.manifest, model.manifest.text.tokenizer)
        if tokenizer is None:
            raise ModelError(f"{model.label}: tokenizer {model.manifest.text.tokenizer} not found")
        return cls(model, cfg.models, tokenizer, cfg.trt_cache_path)

    def _feeds(self, encodings) -> dict[str, np.ndarray]:
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        feeds = {self.spec.input_ids: ids}
        if self.spec.attention_mask and self.spec.attention_mask in self._graph_inputs:
            feeds[self.spec.attention_mask] = np.array(
                [e.attention_mask for e in encodings], dtype=np.int64
            )
        type_ids = self.spec.token_type_ids
        if type_ids and type_ids in self._graph_inputs:
            feeds[type_ids] = np.zeros_like(ids)
        return feeds

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with Stopwatch() as wall:
            with Stopwatch() as tok:
                encodings = self.tokenizer.encode_batch(list(texts))
            self.stats.record("tokenize", tok.seconds, len(texts))
            order = np.argsort([sum(e.attention_mask) for e in encodings], kind="stable")
            for s in range(0, len(order), self.max_batch):
                rows = order[s : s + self.max_batch]
                batch = [encodings[i] for i in rows]
                longest = max(sum(e.attention_mask) for e in batch)
                feeds = {k: v[:, :longest] for k, v in self._feeds(batch).items()}
                with Stopwatch() as sw:
                    raw = self.session.run([self.model.manifest.output], feeds)[0]
                self.stats.record("inference", sw.seconds, len(rows))
                emb, bad = normalise_checked(raw.reshape(len(rows), -1))
                if bad:
                    i, msg = next(iter(bad.items()))
                    raise ModelError(f"text {texts[rows[i]]!r}: {msg}")
                out[rows] = emb
        batches = -(-len(texts) // self.max_batch)
        self.stats.count(items=len(texts), batches=batches, wall_s=wall.seconds)
        return out

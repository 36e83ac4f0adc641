"""Frames from every source -> one embedding batch -> gallery search -> match policy -> events.

Crops from all sources share inference batches (bounded by `pipeline.max_batch` crops and
`pipeline.max_wait_ms`), so N cameras cost fewer session calls than N x frames. Unchanged frames
(the change gate in the source thread) reuse their source's last search results.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from agent.config import AgentConfig
from agent.events import BBox, MatchEvent, RankedIdentity, encode_embedding
from agent.gallery.live import LiveGallery
from agent.gallery.scoring import SearchResult
from agent.metrics import Metrics, NullMetrics
from agent.runtime.images import ArrayImage
from agent.stream.frame import Frame
from agent.stream.match import SourcePolicy
from agent.stream.sources import Source

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    """A crop's box, search result and embedding, kept for frames that reuse them."""

    bbox: BBox
    result: SearchResult
    vector: np.ndarray
    pixels: np.ndarray


class Pipeline:
    def __init__(
        self,
        cfg: AgentConfig,
        sources: list[Source],
        live: LiveGallery,
        emit: Callable[[MatchEvent], None],
        ready: threading.Event,
        metrics: Metrics | None = None,
    ):
        self.cfg = cfg
        self.sources = sources
        self.live = live
        self.emit = emit
        self.ready = ready
        self.metrics = metrics or NullMetrics()
        self.policies = {s.id: SourcePolicy(s.cfg.match or cfg.match) for s in sources}
        self.top_k = max(p.cfg.top_k for p in self.policies.values()) if sources else 1
        self._last: dict[str, list[_Seen]] = {}
        self._by_id = {s.id: s for s in sources}
        self._turn = 0

    @property
    def suppressed(self) -> int:
        return sum(p.suppressed for p in self.policies.values())

    def collect(self, idle_wait: float = 0.2) -> list[Frame]:
        """Up to `max_batch` crops' worth of frames, round-robin over the sources."""
        max_crops = self.cfg.pipeline.max_batch
        frames: list[Frame] = []
        crops = 0
        deadline: float | None = None
        while crops < max_crops:
            got = False
            n = len(self.sources)
            for k in range(n):
                source = self.sources[(self._turn + k) % n]
                frame = source.queue.get()
                if frame is None:
                    continue
                got = True
                frames.append(frame)
                crops += 0 if frame.reused else len(frame.crops)
                if crops >= max_crops:
                    break
            self._turn += 1
            if crops >= max_crops:
                break
            now = time.monotonic()
            if frames and deadline is None:
                deadline = now + self.cfg.pipeline.max_wait_ms / 1000
            if not got:
                wait = idle_wait if deadline is None else deadline - now
                if wait <= 0:
                    break
                self.ready.clear()
                if not any(len(s.queue) for s in self.sources):
                    self.ready.wait(wait)
                if deadline is None and not any(len(s.queue) for s in self.sources):
                    break
        return frames

    def process(self, frames: list[Frame]) -> None:
        fresh = [f for f in frames if not f.reused]
        found, times = self._embed_and_search(fresh)
        for frame in frames:  # in order: a reused frame takes the latest result of its source
            counters = self._by_id[frame.source_id].counters
            if frame.reused:
                counters.frames_reused += 1
            else:
                counters.frames_processed += 1
                self._last[frame.source_id] = found[id(frame)]
            stage_ms = {"decode": frame.decode_ms, "detect": frame.detect_ms}
            if not frame.reused:  # a reused frame has no embed/search of its own
                stage_ms |= times
            self._decide(frame, self._last.get(frame.source_id, []), stage_ms)

    def _embed_and_search(
        self, frames: list[Frame]
    ) -> tuple[dict[int, list[_Seen]], dict[str, float]]:
        """Each fresh frame's crops with their search results (failed crops left out), and the
        batch's embed and search times in ms."""
        for frame in frames:
            self.metrics.observe("decode", frame.decode_ms / 1000)
            if self.cfg.detect.mode != "frame":
                self.metrics.observe("detect", frame.detect_ms / 1000)
        found: dict[int, list[_Seen]] = {id(f): [] for f in frames}
        pairs = [(f, c) for f in frames for c in f.crops]
        if not pairs:
            return found, {}
        images = [ArrayImage(np.ascontiguousarray(c.pixels), "BGR") for _, c in pairs]
        embedder = self.live.embedder
        before = embedder.batches
        t0 = time.perf_counter()
        flip = self.live.gallery.settings.flip and self.cfg.gallery.flip_queries  # as search
        embedded = embedder.embed(images, flip=flip, cached=self.cfg.pipeline.cache_frames)
        vectors, ok, failed = embedded.vectors, embedded.ok, len(embedded.errors)
        t1 = time.perf_counter()
        self.metrics.count("inference_calls", embedder.batches - before)
        self.metrics.count("crops_embedded", int(ok.sum()))
        if failed:
            self.metrics.error("embed", failed)
        results = iter(
            self.live.gallery.search(
                vectors[ok], k=self.top_k, candidates=self.cfg.gallery.candidates
            )
            if ok.any()
            else []
        )
        t2 = time.perf_counter()
        self.metrics.observe("embed", t1 - t0)
        self.metrics.observe("search", t2 - t1)
        for (frame, crop), good, vector in zip(pairs, ok, vectors, strict=True):
            if good:
                found[id(frame)].append(_Seen(crop.bbox, next(results), vector, crop.pixels))
        return found, {"embed": (t1 - t0) * 1000, "search": (t2 - t1) * 1000}

    def _decide(self, frame: Frame, seen: list[_Seen], stage_ms: dict[str, float]) -> None:
        policy = self.policies[frame.source_id]
        decisions = policy.decide([s.result for s in seen], frame.media_time)
        if not decisions:
            return
        model = self.live.gallery.model.label
        version = self.live.loaded_version
        for decision in decisions:
            crop = seen[decision.crop]
            event = MatchEvent(
                device_id=self.cfg.device_id,
                source_id=frame.source_id,
                frame_index=frame.index,
                frame_time_s=round(frame.media_time, 3),
                bbox=crop.bbox,
                identity=decision.identity,
                score=round(decision.score, 4),
                candidates=[
                    RankedIdentity(identity=m.identity, score=round(m.score, 4))
                    for m in crop.result.identities[: policy.cfg.top_k]
                ],
                model=model,
                gallery_version=version,
                embedding_f16=encode_embedding(crop.vector)
                if self.cfg.pipeline.embed_vectors
                else None,
                thumbnail_jpeg=self._thumbnail(crop.pixels)
                if self.cfg.pipeline.thumbnails
                else None,
                latency_ms=_latency(stage_ms, frame.captured),
            )
            t0 = time.perf_counter()
            self.emit(event)
            self.metrics.observe("publish", time.perf_counter() - t0)
            self.metrics.observe("e2e", time.monotonic() - frame.captured)
            self.metrics.count("events_produced")

    def _thumbnail(self, pixels: np.ndarray) -> str | None:
        side = self.cfg.pipeline.thumbnail_size
        scale = side / max(pixels.shape[:2])
        small = (
            cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if scale < 1
            else pixels
        )
        ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return base64.b64encode(data.tobytes()).decode() if ok else None


def _latency(stage_ms: dict[str, float], captured: float) -> dict[str, float]:
    """The stage times an event carries: the frame's non-zero stages and its end-to-end time."""
    lat = {k: round(v, 2) for k, v in stage_ms.items() if v}
    lat["e2e"] = round((time.monotonic() - captured) * 1000, 2)
    return lat

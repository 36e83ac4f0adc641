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
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.config import AgentConfig
from agent.events import BBox, Candidate, MatchEvent, encode_embedding
from agent.gallery import SearchResult
from agent.live_gallery import LiveGallery
from agent.match import SourcePolicy
from agent.metrics import STAGES
from agent.preprocess import ArrayImage
from agent.sources import Frame, Source
from agent.stats import StageTimes

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    latency: dict[str, StageTimes] = field(
        default_factory=lambda: {s: StageTimes() for s in STAGES}
    )
    inference_calls: int = 0
    crops_embedded: int = 0
    events_produced: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + n


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
    ):
        self.cfg = cfg
        self.sources = sources
        self.live = live
        self.emit = emit
        self.ready = ready
        self.stats = RunStats()
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
        found = self._embed_and_search([f for f in frames if not f.reused])
        for frame in frames:  # in order: a reused frame takes the latest result of its source
            counters = self._by_id[frame.source_id].counters
            if frame.reused:
                counters.frames_reused += 1
            else:
                counters.frames_processed += 1
                self._last[frame.source_id] = found[id(frame)]
            self._decide(frame, self._last.get(frame.source_id, []))

    def _embed_and_search(self, frames: list[Frame]) -> dict[int, list[_Seen]]:
        """Each fresh frame's crops with their search results (failed crops left out)."""
        for frame in frames:
            self.stats.latency["decode"].add(frame.decode_ms / 1000)
            if self.cfg.detect.mode != "frame":
                self.stats.latency["detect"].add(frame.detect_ms / 1000)
        found: dict[int, list[_Seen]] = {id(f): [] for f in frames}
        pairs = [(f, c) for f in frames for c in f.crops]
        if not pairs:
            return found
        images = [ArrayImage(np.ascontiguousarray(c.pixels), "BGR") for _, c in pairs]
        embedder = self.live.embedder
        before = embedder.batches
        t0 = time.perf_counter()
        flip = self.live.gallery.settings.flip and self.cfg.gallery.flip_queries  # as search
        embedded = embedder.embed(images, flip=flip, cached=self.cfg.pipeline.cache_frames)
        vectors, ok, failed = embedded.vectors, embedded.ok, len(embedded.errors)
        t1 = time.perf_counter()
        self.stats.inference_calls += embedder.batches - before
        self.stats.crops_embedded += int(ok.sum())
        if failed:
            self.stats.error("embed", failed)
        results = iter(
            self.live.gallery.search(
                vectors[ok], k=self.top_k, candidates=self.cfg.gallery.candidates
            )
            if ok.any()
            else []
        )
        t2 = time.perf_counter()
        self.stats.latency["embed"].add(t1 - t0)
        self.stats.latency["search"].add(t2 - t1)
        for frame in frames:
            frame.embed_ms, frame.search_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
        for (frame, crop), good, vector in zip(pairs, ok, vectors, strict=True):
            if good:
                found[id(frame)].append(_Seen(crop.bbox, next(results), vector, crop.pixels))
        return found

    def _decide(self, frame: Frame, seen: list[_Seen]) -> None:
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
                    Candidate(identity=m.identity, score=round(m.score, 4))
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
            )
            self._stamp_latency(event, frame)
            t0 = time.perf_counter()
            self.emit(event)
            self.stats.latency["publish"].add(time.perf_counter() - t0)
            self.stats.latency["e2e"].add(time.monotonic() - frame.captured)
            self.stats.events_produced += 1

    def _stamp_latency(self, event: MatchEvent, frame: Frame) -> None:
        """Stage times of this frame (a reused frame has no embed/search of its own)."""
        lat = {"decode": frame.decode_ms, "detect": frame.detect_ms, "embed": frame.embed_ms,
               "search": frame.search_ms}  # fmt: skip
        lat = {k: round(v, 2) for k, v in lat.items() if v}
        lat["e2e"] = round((time.monotonic() - frame.captured) * 1000, 2)
        event.latency_ms = lat

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

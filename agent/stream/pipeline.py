"""Frames from every source -> one embedding batch -> evidence per object -> one search of
the objects that changed -> decisions -> events.

Crops from all sources share inference batches (bounded by `pipeline.max_batch` crops and
`pipeline.max_wait_ms`), so N cameras cost fewer session calls than N x frames. Each crop adds
to its object's evidence (a track in crop modes, an appearance in frame mode); the objects that
changed are searched together with their evidence-weighted mean embedding and judged by their
source's decider (`agent.decide`). Unchanged frames (the change gate) add time, not evidence.
With `cooldown_s = 0` every crop is its own object, judged and reported on its own.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from agent.config import AgentConfig
from agent.decide.link import TrackLinker, View, shows_whole
from agent.decide.objects import Decision, ObjectEvidence, SourceDecider, UnknownRegistry
from agent.decide.policy import DecisionRule, decision_rule
from agent.events import MatchEvent, RankedIdentity, TrackEvent, encode_embedding
from agent.gallery.live import LiveGallery
from agent.gallery.scoring import SearchResult
from agent.metrics import Metrics, NullMetrics
from agent.runtime.images import ArrayImage
from agent.stream.frame import Crop, Frame
from agent.stream.sources import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Shown:
    """An open object's latest crop (bbox, thumbnail) and the frame it was last seen in."""

    crop: Crop
    index: int
    media_time: float


@dataclass(frozen=True)
class _Pending:
    """An object to search and judge after this batch, with the frame it was last seen in."""

    source_id: str
    object_id: str
    frame: Frame
    stage_ms: dict[str, float]
    final: bool


class Pipeline:
    def __init__(
        self,
        cfg: AgentConfig,
        sources: list[Source],
        live: LiveGallery,
        emit: Callable[[MatchEvent], None],
        ready: threading.Event,
        metrics: Metrics | None = None,
        emit_track: Callable[[TrackEvent], None] | None = None,
        emit_decision: Callable[[MatchEvent, bytes | None], None] | None = None,
    ):
        self.cfg = cfg
        self.sources = sources
        self.live = live
        self.emit = emit
        self.emit_track = emit_track
        self.emit_decision = emit_decision  # each decision with the JPEG of its crop
        self.ready = ready
        self.metrics = metrics or NullMetrics()
        self.unknowns = UnknownRegistry(cfg.match.unknown_ttl_s)
        remember_s = cfg.track.remember_s if cfg.detect.mode != "frame" else 0.0
        self.deciders = {s.id: SourceDecider(s.id, s.cfg.match or cfg.match, self.unknowns,
                                             remember_s) for s in sources}  # fmt: skip
        self.linkers = {
            sid: TrackLinker(remember_s, cfg.track.link_views)
            for sid, d in self.deciders.items()
            if remember_s > 0 and not d.per_frame
        }
        self.top_k = max((d.cfg.top_k for d in self.deciders.values()), default=1)
        self._last: dict[str, list[tuple[Crop, np.ndarray]]] = {}  # crops of the last fresh frame
        self._shown: dict[str, _Shown] = {}  # each open object's latest crop and frame
        self._by_id = {s.id: s for s in sources}
        self._rules: dict[str, DecisionRule] = {}
        self._rules_for = -1  # LiveGallery.reloads of the gallery the rules were made for
        self._finished: set[str] = set()
        self._turn = 0

    @property
    def suppressed(self) -> int:
        return sum(d.suppressed for d in self.deciders.values())

    def rule(self, source_id: str) -> DecisionRule:
        """The source's thresholds for the loaded gallery (recomputed when it reloads)."""
        if self._rules_for != self.live.reloads:
            samples = self.live.gallery.calibration
            self._rules = {sid: decision_rule(d.cfg, samples) for sid, d in self.deciders.items()}
            self._rules_for = self.live.reloads
            for sid, rule in self._rules.items():
                log.info("source %s decisions: %s", sid, rule.as_dict())
                if rule.note:
                    log.warning("source %s: %s", sid, rule.note)
        return self._rules[source_id]

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
        """Embed the fresh frames' crops in one batch, add them to their objects' evidence, then
        search and judge every object that changed or ended."""
        vectors, times = self._embed([f for f in frames if not f.reused])
        over_time = [f for f in frames
                     if not f.reused and not self.deciders[f.source_id].per_frame]  # fmt: skip
        in_space = self._in_search_space(over_time, vectors)
        pending: dict[str, _Pending] = {}
        for frame in frames:
            source, decider = self._by_id[frame.source_id], self.deciders[frame.source_id]
            stage_ms = {"decode": frame.decode_ms, "detect": frame.detect_ms}
            if frame.reused:
                source.counters.frames_reused += 1
                seen = self._last.get(frame.source_id, [])
            else:
                source.counters.frames_processed += 1
                for reason in frame.rejected:
                    self.metrics.count(f"rejected:{reason}")
                stage_ms |= times
                seen = vectors.get(id(frame), [])
                self._last[frame.source_id] = seen
                self._track_events(frame, "new", frame.started)
            linker = self.linkers.get(frame.source_id)
            space, named = in_space.get(id(frame), (None, [None] * len(seen)))
            objects = self._objects_of(frame, seen, space, linker, pending)
            for (crop, vector), (oid, held), name in zip(seen, objects, named, strict=True):
                self._shown[oid] = _Shown(crop, frame.index, frame.media_time)
                if frame.reused and not decider.per_frame:
                    if not decider.seen(oid, frame.media_time) or held:
                        continue  # same evidence, same answer: no search
                else:
                    decider.observe(oid, vector, crop.quality, frame.media_time, name)
                    if held:
                        continue  # may yet turn out to be an earlier object: not judged yet
                pending[oid] = _Pending(frame.source_id, oid, frame, stage_ms, decider.per_frame)
            ended = tuple(oid for t in frame.ended
                          if (oid := linker.end(t) if linker else t) is not None)  # fmt: skip
            for oid in ended:
                if oid in decider.objects:
                    pending[oid] = _Pending(frame.source_id, oid, frame, stage_ms, True)
            self._track_events(frame, "end", ended)
        self._judge(list(pending.values()))

    def _in_search_space(
        self, frames: list[Frame], vectors: dict[int, list[tuple[Crop, np.ndarray]]]
    ) -> dict[int, tuple[np.ndarray, list[str | None]]]:
        """For each frame, its views in the gallery's search space and the identity each ranks
        first when searched on its own (one transform and one search for the batch; None: empty
        gallery)."""
        views = [v for f in frames for _, v in vectors.get(id(f), [])]
        if not views:
            return {}
        gallery = self.live.gallery
        space = gallery.to_search_space(np.stack(views))
        results = gallery.search_space(space, k=1, candidates=self.cfg.gallery.candidates)
        firsts = [r.identities[0].identity if r.identities else None for r in results]
        out: dict[int, tuple[np.ndarray, list[str | None]]] = {}
        start = 0
        for f in frames:
            if n := len(vectors.get(id(f), [])):
                out[id(f)] = (space[start : start + n], firsts[start : start + n])
                start += n
        return out

    def _objects_of(
        self,
        frame: Frame,
        seen: list[tuple[Crop, np.ndarray]],
        space: np.ndarray | None,
        linker: TrackLinker | None,
        pending: dict[str, _Pending],
    ) -> list[tuple[str, bool]]:
        """Each crop's object id, and whether the object is held back from judgement (a new
        track that may continue an earlier object). Fresh views (`space`: in search space) go
        to the source's linker; a track it finds to continue an earlier object is merged into
        it."""
        decider = self.deciders[frame.source_id]
        if decider.per_frame:
            return [(decider.single_id(), False) for _ in seen]
        if linker is None:
            return [(crop.object_id, False) for crop, _ in seen]
        if frame.reused:
            return [(linker.object_of(c.object_id), linker.on_probation(c.object_id))
                    for c, _ in seen]  # fmt: skip
        if space is None:
            return []
        rule = self.rule(frame.source_id)
        height, width = frame.pixels.shape[:2]
        views = [View(crop.object_id, vector, shows_whole(crop.bbox.xywh, width, height))
                 for (crop, _), vector in zip(seen, space, strict=True)]  # fmt: skip
        links = linker.observe(views, frame.media_time, rule)
        for link in links:
            if link.absorbed is not None:
                log.info("source %s: track %s is %s again (frame %d)", frame.source_id,
                         link.absorbed, link.object_id, frame.index)  # fmt: skip
                decider.merge(link.absorbed, link.object_id, frame.media_time)
                pending.pop(link.absorbed, None)
                self._shown.pop(link.absorbed, None)
                self._track_events(frame, "end", (link.absorbed,))
                self.metrics.count("tracks_linked")
        return [(link.object_id, link.pending) for link in links]

    def finish(self, source_ids: list[str] | None = None) -> None:
        """Judge the objects still open on these sources (all when None) a last time: their
        source ended or the agent is stopping."""
        final = []
        for sid, decider in self.deciders.items():
            if source_ids is not None and sid not in source_ids:
                continue
            none = Frame(sid, -1, np.zeros((1, 1, 3), np.uint8), 0.0, time.monotonic(), 0.0)
            for oid, obj in decider.objects.items():  # stand-in frame at the object's last time
                final.append(_Pending(sid, oid, replace(none, media_time=obj.last_seen), {}, True))
        self._judge(final)

    def finish_ended_sources(self) -> None:
        """Sources that just ran out of frames: their open objects are judged a last time."""
        done = [s.id for s in self.sources if s.done and s.id not in self._finished]
        if done:
            self._finished |= set(done)
            self.finish(done)

    def _embed(
        self, frames: list[Frame]
    ) -> tuple[dict[int, list[tuple[Crop, np.ndarray]]], dict[str, float]]:
        """Each fresh frame's crops with their embeddings (failed crops left out), and the
        batch's embed time in ms."""
        for frame in frames:
            self.metrics.observe("decode", frame.decode_ms / 1000)
            if self.cfg.detect.mode != "frame":
                self.metrics.observe("detect", frame.detect_ms / 1000)
        found: dict[int, list[tuple[Crop, np.ndarray]]] = {id(f): [] for f in frames}
        pairs = [(f, c) for f in frames for c in f.crops]
        if not pairs:
            return found, {}
        images = [ArrayImage(np.ascontiguousarray(c.pixels), "BGR") for _, c in pairs]
        embedder = self.live.embedder
        before = embedder.batches
        t0 = time.perf_counter()
        flip = self.live.gallery.settings.flip and self.cfg.gallery.flip_queries  # as search
        embedded = embedder.embed(images, flip=flip, cached=self.cfg.pipeline.cache_frames)
        elapsed = time.perf_counter() - t0
        self.metrics.count("inference_calls", embedder.batches - before)
        self.metrics.count("crops_embedded", int(embedded.ok.sum()))
        if embedded.errors:
            self.metrics.error("embed", len(embedded.errors))
        self.metrics.observe("embed", elapsed)
        for (frame, crop), good, vector in zip(pairs, embedded.ok, embedded.vectors, strict=True):
            if good:
                found[id(frame)].append((crop, vector))
        return found, {"embed": elapsed * 1000}

    def _judge(self, pending: list[_Pending]) -> None:
        """One search for every pending object's evidence; publish what its decider decides."""
        ready = [(p, obj) for p in pending
                 if (obj := self.deciders[p.source_id].objects.get(p.object_id)) is not None
                 and obj.total is not None]  # fmt: skip
        if ready:
            gallery = self.live.gallery
            t0 = time.perf_counter()
            space = gallery.to_search_space(np.stack([obj.vector for _, obj in ready]))
            results = gallery.search_space(space, k=self.top_k,
                                           candidates=self.cfg.gallery.candidates)  # fmt: skip
            search_ms = (time.perf_counter() - t0) * 1000
            self.metrics.observe("search", search_ms / 1000)
            for (p, obj), result, vector in zip(ready, results, space, strict=True):
                decider = self.deciders[p.source_id]
                decision = decider.judge(p.object_id, result, self.rule(p.source_id),
                                         p.frame.media_time, vector, final=p.final)  # fmt: skip
                if decision is not None:
                    self._publish(decision, obj, result, p, search_ms)
        for p in pending:
            if p.final:
                self.deciders[p.source_id].end(p.object_id)
                self._shown.pop(p.object_id, None)

    def _publish(
        self,
        decision: Decision,
        obj: ObjectEvidence,
        result: SearchResult,
        pending: _Pending,
        search_ms: float,
    ) -> None:
        frame, shown = pending.frame, self._shown[pending.object_id]
        crop = shown.crop  # and its frame: an object judged as it ends is not in `frame`
        decider = self.deciders[pending.source_id]
        event = MatchEvent(
            device_id=self.cfg.device_id,
            source_id=pending.source_id,
            frame_index=shown.index,
            frame_time_s=round(shown.media_time, 3),
            bbox=crop.bbox,
            landmarks=[(round(x, 1), round(y, 1)) for x, y in crop.landmarks]
            if crop.landmarks else None,
            identity=decision.identity,
            score=round(decision.score, 4),
            margin=round(decision.margin, 4),
            track_id=None if decider.per_frame else decision.object_id,
            unknown_id=decision.unknown_id,
            evidence_frames=decision.frames,
            candidates=[
                RankedIdentity(identity=m.identity, score=round(m.score, 4))
                for m in result.identities[: decider.cfg.top_k]
            ],
            model=self.live.gallery.model.label,
            gallery_version=self.live.loaded_version,
            embedding_f16=encode_embedding(obj.vector) if self.cfg.pipeline.embed_vectors
            else None,
            thumbnail_jpeg=self._thumbnail(crop.pixels) if self.cfg.pipeline.thumbnails
            else None,
            latency_ms=_latency(pending.stage_ms | {"search": search_ms}, frame.captured)
            if frame.index >= 0 else {},
        )  # fmt: skip
        t0 = time.perf_counter()
        self.emit(event)
        if self.emit_decision is not None:
            snapshot = None
            if self.cfg.mqtt.snapshots or self.cfg.http.enabled:
                ok, data = cv2.imencode(".jpg", crop.pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
                snapshot = data.tobytes() if ok else None
            self.emit_decision(event, snapshot)
        self.metrics.observe("publish", time.perf_counter() - t0)
        if frame.index >= 0:
            self.metrics.observe("e2e", time.monotonic() - frame.captured)
        self.metrics.count("events_produced")

    def _track_events(self, frame: Frame, phase: str, object_ids: tuple[str, ...]) -> None:
        if self.emit_track is None or not object_ids:
            return
        boxes = {c.object_id: c.bbox for c in frame.crops}
        for oid in object_ids:
            obj = self.deciders[frame.source_id].objects.get(oid)
            self.emit_track(TrackEvent(
                device_id=self.cfg.device_id, source_id=frame.source_id, track_id=oid,
                phase=phase, frame_index=frame.index, frame_time_s=round(frame.media_time, 3),
                bbox=boxes.get(oid), frames=obj.frames if obj else 0,
                identity=obj.decided if obj else None,
            ))  # fmt: skip

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

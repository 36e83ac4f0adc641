"""Objects found again after their track was lost, by what they look like.

A motion tracker cannot follow an object that leaves the view and comes back, or one hidden
longer than the tracker's memory: it ends the old track and starts a new one. The linker works
after extraction, on the embeddings in the gallery's search space, one frame at a time.

The objects of a source last seen before a new track began, and within `remember_s`, are a small
gallery; the new track's first `probe_views` whole views (boxes clear of the frame's edge: an
object coming into view shows only part of itself) are a query against it. A view's score
against an object is its similarity to the nearest of the object's recent whole views, averaged
over the new track's whole views. The track continues the best object when that score is

- at least as alike as two views of one gallery object must be (`same_object`, calibrated
  from the gallery for the target precision),
- above what this camera's own objects score against each other: every two tracks seen in the
  same frame are different objects, so their scores (the same statistic) are a sample of
  impostors of exactly this scene and model; the link must beat their 99th percentile, so a
  model that cannot tell these objects apart (people under a product embedder) links nothing,
- and clearly above the next object's (the policy's margin, over sqrt(views)).

Until then the track is pending: it is not judged, so no decision is published under an id that
is about to change.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from agent.decide.policy import DecisionRule
from agent.gallery.calibration import NO_RUNNER_UP

KEPT_VIEWS = 16  # recent whole views per object that a new view is compared with
IMPOSTOR_SAMPLES = 4000
MIN_IMPOSTORS = 20  # below this many the scene's own impostors do not raise the bar
IMPOSTOR_QUANTILE = 0.99
PROBE_SPAN = 3  # a track cut by the edge most of the time is on probation this x link_views views
EDGE_MARGIN = 0.1  # fraction of a box's side: a box nearer the frame's edge may be cut by it


@dataclass
class _Object:
    id: str
    last_seen: float
    tracks: set[str] = field(default_factory=set)  # live tracks showing it
    views: deque = field(default_factory=lambda: deque(maxlen=KEPT_VIEWS))

    def nearest(self, vector: np.ndarray) -> float:
        return float(np.max(np.stack(self.views) @ vector))


@dataclass
class _Probe:
    first_seen: float
    views: int = 0
    whole: list[np.ndarray] = field(default_factory=list)


def shows_whole(box: tuple[float, float, float, float], width: int, height: int) -> bool:
    """Whether a box (x, y, w, h) shows its object whole: clear of the frame's edges by a tenth
    of its own size, since the box of an object cut by the edge may end a little short of it
    (a detector's boxes are that loose), and a cut view scores low against the whole object."""
    x, y, w, h = box
    mx, my = max(1.0, EDGE_MARGIN * w), max(1.0, EDGE_MARGIN * h)
    return x >= mx and y >= my and x + w <= width - mx and y + h <= height - my


@dataclass(frozen=True)
class View:
    """One crop of a track in a frame: its unit vector in search space, and whether it shows
    the object whole (`shows_whole`)."""

    track_id: str
    vector: np.ndarray
    whole: bool = True


@dataclass(frozen=True)
class Link:
    """The object a view belongs to; `absorbed` is the object id its track had until this view,
    now merged into `object_id`; `pending`: not to be judged yet."""

    object_id: str
    absorbed: str | None = None
    pending: bool = False


class TrackLinker:
    """Track ids -> object ids for one source (not thread-safe)."""

    def __init__(self, remember_s: float, probe_views: int):
        self.remember_s = remember_s
        self.probe_views = max(1, probe_views)
        self.linked = 0
        self._alias: dict[str, str] = {}
        self._probes: dict[str, _Probe] = {}
        self._objects: dict[str, _Object] = {}
        self._impostors: deque[float] = deque(maxlen=IMPOSTOR_SAMPLES)

    def object_of(self, track_id: str) -> str:
        return self._alias.get(track_id, track_id)

    def on_probation(self, track_id: str) -> bool:
        """Still compared with remembered objects (not judged on its own yet)."""
        return track_id in self._probes

    def impostor_floor(self) -> float | None:
        """The score two different objects of this scene reach at most, 99 times in 100."""
        if len(self._impostors) < MIN_IMPOSTORS:
            return None
        return float(np.quantile(np.fromiter(self._impostors, float), IMPOSTOR_QUANTILE))

    def observe(self, views: list[View], media_time: float, rule: DecisionRule) -> list[Link]:
        """The views of one frame, one per track."""
        self._forget(media_time)
        objects = [self._object(v.track_id, media_time) for v in views]
        self._learn_impostors(views, objects)
        for view, obj in zip(views, objects, strict=True):
            obj.last_seen = media_time
            if view.whole:
                obj.views.append(view.vector)
        return [self._probe(v, obj, rule) for v, obj in zip(views, objects, strict=True)]

    def end(self, track_id: str) -> str | None:
        """The tracker ended a track: the id of its object when no other track shows it."""
        oid = self._alias.pop(track_id, track_id)
        self._probes.pop(track_id, None)
        obj = self._objects.get(oid)
        if obj is None:
            return oid
        obj.tracks.discard(track_id)
        return None if obj.tracks else oid

    def _object(self, track_id: str, media_time: float) -> _Object:
        oid = self._alias.get(track_id)
        if oid is None:
            oid = self._alias[track_id] = track_id
            self._objects[oid] = _Object(oid, media_time, {track_id})
            self._probes[track_id] = _Probe(media_time)
        return self._objects[oid]

    def _learn_impostors(self, views: list[View], objects: list[_Object]) -> None:
        """Objects seen in one frame are different objects: score each whole view against the
        others' recent views."""
        for view, obj in zip(views, objects, strict=True):
            if not view.whole:
                continue
            for other in objects:
                if other is not obj and other.views:
                    self._impostors.append(other.nearest(view.vector))

    def _probe(self, view: View, obj: _Object, rule: DecisionRule) -> Link:
        probe = self._probes.get(view.track_id)
        if probe is None:
            return Link(obj.id)
        earlier = [o for o in self._objects.values()
                   if o is not obj and o.views and o.last_seen < probe.first_seen]  # fmt: skip
        probe.views += 1
        if view.whole:
            probe.whole.append(view.vector)
        found = self._nearest(probe, earlier, rule) if view.whole and earlier else None
        if found is None:
            compared = len(probe.whole) >= self.probe_views
            if compared or probe.views >= PROBE_SPAN * self.probe_views or not earlier:
                del self._probes[view.track_id]
                return Link(obj.id)
            return Link(obj.id, pending=True)
        del self._probes[view.track_id]
        self._objects.pop(obj.id)  # on probation a track is its own object
        found.views.extend(obj.views)
        found.tracks |= obj.tracks
        found.last_seen = obj.last_seen
        for track in obj.tracks:
            self._alias[track] = found.id
        self.linked += 1
        return Link(found.id, absorbed=obj.id)

    def _nearest(self, probe: _Probe, earlier: list[_Object], rule: DecisionRule) -> _Object | None:
        """The remembered object the probe continues, if any."""
        scores = np.array([np.mean([o.nearest(v) for v in probe.whole]) for o in earlier])
        order = np.argsort(-scores)
        top = float(scores[order[0]])
        runner = float(scores[order[1]]) if len(order) > 1 else NO_RUNNER_UP
        bar = rule.same_object if rule.same_object is not None else rule.match_score
        floor = self.impostor_floor()
        if floor is not None:
            bar = max(bar, floor)
        if top >= bar and top - runner >= rule.min_margin / math.sqrt(len(probe.whole)):
            return earlier[int(order[0])]
        return None

    def _forget(self, media_time: float) -> None:
        stale = [oid for oid, o in self._objects.items()
                 if not o.tracks and media_time - o.last_seen > self.remember_s]  # fmt: skip
        for oid in stale:
            del self._objects[oid]

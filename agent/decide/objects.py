"""Evidence over time: one decision per object (a track or an appearance), not per frame.

Each object accumulates its crops' embeddings, weighted by crop quality (detector score times
relative sharpness). After every frame the object's mean embedding is searched and judged by the
match policy; a decision is published once the object has `min_frames` frames of evidence (or
when it ends sooner), and again only when the decision changes. The object's views must also
agree with the decision: when more than 1 - target_precision of them, each searched on its own,
name another identity first, the object sits between identities and nothing is published (the
mean of many near-identical views can lead by a margin that no single view supports).
Per source and identity, a new object within `cooldown_s` of media time of the last event for
that identity is held back, so one person standing in view gives one event, and leaving and
coming back gives a new one after the cool-down. Unknown objects get an `unknown_id` from a
registry shared by every source.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from agent.config import MatchPolicyConfig
from agent.decide.policy import UNKNOWN, DecisionRule, Label, label
from agent.gallery.calibration import NO_RUNNER_UP
from agent.gallery.scoring import SearchResult


@dataclass(frozen=True)
class Decision:
    """A decision worth publishing about one object."""

    object_id: str
    identity: str | None  # None = unknown
    score: float
    margin: float
    frames: int
    unknown_id: str | None = None


@dataclass
class ObjectEvidence:
    """What is known about one object so far."""

    id: str
    first_seen: float
    last_seen: float
    frames: int = 0  # frames the object was seen in
    views: int = 0  # of which changed enough to add an embedding
    weight: float = 0.0
    total: np.ndarray | None = None
    named: Counter[str] = field(default_factory=Counter)  # views' own top identity -> count
    published: set[str] = field(default_factory=set)  # labels published for this object
    decided: str | None = None  # the identity last published for it
    unknown_id: str | None = None

    def add(self, vector: np.ndarray, quality: float, media_time: float,
            named: str | None = None) -> None:  # fmt: skip
        if named is not None:
            self.named[named] += 1
        w = max(quality, 1e-3)
        self.total = vector * w if self.total is None else self.total + vector * w
        self.weight += w
        self.frames += 1
        self.views += 1
        self.last_seen = media_time

    def agreement(self, identity: str) -> float:
        """The share of the views searched on their own that name `identity` first (1.0 when
        none was)."""
        total = sum(self.named.values())
        return self.named[identity] / total if total else 1.0

    @property
    def vector(self) -> np.ndarray:
        assert self.total is not None
        return self.total / max(float(np.linalg.norm(self.total)), 1e-12)


class UnknownRegistry:
    """Recent unknown objects of every source: the same stranger seen again within `ttl_s`
    keeps one `unknown_id`. "The same": at least as alike as two views of one gallery object
    must be for the target precision (`same_object`, calibrated), and clearly nearer than the
    next-nearest unknown (the policy's margin)."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._seen: list[float] = []

    def identify(self, vector: np.ndarray, rule: DecisionRule, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        live = [i for i, t in enumerate(self._seen) if now - t <= self.ttl_s]
        self._ids = [self._ids[i] for i in live]
        self._vectors = [self._vectors[i] for i in live]
        self._seen = [self._seen[i] for i in live]
        if self._vectors:
            sims = np.stack(self._vectors) @ vector
            order = np.argsort(-sims)
            top = float(sims[order[0]])
            runner = float(sims[order[1]]) if len(order) > 1 else NO_RUNNER_UP
            alike = rule.same_object if rule.same_object is not None else rule.match_score
            if top >= alike and top - runner >= rule.min_margin:
                i = int(order[0])
                self._vectors[i], self._seen[i] = vector, now
                return self._ids[i]
        new = uuid.uuid4().hex[:12]
        self._ids.append(new)
        self._vectors.append(vector)
        self._seen.append(now)
        return new

    def __len__(self) -> int:
        return len(self._ids)


class SourceDecider:
    """The decisions of one source's objects."""

    def __init__(
        self,
        source_id: str,
        cfg: MatchPolicyConfig,
        unknowns: UnknownRegistry,
        remember_s: float = 0.0,
    ):
        self.source_id = source_id
        self.cfg = cfg
        self.unknowns = unknowns
        self.remember_s = remember_s
        self.objects: dict[str, ObjectEvidence] = {}
        self._ended: dict[str, ObjectEvidence] = {}  # kept remember_s: a track may continue them
        self._last_event: dict[str, float] = {}  # label -> media time of its last event
        self._single = itertools.count()
        self.suppressed = 0

    @property
    def per_frame(self) -> bool:
        """cooldown_s = 0: every frame (or crop) is judged and reported on its own."""
        return self.cfg.cooldown_s <= 0

    def single_id(self) -> str:
        return f"{self.source_id}-f{next(self._single)}"

    def observe(self, object_id: str, vector: np.ndarray, quality: float, media_time: float,
                named: str | None = None) -> ObjectEvidence:  # fmt: skip
        """One more view of an object; `named`: the identity the view alone ranks first."""
        obj = self.objects.get(object_id)
        if obj is None:
            obj = self.objects[object_id] = ObjectEvidence(object_id, media_time, media_time)
        obj.add(vector, quality, media_time, named)
        return obj

    def seen(self, object_id: str, media_time: float) -> bool:
        """A frame that showed the object unchanged (reused): time passes, evidence holds.
        True when this frame gave it enough frames to be decided, the only way an unchanged
        object's decision can change (else it need not be searched again)."""
        obj = self.objects.get(object_id)
        if obj is None:
            return False
        obj.frames += 1
        obj.last_seen = media_time
        return obj.frames == self.cfg.min_frames

    def judge(
        self,
        object_id: str,
        result: SearchResult,
        rule: DecisionRule,
        media_time: float,
        space_vector: np.ndarray | None = None,
        final: bool = False,
    ) -> Decision | None:
        """The decision to publish for an object after its latest evidence, if any."""
        obj = self.objects[object_id]
        lab = label(result, rule, obj.views)
        if lab.identity is None:
            return None
        if not (final or self.per_frame or obj.frames >= self.cfg.min_frames):
            return None
        if self.per_frame:
            return self._publish(obj, lab, media_time, rule, space_vector)
        if lab.identity != UNKNOWN and obj.agreement(lab.identity) < self.cfg.target_precision:
            return None  # its own views disagree: between identities
        if lab.identity in obj.published:
            return None
        if lab.identity == UNKNOWN and obj.published:
            return None  # an object decided once is not demoted to unknown
        last = self._last_event.get(lab.identity)
        if (
            lab.identity != UNKNOWN
            and last is not None
            and (0 <= obj.first_seen - last < self.cfg.cooldown_s or obj.first_seen <= last)
        ):
            obj.published.add(lab.identity)  # within the cool-down: held back, once
            self.suppressed += 1
            self._last_event[lab.identity] = media_time
            return None
        return self._publish(obj, lab, media_time, rule, space_vector)

    def _publish(self, obj: ObjectEvidence, lab: Label, media_time: float, rule: DecisionRule,
                 space_vector: np.ndarray | None) -> Decision | None:  # fmt: skip
        unknown_id = None
        if lab.identity == UNKNOWN:
            if not self.cfg.report_unknown:
                return None
            if obj.unknown_id is None and space_vector is not None:
                obj.unknown_id = self.unknowns.identify(space_vector, rule)
            unknown_id = obj.unknown_id
        obj.published.add(lab.identity)
        obj.decided = lab.identity or obj.decided
        self._last_event[lab.identity] = media_time
        return Decision(obj.id, lab.identity or None, lab.score, lab.margin, obj.frames,
                        unknown_id)  # fmt: skip

    def merge(self, absorbed: str, into: str, media_time: float) -> ObjectEvidence | None:
        """A new object turned out to be an earlier one (`agent.decide.link`): its evidence
        joins that object's, which is revived if it had ended. Back after more than the
        cool-down, it is a new appearance (its identity may be reported again)."""
        new = self.objects.pop(absorbed, None)
        target = self.objects.get(into)
        if target is None:
            target = self._ended.pop(into, None)
            if target is None:
                if new is not None:
                    self.objects[absorbed] = new
                return None
            self.objects[into] = target
            if new is not None and new.first_seen - target.last_seen >= self.cfg.cooldown_s:
                target.published.clear()
                target.first_seen = new.first_seen
        if new is not None:
            if new.total is not None:
                target.total = new.total if target.total is None else target.total + new.total
            target.weight += new.weight
            target.frames += new.frames
            target.views += new.views
            target.published |= new.published
            target.decided = new.decided or target.decided
        target.last_seen = max(target.last_seen, media_time)
        return target

    def end(self, object_id: str) -> ObjectEvidence | None:
        obj = self.objects.pop(object_id, None)
        if obj is not None and self.remember_s > 0:
            self._ended = {k: o for k, o in self._ended.items()
                           if obj.last_seen - o.last_seen <= self.remember_s}  # fmt: skip
            self._ended[object_id] = obj
        return obj

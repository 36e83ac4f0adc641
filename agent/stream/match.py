"""Match policy: from per-crop search results to the events worth publishing.

Per crop: the top identity is a match at or above `threshold`, unknown below
`unknown_threshold`, and ambiguous (no event) between. Per source: an identity is reported once it
was top in M of the last N frames (consensus), and at most once per `cooldown_s` of media time
(one person in front of a camera gives one event per interval, not one per frame). Media time
makes a file processed faster than real time behave like the live camera it stands for.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.config import MatchPolicyConfig
from agent.gallery.scoring import SearchResult

UNKNOWN = ""  # label of an unknown crop inside the policy; None in events


@dataclass(frozen=True)
class Decision:
    crop: int  # index of the crop in the frame
    identity: str | None  # None = unknown
    score: float


class SourcePolicy:
    """The match policy state of one source."""

    def __init__(self, cfg: MatchPolicyConfig):
        self.cfg = cfg
        self._window: deque[frozenset[str]] = deque(maxlen=cfg.consensus_n)
        self._last_event: dict[str, float] = {}
        self.suppressed = 0

    def label(self, result: SearchResult) -> tuple[str | None, float]:
        """(identity, UNKNOWN or None for ambiguous, score of the top identity)."""
        if not result.identities:
            return UNKNOWN, -1.0
        top = result.identities[0]
        if top.score >= self.cfg.threshold:
            return top.identity, top.score
        if top.score < self.cfg.unknown_threshold:
            return UNKNOWN, top.score
        return None, top.score

    def decide(self, results: list[SearchResult], media_time: float) -> list[Decision]:
        """The events one frame's crops give, after consensus and cool-down."""
        labels = [self.label(r) for r in results]
        self._window.append(frozenset(lab for lab, _ in labels if lab is not None))
        out: list[Decision] = []
        emitted: set[str] = set()
        for crop, (lab, score) in enumerate(labels):
            if lab is None or lab in emitted:
                continue
            if lab == UNKNOWN and not self.cfg.report_unknown:
                continue
            if sum(lab in frame for frame in self._window) < self.cfg.consensus_m:
                self.suppressed += 1
                continue
            last = self._last_event.get(lab)
            if last is not None and 0 <= media_time - last < self.cfg.cooldown_s:
                self.suppressed += 1
                continue
            self._last_event[lab] = media_time
            emitted.add(lab)
            out.append(Decision(crop, lab or None, score))
        return out

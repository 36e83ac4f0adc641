"""The match policy: what a search result means, with calibrated or configured thresholds.

A result is a match when its top identity scores at least `match_score` and leads the
runner-up identity by at least `min_margin`; it is unknown (identity null) when the top score is
below `unknown_below`; anything else is ambiguous and publishes nothing. `auto` thresholds come
from the gallery's calibration (`agent.gallery.calibration`), numbers in `[match]` override.

Evidence from several views of one object (a track or an appearance) is the mean of their
embeddings, whose margin wobbles less than a single view's: the margin it needs shrinks as the
standard error of a mean does, min_margin / sqrt(views). Only frames that changed enough to be
extracted count as views, so an object standing still in front of a still camera stays at one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.config import MatchPolicyConfig
from agent.gallery.calibration import NO_RUNNER_UP, Samples, thresholds
from agent.gallery.scoring import SearchResult

UNKNOWN = ""  # label of an unknown object inside the policy; null in events


@dataclass(frozen=True)
class DecisionRule:
    match_score: float
    min_margin: float
    unknown_below: float
    calibrated: bool
    note: str = ""
    expected_precision: float | None = None
    expected_recall: float | None = None
    same_object: float | None = None  # similarity of two views of one object (unknown ids)

    def as_dict(self) -> dict:
        return {
            "match_score": round(self.match_score, 4),
            "min_margin": round(self.min_margin, 4),
            "unknown_below": round(self.unknown_below, 4),
            "calibrated": self.calibrated,
            "expected_precision": self.expected_precision,
            "expected_recall": self.expected_recall,
            "same_object": None if self.same_object is None else round(self.same_object, 4),
            "note": self.note,
        }


@dataclass(frozen=True)
class Label:
    """identity: a name, UNKNOWN, or None when ambiguous."""

    identity: str | None
    score: float
    margin: float


def decision_rule(cfg: MatchPolicyConfig, samples: Samples) -> DecisionRule:
    """The thresholds `cfg` asks for, `auto` ones taken from the gallery's calibration."""
    cal = thresholds(samples, cfg.target_precision, cfg.unknown_share)
    unknown = cal.unknown_threshold if cfg.unknown_threshold == "auto" else cfg.unknown_threshold
    score = unknown if cfg.threshold == "auto" else cfg.threshold
    margin = cal.min_margin if cfg.min_margin == "auto" else cfg.min_margin
    automatic = "auto" in (cfg.threshold, cfg.min_margin, cfg.unknown_threshold)
    return DecisionRule(
        match_score=float(score),
        min_margin=float(margin),
        unknown_below=float(unknown),
        calibrated=cal.calibrated or not automatic,
        note=cal.note if automatic else "",
        expected_precision=None
        if cal.expected_precision is None
        else round(cal.expected_precision, 4),
        expected_recall=None if cal.expected_recall is None else round(cal.expected_recall, 4),
        same_object=cal.same_object,
    )


def label(result: SearchResult, rule: DecisionRule, views: int = 1) -> Label:
    """What the result says about an object whose evidence comes from `views` views."""
    if not result.identities:
        return Label(UNKNOWN, -1.0, 0.0)
    top = result.identities[0]
    runner = result.identities[1].score if len(result.identities) > 1 else NO_RUNNER_UP
    margin = top.score - runner
    if top.score < rule.unknown_below:
        return Label(UNKNOWN, top.score, margin)
    if top.score >= rule.match_score and margin >= rule.min_margin / math.sqrt(max(views, 1)):
        return Label(top.identity, top.score, margin)
    return Label(None, top.score, margin)

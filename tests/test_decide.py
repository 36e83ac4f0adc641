"""Decisions: gallery calibration, the decision rule, evidence per object, cool-down per object,
unknown ids, and the tracker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.config import MatchPolicyConfig, TrackConfig
from agent.decide.objects import SourceDecider, UnknownRegistry
from agent.decide.policy import UNKNOWN, DecisionRule, decision_rule, label
from agent.gallery.calibration import Samples, measure, thresholds
from agent.gallery.scoring import IdentityMatch, SearchResult
from agent.stream.track import AppearanceTracker, ByteTracker, iou_matrix


def clustered(n_ids: int, per_id: int, spread: float, seed: int = 0, dim: int = 32):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    x = np.repeat(centres, per_id, axis=0) + spread * rng.standard_normal((n_ids * per_id, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"id{i}" for i in range(n_ids) for _ in range(per_id)]


def result(*scores: tuple[str, float]) -> SearchResult:
    return SearchResult([], [IdentityMatch(i, s, s, s) for i, s in scores])


def test_calibration_samples_are_leave_one_out():
    vectors, ids = clustered(6, 4, 0.3)
    samples = measure(vectors, ids, identity_weight=0.0)
    assert samples.genuine.shape == (24, 3) and samples.impostor.shape == (24, 2)
    # Without the image itself, its best same-identity score is below 1 (it was left out) ...
    assert samples.genuine[:, 0].max() < 0.999
    # ... and separable clusters are right at top-1, with impostor scores below genuine ones.
    assert samples.genuine[:, 2].mean() > 0.95
    assert np.median(samples.impostor[:, 0]) < np.median(samples.genuine[:, 0])
    single = measure(vectors[:5], ["a", "a", "a", "a", "b"], identity_weight=0.9)
    assert len(single.genuine) == 4  # "b" has one image: no genuine sample of its own
    assert Samples.from_json(samples.to_json()).genuine.shape == (24, 3)


def test_thresholds_follow_the_target_precision_and_unknown_share():
    vectors, ids = clustered(12, 6, 1.6, seed=3)  # overlapping clusters: some wrong answers
    samples = measure(vectors, ids, identity_weight=0.9)
    loose, strict = thresholds(samples, 0.8, 0.2), thresholds(samples, 0.99, 0.2)
    assert loose.calibrated and strict.calibrated
    assert strict.expected_precision >= 0.99 and loose.expected_precision >= 0.8
    assert loose.expected_recall >= strict.expected_recall
    assert strict.unknown_threshold <= loose.unknown_threshold  # unknown only when surer
    wary = thresholds(samples, 0.95, 0.6)  # most objects never enrolled: demand more margin
    assert wary.min_margin >= thresholds(samples, 0.95, 0.1).min_margin
    few = thresholds(measure(vectors[:4], ids[:4], 0.9), 0.95, 0.2)
    assert not few.calibrated and "too few" in few.note


def test_near_duplicate_images_do_not_make_the_thresholds_lax():
    """Frames of one burst enrolled together: each is a near-copy of another image of its
    identity. Left in, a copy answers for its twin and every genuine sample looks easy."""
    vectors, ids = clustered(12, 6, 1.6, seed=3)
    rng = np.random.default_rng(1)
    copies = vectors + 0.02 * rng.standard_normal(vectors.shape).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    bursts = np.concatenate([vectors, copies])
    plain = thresholds(measure(vectors, ids, 0.9), 0.95, 0.2)
    burst = measure(bursts, ids + ids, 0.9)
    # each genuine sample is scored without its twin: right as often as without copies ...
    assert burst.genuine[:, 2].mean() < 0.9
    with_copies = thresholds(burst, 0.95, 0.2)
    # ... so the gallery does not promise more than the gallery without copies
    assert with_copies.expected_recall <= plain.expected_recall + 0.05
    assert with_copies.min_margin >= 0.8 * plain.min_margin
    # views for unknown ids and track links still see the nearest other image
    assert burst.views[:, 0].min() > 0.95
    assert burst.all_alike == 0 and with_copies.note == ""
    # one burst per identity: nothing but twins to learn from, and the thresholds say so
    singles = np.concatenate([vectors[::6], copies[::6]])
    single = measure(singles, ids[::6] * 2, 0.9)
    assert (single.all_alike, single.identities) == (12, 12)
    assert (
        "12 of 12 identities have only near-identical images" in thresholds(single, 0.95, 0.2).note
    )
    assert Samples.from_json(single.to_json()).all_alike == 12


def test_decision_rule_uses_numbers_that_override_the_calibration():
    vectors, ids = clustered(8, 5, 0.5)
    samples = measure(vectors, ids, 0.9)
    auto = decision_rule(MatchPolicyConfig(), samples)
    assert auto.calibrated and auto.match_score == auto.unknown_below
    fixed = decision_rule(MatchPolicyConfig(threshold=0.6, unknown_threshold=0.4, min_margin=0.05),
                          samples)  # fmt: skip
    assert (fixed.match_score, fixed.unknown_below, fixed.min_margin) == (0.6, 0.4, 0.05)
    with pytest.raises(ValueError, match="above threshold"):
        MatchPolicyConfig(threshold=0.3, unknown_threshold=0.5)


def test_label_is_match_unknown_or_ambiguous():
    rule = DecisionRule(match_score=0.5, min_margin=0.1, unknown_below=0.3, calibrated=True)
    assert label(result(("a", 0.8), ("b", 0.5)), rule).identity == "a"
    assert label(result(("a", 0.8), ("b", 0.75)), rule).identity is None  # too close: ambiguous
    assert label(result(("a", 0.2), ("b", 0.0)), rule).identity == UNKNOWN
    assert label(result(("a", 0.4), ("b", 0.0)), rule).identity is None  # between the two
    assert label(SearchResult(), rule).identity == UNKNOWN  # empty gallery


RULE = DecisionRule(match_score=0.5, min_margin=0.1, unknown_below=0.3, calibrated=True)


def test_an_object_is_decided_once_after_min_frames_and_again_only_when_it_changes():
    decider = SourceDecider("cam", MatchPolicyConfig(min_frames=3, cooldown_s=10),
                            UnknownRegistry(60))  # fmt: skip
    v = np.ones(4) / 2
    out = []
    for t in range(6):
        decider.observe("cam-1", v, 1.0, float(t))
        out.append(decider.judge("cam-1", result(("a", 0.9), ("b", 0.2)), RULE, float(t)))
    assert [d.identity if d else None for d in out] == [None, None, "a", None, None, None]
    assert out[2].frames == 3 and out[2].object_id == "cam-1"
    decider.observe("cam-1", v, 1.0, 6.0)
    changed = decider.judge("cam-1", result(("b", 0.9), ("a", 0.2)), RULE, 6.0)
    assert changed is not None and changed.identity == "b"
    # A short object is decided when it ends.
    decider.observe("cam-2", v, 1.0, 7.0)
    assert decider.judge("cam-2", result(("c", 0.9)), RULE, 7.0) is None
    assert decider.judge("cam-2", result(("c", 0.9)), RULE, 7.0, final=True).identity == "c"


def test_an_object_whose_own_views_name_other_identities_is_not_decided():
    """The mean of an object's views leads for `a`, but 2 of its 6 views, each searched alone,
    put `b` first: more than 1 - target_precision disagree, so nothing is published; an object
    whose views all say `a` is decided on the same mean."""
    policy = MatchPolicyConfig(min_frames=3, cooldown_s=0.5, target_precision=0.95)
    decider = SourceDecider("cam", policy, UnknownRegistry(60))
    v = np.ones(4) / 2
    lead = result(("a", 0.9), ("b", 0.8))
    for t, name in enumerate(["a", "b", "a", "a", "b", "a"]):
        decider.observe("split", v, 1.0, float(t), name)
        assert decider.judge("split", lead, RULE, float(t)) is None
    assert decider.objects["split"].agreement("a") == 4 / 6
    assert decider.judge("split", lead, RULE, 6.0, final=True) is None
    for t in range(3):
        decider.observe("whole", v, 1.0, 10.0 + t, "a")
    decided = decider.judge("whole", lead, RULE, 12.0)
    assert decided is not None and decided.identity == "a"


def test_cooldown_applies_per_object_and_identity():
    decider = SourceDecider("cam", MatchPolicyConfig(min_frames=1, cooldown_s=10),
                            UnknownRegistry(60))  # fmt: skip
    v = np.ones(4) / 2
    decided = []
    # The same identity in a new object 5 s later is held back; 20 s later it is news again.
    for oid, t in [("o1", 0.0), ("o2", 5.0), ("o3", 20.0)]:
        decider.observe(oid, v, 1.0, t)
        decided.append(decider.judge(oid, result(("a", 0.9)), RULE, t))
    assert [d is not None for d in decided] == [True, False, True]
    assert decider.suppressed == 1


def test_per_frame_mode_judges_every_frame_on_its_own():
    decider = SourceDecider("cam", MatchPolicyConfig(cooldown_s=0), UnknownRegistry(60))
    fired = []
    for t in range(3):
        oid = decider.single_id()
        decider.observe(oid, np.ones(4) / 2, 1.0, float(t))
        fired.append(decider.judge(oid, result(("a", 0.9)), RULE, float(t)))
        decider.end(oid)
    assert all(d is not None and d.identity == "a" for d in fired) and not decider.objects


def test_the_same_stranger_keeps_one_unknown_id_across_sources_until_the_ttl():
    registry = UnknownRegistry(ttl_s=30)
    rng = np.random.default_rng(1)
    a, b = (v / np.linalg.norm(v) for v in rng.standard_normal((2, 64)))
    near_a = a + 0.05 * rng.standard_normal(64)
    near_a /= np.linalg.norm(near_a)
    first = registry.identify(a, RULE, now=0.0)
    assert registry.identify(near_a, RULE, now=10.0) == first  # seen again, another camera
    assert registry.identify(b, RULE, now=11.0) != first  # somebody else
    assert registry.identify(a, RULE, now=100.0) != first  # forgotten after the ttl
    cam1 = SourceDecider("cam1", MatchPolicyConfig(min_frames=1), registry)
    cam1.observe("x", a, 1.0, 0.0)
    unknown = cam1.judge("x", result(("z", 0.1)), RULE, 0.0, space_vector=a)
    assert unknown.identity is None and unknown.unknown_id


def test_iou_and_tracker_follow_two_crossing_objects():
    assert iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 10, 10]]))[
        0, 0
    ] == pytest.approx(1 / 3)
    tracker = ByteTracker(TrackConfig(min_hits=2, max_lost_s=1.5), "t")
    ids_a, ids_b = set(), set()
    for f in range(40):
        a = (10 + 8 * f, 100, 40, 80)  # left to right
        b = (330 - 8 * f, 110, 40, 80)  # right to left, crossing a around frame 20
        boxes, scores = [a, b], [0.9, 0.85]
        if f in (19, 20, 21):
            boxes, scores = [a, b], [0.9, 0.3]  # b occluded: a low-score detection
        update = tracker.update(boxes, scores, f / 10)
        if 0 in update.assigned:
            ids_a.add(update.assigned[0])
        if 1 in update.assigned:
            ids_b.add(update.assigned[1])
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    ended = ()
    for f in range(40, 70):  # nothing seen: the tracks end after max_lost_s
        ended += tracker.update([], [], f / 10).ended
    assert set(ended) == ids_a | ids_b


def test_appearances_end_at_scene_cuts():
    appearances = AppearanceTracker("cam-")
    first = appearances.update(cut=True)
    same = appearances.update(cut=False)
    second = appearances.update(cut=True)
    assert first.assigned[0] == same.assigned[0] != second.assigned[0]
    assert second.ended == (first.assigned[0],) and appearances.end_all() == (second.assigned[0],)


def test_unknown_match_events_validate_against_the_published_schema():
    import json

    import jsonschema

    from agent.events import BBox, MatchEvent

    event = MatchEvent(device_id="d", source_id="s", frame_index=1, frame_time_s=0.1,
                       bbox=BBox(x=0, y=0, w=1, h=1), identity=None, score=0.1, candidates=[],
                       model="m", gallery_version=1, unknown_id="abc")  # fmt: skip
    payload = json.loads(event.to_json())
    jsonschema.validate(payload, MatchEvent.model_json_schema())
    assert payload["identity"] is None and "track_id" not in payload


def test_a_lost_track_is_found_again_by_its_colours():
    """An object that leaves and re-enters elsewhere (its predicted box is far off) continues
    its track when the frame is given: the colour histogram finds it again."""
    frame = np.zeros((240, 320, 3), np.uint8)
    red, blue = (30, 30, 220), (220, 60, 30)
    tracker = ByteTracker(TrackConfig(min_hits=2, max_lost_s=5.0), "t")
    ids = []
    for f in range(40):
        canvas = frame.copy()
        boxes = []
        if f < 10 or f >= 25:  # the red one is away for 1.5 s, then back on the other side
            x = 20 + 4 * f if f < 10 else 250 - 3 * (f - 25)
            cv2.rectangle(canvas, (x, 50), (x + 30, 110), red, -1)
            boxes.append((x, 50, 30, 60))
        cv2.rectangle(canvas, (150, 150), (190, 220), blue, -1)
        boxes.append((150, 150, 40, 70))
        update = tracker.update(boxes, [0.9] * len(boxes), f / 10, canvas)
        if f < 10 or f >= 25:
            ids.append(update.assigned.get(0))
    red_ids = {i for i in ids if i}
    assert len(red_ids) == 1, ids


def test_same_object_threshold_is_calibrated_from_views_of_gallery_objects():
    vectors, ids = clustered(10, 5, 0.8, seed=4)
    samples = measure(vectors, ids, identity_weight=0.9)
    assert samples.views.shape == (50, 2)
    same, other = samples.views[:, 0], samples.views[:, 1]
    t = thresholds(samples, 0.95, 0.2).same_object
    assert t is not None and np.median(other) < t <= same.max()
    assert (same >= t).mean() > (other >= t).mean()
    assert Samples.from_json(samples.to_json()).views.shape == (50, 2)
    # an unknown registry uses it: views closer than that are the same stranger
    rule = DecisionRule(0.0, 0.05, -1.0, True, same_object=t)
    registry = UnknownRegistry(60)
    first = registry.identify(vectors[0], rule, now=0.0)
    assert registry.identify(vectors[1], rule, now=1.0) == first  # another view of id0
    assert registry.identify(vectors[5], rule, now=2.0) != first  # id1

"""Tracks found again by their embeddings (agent.decide.link) and the decider's merge."""

from __future__ import annotations

import numpy as np

from agent.config import MatchPolicyConfig
from agent.decide.link import PROBE_SPAN, TrackLinker, View, shows_whole
from agent.decide.objects import SourceDecider, UnknownRegistry
from agent.decide.policy import DecisionRule
from agent.gallery.scoring import IdentityMatch, SearchResult

RULE = DecisionRule(match_score=0.6, min_margin=0.1, unknown_below=0.6, calibrated=True)


def unit(rng: np.random.Generator, base: np.ndarray | None = None, noise: float = 0.1):
    v = rng.standard_normal(64) if base is None else base + noise * rng.standard_normal(64)
    return v / np.linalg.norm(v)


def see(linker: TrackLinker, t: float, *views: tuple[str, np.ndarray] | View):
    """One frame's views; plain (track, vector) pairs are whole views."""
    return linker.observe([v if isinstance(v, View) else View(*v) for v in views], t, RULE)


def test_a_track_that_comes_back_continues_its_object_and_a_new_one_does_not():
    rng = np.random.default_rng(0)
    a, b, c = unit(rng), unit(rng), unit(rng)
    linker = TrackLinker(remember_s=30, probe_views=5)
    for t in range(5):  # two objects seen together
        links = see(linker, t, ("t1", unit(rng, a)), ("t2", unit(rng, b)))
        assert [link.object_id for link in links] == ["t1", "t2"]
    assert linker.end("t1") == "t1"  # t1 leaves; t2 is lost but its track lives on
    # A new track coming into view (cut by the frame's edge) is pending, not yet compared;
    # whole, it looks like t1 and continues it.
    (cut,) = see(linker, 10, View("t3", unit(rng, c), whole=False))
    assert cut.pending and cut.object_id == "t3"
    (back,) = see(linker, 11, ("t3", unit(rng, a)))
    assert back.object_id == "t1" and back.absorbed == "t3" and not back.pending
    assert linker.object_of("t3") == "t1" and not linker.on_probation("t3")
    # Something never seen before stays itself once its probation is over.
    links = [see(linker, 12 + k, ("t4", unit(rng, c)))[0] for k in range(5)]
    assert all(link.object_id == "t4" and link.absorbed is None for link in links)
    assert [link.pending for link in links] == [True] * 4 + [False]
    assert linker.linked == 1
    assert linker.end("t3") == "t1"


def test_a_box_near_the_frame_edge_may_be_cut_and_is_not_whole():
    assert shows_whole((100, 100, 50, 100), 640, 480)
    assert not shows_whole((3, 100, 50, 100), 640, 480)  # a detector's loose box of a cut object
    assert not shows_whole((100, 100, 50, 100), 640, 205)  # 5 px above the bottom edge
    assert shows_whole((6, 100, 50, 100), 640, 480)  # a tenth of its width clear of the edge


def test_probation_counts_whole_views_and_ends_for_a_track_that_stays_cut():
    rng = np.random.default_rng(4)
    a, c = unit(rng), unit(rng)
    linker = TrackLinker(remember_s=30, probe_views=3)
    see(linker, 0, ("t1", unit(rng, a)))
    linker.end("t1")
    # Coming into view slowly: more cut views than probe_views, still compared afterwards.
    cut = [see(linker, 1 + k, View("t2", unit(rng, c), whole=False))[0] for k in range(5)]
    assert all(link.pending for link in cut)
    (back,) = see(linker, 6, ("t2", unit(rng, a)))
    assert back.absorbed == "t2" and back.object_id == "t1"
    # One that is never seen whole ends its probation after PROBE_SPAN x probe_views views.
    linker.end("t2")
    links = [see(linker, 10 + k, View("t3", unit(rng, c), whole=False))[0]
             for k in range(PROBE_SPAN * 3)]  # fmt: skip
    assert [link.pending for link in links] == [True] * (PROBE_SPAN * 3 - 1) + [False]
    assert links[-1].object_id == "t3"


def test_co_visible_and_forgotten_objects_are_never_candidates():
    rng = np.random.default_rng(1)
    a = unit(rng)
    linker = TrackLinker(remember_s=5, probe_views=3)
    # t1 and t2 are seen together: two objects, however alike.
    for t in range(2):
        links = see(linker, t, ("t1", unit(rng, a)), ("t2", unit(rng, a)))
        assert all(link.absorbed is None for link in links)
    linker.end("t1")
    linker.end("t2")
    # Beyond remember_s both are forgotten: a look-alike starts a new object, not pending.
    (late,) = see(linker, 20, ("t3", unit(rng, a)))
    assert late.object_id == "t3" and late.absorbed is None and not late.pending


def test_two_remembered_look_alikes_are_not_guessed_between():
    rng = np.random.default_rng(2)
    a = unit(rng)
    linker = TrackLinker(remember_s=30, probe_views=3)
    see(linker, 0, ("t1", unit(rng, a, 0.05)), ("t2", unit(rng, a, 0.05)))
    linker.end("t1")
    linker.end("t2")
    links = [see(linker, 5 + k, ("t3", unit(rng, a, 0.05)))[0] for k in range(3)]
    assert all(link.absorbed is None for link in links) and links[-1].object_id == "t3"


def test_a_scene_whose_objects_all_look_alike_raises_the_bar():
    """Objects seen together are different: when the model scores them as alike as a track
    that comes back, the linker does not guess (people under a product embedder)."""
    rng = np.random.default_rng(3)

    def scene(looks: list[np.ndarray]) -> list:
        """Four objects seen together for 10 frames; then p0 leaves and, while the others stay
        in view, p9 comes into view looking like p0."""
        linker = TrackLinker(remember_s=30, probe_views=3)
        assert linker.impostor_floor() is None
        for t in range(10):
            see(linker, t, *((f"p{i}", unit(rng, looks[i], 0.05)) for i in range(4)))
        linker.end("p0")
        others = [(f"p{i}", unit(rng, looks[i], 0.05)) for i in range(1, 4)]
        links = [see(linker, 10 + k, ("p9", unit(rng, looks[0], 0.05)), *others)[0]
                 for k in range(3)]  # fmt: skip
        return linker, links

    person = unit(rng)
    crowd, links = scene([person] * 4)  # the model sees four of the same
    assert crowd.impostor_floor() > RULE.match_score
    assert all(link.absorbed is None for link in links) and links[-1].object_id == "p9"
    distinct, links = scene([unit(rng) for _ in range(4)])
    assert distinct.impostor_floor() < RULE.match_score
    assert links[0].absorbed == "p9" and links[0].object_id == "p0"


def result(*pairs: tuple[str, float]) -> SearchResult:
    return SearchResult([], [IdentityMatch(i, s, s, s) for i, s in pairs])


def test_a_continued_object_reports_again_only_after_the_cooldown():
    decider = SourceDecider("cam", MatchPolicyConfig(min_frames=1, cooldown_s=10),
                            UnknownRegistry(60), remember_s=30)  # fmt: skip
    v = np.ones(4) / 2
    decider.observe("t1", v, 1.0, 0.0)
    assert decider.judge("t1", result(("a", 0.9)), RULE, 0.0).identity == "a"
    decider.end("t1")
    # Back 3 s later as t2: the same appearance, no second event.
    decider.observe("t2", v, 1.0, 3.0)
    merged = decider.merge("t2", "t1", 3.0)
    assert merged is not None and merged.frames == 2 and "t2" not in decider.objects
    assert decider.judge("t1", result(("a", 0.9)), RULE, 3.0) is None
    decider.end("t1")
    # Back 20 s after it was last seen: a new appearance of the same object, reported again.
    decider.observe("t3", v, 1.0, 23.0)
    decider.merge("t3", "t1", 23.0)
    again = decider.judge("t1", result(("a", 0.9)), RULE, 23.0)
    assert again is not None and again.identity == "a" and again.object_id == "t1"

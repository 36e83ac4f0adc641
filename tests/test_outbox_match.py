"""Outbox durability and bounds; match policy thresholds, cool-down and consensus."""

from __future__ import annotations

import time

from agent.config import MatchPolicyConfig
from agent.gallery.scoring import IdentityMatch, SearchResult
from agent.publish.outbox import Outbox
from agent.stream.match import SourcePolicy


def test_outbox_survives_reopen_in_order_and_acks_remove(tmp_path):
    box = Outbox(tmp_path / "o.db")
    seqs = [box.put(f"e{i}", "t/match", f"p{i}".encode()) for i in range(5)]
    box.ack(seqs[1])
    box.close()
    again = Outbox(tmp_path / "o.db")
    assert len(again) == 4
    items = again.pending()
    assert [i.event_id for i in items] == ["e0", "e2", "e3", "e4"]
    assert [i.payload for i in items][:2] == [b"p0", b"p2"]
    assert [i.event_id for i in again.pending(after=items[1].seq)] == ["e3", "e4"]
    assert again.dropped == 0


def test_outbox_bounds_drop_oldest_and_newest_are_counted(tmp_path):
    box = Outbox(tmp_path / "a.db", max_events=3)
    for i in range(5):
        box.put(f"e{i}", "t", b"x")
    assert [i.event_id for i in box.pending()] == ["e2", "e3", "e4"]
    assert box.dropped == 2
    newest = Outbox(tmp_path / "b.db", max_events=2, policy="drop_newest")
    results = [newest.put(f"e{i}", "t", b"x") for i in range(4)]
    assert results[2] is None and results[3] is None
    assert [i.event_id for i in newest.pending()] == ["e0", "e1"] and newest.dropped == 2


def test_outbox_expires_old_events(tmp_path):
    box = Outbox(tmp_path / "o.db", max_age_s=0.2)
    box.put("old", "t", b"x")
    time.sleep(0.3)
    box.put("new", "t", b"x")
    assert [i.event_id for i in box.pending()] == ["new"] and box.dropped == 1


def result(identity: str, score: float) -> SearchResult:
    return SearchResult([], [IdentityMatch(identity, score, score, score)])


def test_policy_thresholds_give_match_unknown_or_nothing():
    policy = SourcePolicy(MatchPolicyConfig(threshold=0.6, unknown_threshold=0.4, cooldown_s=0))
    assert [(d.identity, d.score) for d in policy.decide([result("a", 0.7)], 0)] == [("a", 0.7)]
    assert policy.decide([result("a", 0.5)], 1) == []  # ambiguous
    unknown = policy.decide([result("a", 0.3)], 2)
    assert len(unknown) == 1 and unknown[0].identity is None
    quiet = SourcePolicy(MatchPolicyConfig(unknown_threshold=0.4, report_unknown=False))
    assert quiet.decide([result("a", 0.3)], 0) == []
    assert len(policy.decide([SearchResult()], 3)) == 1  # empty gallery: unknown


def test_cooldown_gives_one_event_per_interval_per_identity():
    policy = SourcePolicy(MatchPolicyConfig(threshold=0.5, cooldown_s=10))
    emitted = [t for t in range(30) if policy.decide([result("a", 0.9)], float(t))]
    assert emitted == [0, 10, 20]
    assert policy.decide([result("b", 0.9)], 29.0)  # another identity is not held back
    assert policy.suppressed == 27


def test_consensus_needs_m_of_last_n_frames():
    policy = SourcePolicy(
        MatchPolicyConfig(threshold=0.5, cooldown_s=0, consensus_m=3, consensus_n=4)
    )
    seq = ["a", "b", "a", "a", "b", "a"]
    fired = [i for i, ident in enumerate(seq) if policy.decide([result(ident, 0.9)], float(i))]
    assert fired == [3, 5]  # frames where 'a' is top in 3 of the last 4

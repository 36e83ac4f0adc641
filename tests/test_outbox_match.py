"""Outbox durability and bounds."""

from __future__ import annotations

import time

from agent.publish.outbox import Outbox


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

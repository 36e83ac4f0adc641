"""Outbox durability and bounds."""

from __future__ import annotations

import json
import os
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


def test_outbox_list_and_purge_commands(tmp_path):
    """What an earlier run left (and the dead letters) can be seen and dropped by a person."""
    from tests.test_cli import one_error_line, run

    state = tmp_path / "state"
    box = Outbox(state / "outbox.db")
    for i in range(3):
        box.put(f"e{i}", "agent/x/match", b"{}")
    box.dead_letter(box.pending()[0].seq, "too large for the broker")
    box.close()
    env = {**os.environ, "AGENT_STATE_DIR": str(state)}
    listed = json.loads(run("outbox", "list", "--json", env=env).stdout)
    assert listed["total"] == 2 and [e["event_id"] for e in listed["events"]] == ["e1", "e2"]
    dead = json.loads(run("outbox", "list", "--dead", "--json", env=env).stdout)
    assert dead["events"][0]["reason"] == "too large for the broker"
    assert "--yes" in one_error_line(run("outbox", "purge", "--pending", env=env))
    out = run("outbox", "purge", "--pending", "--dead", "--yes", env=env)
    assert out.returncode == 0 and "purged 3" in out.stdout
    assert json.loads(run("outbox", "list", "--json", env=env).stdout)["total"] == 0

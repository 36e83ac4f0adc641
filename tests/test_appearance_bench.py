"""The labelled-video yardstick (tools/bench_appearances.py): its scoring on a worked case."""

from __future__ import annotations

import sys

import numpy as np

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import bench_appearances


def test_events_are_scored_against_the_appearance_on_screen():
    appearances = [("cup1", 0, 9, True), ("cow4", 10, 19, False), ("pear2", 20, 29, True),
                   ("dog3", 30, 39, True)]  # fmt: skip
    events = [(3, "cup1"), (15, "cow3"), (22, "apple1"), (28, "pear2")]
    scored = bench_appearances.score(appearances, events)
    # cup1 right; the never-enrolled cow4 named (wrong); pear2 named wrongly, then rightly;
    # dog3 never named
    assert scored == {"appearances": 4, "events": 4, "right": 2, "decided": 2}
    assert bench_appearances.score(appearances, [])["decided"] == 1  # only the stranger


def test_pan_zoom_frames_stay_inside_the_photo():
    photo = np.random.default_rng(0).integers(0, 255, (300, 500, 3), np.uint8)
    frames = bench_appearances.pan_zoom(photo, 12, np.random.default_rng(1))
    assert len(frames) == 12
    assert all(f.shape == (bench_appearances.H, bench_appearances.W, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # it moves

"""The tracker's yardstick (tools/make_tracks.py, tools/bench_tracker.py): the metric on cases
worked by hand, and a generated sequence scored end to end."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys

import cv2
import numpy as np

from tests.conftest import REPO, shared_file

sys.path.insert(0, str(REPO / "tools"))
import bench_tracker


def test_idf1_and_switches_of_a_fragmented_object():
    # one true object over 10 frames, tracked as "a" for 6 frames, then "b" for 4
    pairs = [(f, 1, "a" if f < 6 else "b") for f in range(10)]
    score, switches = bench_tracker.idf1(pairs, n_truth=10, n_pred=10)
    assert switches == 1
    assert score == 0.6  # only one of the two tracks maps to the object: 2 * 6 / (10 + 10)
    # the same frames under one id, with two frames of the truth missed by the tracker
    score, switches = bench_tracker.idf1([(f, 1, "a") for f in range(8)], 10, 8)
    assert switches == 0
    assert round(score, 4) == round(16 / 18, 4)


def test_a_generated_sequence_has_its_truth_and_is_tracked(tmp_path):
    shared_file("data/frames/real_video/vtest.avi")
    shared_file("data/retrieval/gallery")
    make = [sys.executable, str(REPO / "tools/make_tracks.py"), str(tmp_path)]
    subprocess.run([*make, "--sequences", "1", "--frames", "40"], check=True, capture_output=True)
    video = cv2.VideoCapture(str(tmp_path / "seq_00.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    with open(tmp_path / "seq_00.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    objects = {r["object"] for r in rows}
    assert len(objects) >= 4
    for r in rows:
        x, y, w, h = (int(r[k]) for k in ("x", "y", "w", "h"))
        assert min(x, y) >= 0 and x + w <= 768 and y + h <= 576
        assert 0.0 <= float(r["visible"]) <= 1.0
    args = argparse.Namespace(drop=0.1, false_positives=0.5, jitter=0.05, set={}, oracle=False,
                              appearance=True)  # fmt: skip
    scored = bench_tracker.run(tmp_path / "seq_00.csv", args, np.random.default_rng(0), None)
    args.oracle = True
    ceiling = bench_tracker.run(tmp_path / "seq_00.csv", args, np.random.default_rng(0), None)
    assert 0.6 < scored["idf1"] <= ceiling["idf1"] <= 1.0
    assert ceiling["id_switches"] <= scored["id_switches"]

"""Tracks on a real street video, with the real person detector and re-id model: people whom
the motion tracker loses and finds as new tracks continue their earlier track (by embedding,
agent.decide.link), and nothing is published under a track id that is then merged away."""

from __future__ import annotations

import collections
import re
import subprocess
import sys

from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.conftest import shared_file

AUTO = {"cooldown_s": 10.0, "threshold": "auto", "unknown_threshold": "auto", "min_margin": "auto"}


def test_people_found_again_keep_their_track_id(tmp_path, shared_models):
    gallery = tmp_path / "gallery"
    subprocess.run([sys.executable, "-m", "agent", "-q", "enroll", str(EXAMPLES / "gallery"),
                    "--model", "osnet_x0_25", "-g", str(gallery)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    detect = {"mode": "onnx", "onnx_model": str(shared_models / "ssdlite_mobilenetv2_person.onnx"),
              "onnx_layout": "ssd", "onnx_input_size": 300, "score_threshold": 0.5,
              "min_size": 16, "change_threshold": 0.0}  # fmt: skip
    config = agent_config(tmp_path / "state", gallery, match=AUTO, detect=detect)
    clip = shared_file("data/frames/real_video/vtest.avi")
    agent = AgentProcess(tmp_path, config, "--fast", "-s", f"cam={clip}")
    assert agent.wait(timeout=240) == 0, agent.log()
    log = agent.stderr_path.read_text(errors="replace")
    merged = dict(re.findall(r"track (cam-\d+) is (cam-\d+) again", log))
    metrics = agent.status()["metrics"]
    assert merged and metrics["tracks_linked"] == len(merged)
    events = [e for e in agent.events if e.get("type") == "match"]
    tracks = {e["track_id"] for e in events}
    assert events and not tracks & set(merged)  # pending tracks were never published
    # One event per track and decision; the same again only as a new appearance (back after
    # the cool-down).
    decisions = collections.Counter((e["track_id"], e.get("identity")) for e in events)
    assert max(decisions.values()) <= 2, decisions

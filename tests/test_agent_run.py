"""`agent run` as a user runs it, with no broker: JSON lines on stdout, status, sd_notify, live
gallery changes, bad input that must not stop the agent."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys

import cv2
import jsonschema
import numpy as np

from agent.events import MatchEvent
from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.conftest import write_image
from tests.test_cli import one_error_line, run

CLIP = EXAMPLES / "camera.mp4"


def truth() -> dict[int, str]:
    with open(EXAMPLES / "camera_gt.csv", newline="") as fh:
        return {int(r["frame"]): r["identity"] for r in csv.DictReader(fh)}


def test_run_prints_schema_valid_events_and_leaves_nothing_in_the_outbox(gallery, tmp_path):
    state = tmp_path / "state"
    agent = AgentProcess(tmp_path, agent_config(state, gallery), "--fast", "-s", f"cam={CLIP}")
    assert agent.wait() == 0, agent.log()
    schema = MatchEvent.model_json_schema()
    for event in agent.events:
        jsonschema.validate(event, schema)
    assert len(agent.events) == 200  # cool-down 0, thresholds 0: one event per frame
    assert len(set(agent.event_ids())) == 200
    gt = truth()
    right = sum(e["identity"] == gt[e["frame_index"]] for e in agent.events)
    assert right / 200 >= 0.9, right
    record = agent.status()
    m = record["metrics"]
    assert record["status"]["state"] == "stopped"
    assert m["outbox_backlog"] == 0 and m["events_produced"] == 200
    assert m["sources"]["cam"]["frames_processed"] == 200
    assert {"decode", "embed", "search", "e2e"} <= set(m["latency_ms"])
    out = run("-c", str(agent.config_path), "status")
    assert out.returncode == 3 and "not running" in out.stderr


def test_default_policy_decides_each_appearance_once_and_right(gallery, tmp_path):
    """The default config on the labelled clip: 8 appearances (a product each, scene cuts in
    between), calibrated thresholds: one event per appearance, the right identity, none wrong."""
    auto = {"cooldown_s": 10.0, "threshold": "auto", "unknown_threshold": "auto",
            "min_margin": "auto"}  # fmt: skip
    config = agent_config(
        tmp_path / "state", gallery, match=auto, detect={"change_threshold": 0.02}
    )
    agent = AgentProcess(tmp_path, config, "--fast", "-s", f"cam={CLIP}")
    assert agent.wait() == 0, agent.log()
    gt = truth()
    decided = [(e["track_id"], e["identity"], gt[e["frame_index"]]) for e in agent.events]
    assert all(identity == right for _, identity, right in decided), decided
    assert len(decided) == 8 and len({t for t, _, _ in decided}) == 8  # one per appearance
    assert all(e["evidence_frames"] >= 3 and e["margin"] > 0 for e in agent.events)


def test_an_appearance_judged_as_it_ends_is_reported_at_its_last_frame(gallery, tmp_path):
    """With more evidence asked for than an appearance has, each is decided when the scene
    cut ends it; the event names the appearance's last frame, not the next scene's first."""
    policy = {"cooldown_s": 10.0, "min_frames": 1000, "threshold": "auto",
              "unknown_threshold": "auto", "min_margin": "auto"}  # fmt: skip
    config = agent_config(tmp_path / "state", gallery, match=policy,
                          detect={"change_threshold": 0.02})  # fmt: skip
    agent = AgentProcess(tmp_path, config, "--fast", "-s", f"cam={CLIP}")
    assert agent.wait() == 0, agent.log()
    gt = truth()
    named = [(e["frame_index"], e["identity"]) for e in agent.events if e["identity"]]
    assert len(named) >= 6, agent.events
    for frame, identity in named:
        assert gt[frame] == identity, (frame, identity)
        assert gt.get(frame + 1) != identity  # the last frame of its appearance


def test_change_gate_reuses_unchanged_frames(gallery, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(CLIP))
    ok, frame = capture.read()
    capture.release()
    assert ok
    for i in range(6):
        write_image(folder / f"f{i}.png", frame)  # a camera looking at a still scene
    config = agent_config(tmp_path / "state", gallery, detect={"change_threshold": 0.02})
    agent = AgentProcess(tmp_path, config, "-s", f"still={folder}")
    assert agent.wait() == 0, agent.log()
    src = agent.status()["metrics"]["sources"]["still"]
    assert src["frames_processed"] == 1 and src["frames_reused"] == 5
    assert len(agent.events) == 6 and len({e["identity"] for e in agent.events}) == 1


def test_corrupt_image_is_reported_and_skipped(gallery, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(["Oatly-Oat-Milk", "Arla-Sour-Cream"]):
        src = sorted((EXAMPLES / "gallery" / name).iterdir())[0]
        (folder / f"{i}.jpg").write_bytes(src.read_bytes())
    (folder / "1b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    agent = AgentProcess(tmp_path, agent_config(tmp_path / "state", gallery), "-s", f"d={folder}")
    assert agent.wait() == 0, agent.log()
    assert [e["identity"] for e in agent.events] == ["Oatly-Oat-Milk", "Arla-Sour-Cream"]
    m = agent.status()["metrics"]
    assert m["sources"]["d"]["frames_corrupt"] == 1 and m["errors"]["corrupt_frames"] == 1
    assert "not a readable image" in agent.log()


def test_sigterm_stops_cleanly_and_status_reports_while_running(gallery, tmp_path):
    config = agent_config(tmp_path / "state", gallery)
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop", "-s", f"cam={CLIP}")
    agent.wait_status(lambda r: r["metrics"]["events_produced"] >= 5)
    out = run("-c", str(agent.config_path), "status", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["running"] and record["metrics"]["sources"]["cam"]["health"] == "ok"
    assert record["metrics"]["provider"] == "cpu" and record["metrics"]["rss_mb"] > 0
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert agent.status()["status"]["state"] == "stopped"
    assert agent.status()["metrics"]["outbox_backlog"] == 0


def test_gallery_changes_are_picked_up_without_restart(gallery, tmp_path):
    config = agent_config(tmp_path / "state", gallery, pipeline={"gallery_poll_s": 0.2})
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop", "-s", f"cam={CLIP}")
    before = agent.wait_status(lambda r: r["metrics"]["events_produced"] >= 1)
    version = before["metrics"]["gallery_version"]
    out = run("gallery", "remove", "Oatly-Oat-Milk", "-g", str(gallery))
    assert out.returncode == 0, out.stderr
    after = agent.wait_status(lambda r: r["metrics"]["gallery_version"] > version)
    assert after["metrics"]["gallery_reloads"] == 1 and after["metrics"]["gallery_size"] == 35
    agent.signal(signal.SIGHUP)
    agent.wait_status(lambda r: r["metrics"]["gallery_reloads"] == 2)
    assert agent.stop() == 0
    late = [e for e in agent.events if e["gallery_version"] > version]
    assert late and all(e["identity"] != "Oatly-Oat-Milk" for e in late)


def test_sd_notify_ready_watchdog_and_stopping(gallery, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    agent = AgentProcess(tmp_path, agent_config(tmp_path / "state", gallery),
                         "--realtime", "--loop", "-s", f"cam={CLIP}", env=env)  # fmt: skip
    seen: list[str] = []
    while sum("WATCHDOG=1" in m for m in seen) < 3:
        seen.append(sock.recv(4096).decode())
    agent.signal(signal.SIGTERM)
    while not any("STOPPING=1" in m for m in seen):
        seen.append(sock.recv(4096).decode())
    assert agent.wait() == 0
    assert "READY=1" in seen[0]
    sock.close()


def test_bad_config_and_missing_gallery_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sources]]\nid = "a b"\nuri = "x.mp4"\n')
    assert "sources.0.id" in one_error_line(run("-c", str(bad), "run"))
    assert "no sources" in one_error_line(run("run", "-g", str(tmp_path)))
    line = one_error_line(run("run", "-g", str(tmp_path / "none"), "-s", str(CLIP)))
    assert "no gallery" in line


def test_events_schema_command_prints_every_payload():
    out = run("events", "schema")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert set(data["payloads"]) == {"match", "status", "metrics", "command-result", "track"}
    assert "event_id" in data["payloads"]["match"]["properties"]
    assert one_error_line(run("events", "schema", "nope")).startswith("error: unknown payload")


def test_embedding_and_thumbnail_in_events(gallery, tmp_path):
    config = agent_config(tmp_path / "state", gallery,
                          pipeline={"embed_vectors": True, "thumbnails": True})  # fmt: skip
    folder = tmp_path / "one"
    folder.mkdir()
    src = sorted((EXAMPLES / "gallery" / "Oatly-Oat-Milk").iterdir())[0]
    (folder / "q.jpg").write_bytes(src.read_bytes())
    agent = AgentProcess(tmp_path, config, "-s", f"d={folder}")
    assert agent.wait() == 0, agent.log()
    (event,) = agent.events
    from agent.events import decode_embedding

    vector = decode_embedding(event["embedding_f16"])
    assert vector.shape == (1280,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-2
    import base64

    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(event["thumbnail_jpeg"]), np.uint8), 1)
    assert max(thumb.shape[:2]) == 128


def test_module_entry_runs_without_a_gallery_flag_error_is_clean():
    out = subprocess.run([sys.executable, "-m", "agent", "run", "--broker", "h:x", "-s", "a.mp4"],
                         capture_output=True, text=True, env={**os.environ})  # fmt: skip
    assert out.returncode != 0 and "port must be a number" in out.stderr


def test_doctor_passes_a_good_setup_and_names_what_to_fix(gallery, tmp_path):
    from tests.agent_support import tomli_w

    good = agent_config(tmp_path / "state", gallery,
                        sources=[{"id": "cam", "uri": str(CLIP)}])  # fmt: skip
    path = tmp_path / "good.toml"
    path.write_text(tomli_w.dumps(good))
    out = run("-c", str(path), "doctor", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["source cam"]["level"] == "ok" and "480x360" in checks["source cam"]["detail"]
    assert checks["gallery"]["level"] == "ok" and "40 vectors" in checks["gallery"]["detail"]
    assert "TensorRT" in checks["gpu"]["detail"] and checks["opencv"]["level"] == "ok"
    bad = {**good, "mqtt": {"host": "127.0.0.1", "port": 1},
           "sources": [{"id": "gone", "uri": str(tmp_path / "missing.mp4")},
                       {"id": "csi", "uri": "videotestsrc num-buffers=5 ! appsink"}]}  # fmt: skip
    path.write_text(tomli_w.dumps(bad))
    out = run("-c", str(path), "doctor", "--json")
    assert out.returncode == 1
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["broker"]["level"] == "fail" and checks["source gone"]["level"] == "fail"
    if "GStreamer: no" in checks["opencv"]["detail"]:  # pip's opencv-python-headless
        assert checks["opencv"]["level"] == "fail" and "csi" in checks["opencv"]["detail"]
    assert checks["source gone"]["fix"] == "check the path"


def test_a_command_that_fails_on_the_filesystem_is_answered_not_fatal(gallery, tmp_path):
    """An OSError inside a command (here: where enrolled images are kept is a file, so the
    image cannot be saved) is a refused command with the reason, counted, never an exception."""
    import base64

    from agent.commands import Commands
    from agent.config import AgentConfig
    from agent.gallery.live import LiveGallery
    from agent.metrics import Metrics

    state = tmp_path / "state"
    state.mkdir()
    (state / "enrolled").write_text("")  # not a directory
    cfg = AgentConfig(state_dir=state)
    metrics = Metrics()
    live = LiveGallery(cfg, gallery)
    try:
        jpeg = sorted((EXAMPLES / "gallery" / "Oatly-Oat-Milk").iterdir())[0].read_bytes()
        payload = json.dumps({"identity": "x", "image_jpeg": base64.b64encode(jpeg).decode()})
        result = Commands(cfg, live, metrics).run("enroll", payload.encode())
    finally:
        live.close()
    assert result.ok is False and "Error" in result.message
    assert metrics.errors == {"commands": 1}


def test_exit_codes_tell_the_service_manager_what_happened(gallery, tmp_path):
    """A video file that cannot be read is a config error (exit 2, not restarted); every source
    having failed is exit 1 (restarted); a closed stdout is exit 1 with the events kept."""
    import tomli_w

    config = agent_config(tmp_path / "state", gallery)
    path = tmp_path / "agent.toml"
    path.write_text(tomli_w.dumps(config))
    (tmp_path / "text.mp4").write_text("not a video")
    for bad in (tmp_path / "text.mp4", tmp_path / "missing.mp4"):
        out = run("-q", "-c", str(path), "run", "-s", f"cam={bad}")
        assert out.returncode == 2 and "error: source cam: " in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    failing = dict(config, sources=[{"id": "cam", "uri": "rtsp://u:pw@127.0.0.1:1/x",
                                     "max_retries": 2, "reconnect_min_s": 0.05,
                                     "reconnect_max_s": 0.1}])  # fmt: skip
    path.write_text(tomli_w.dumps(failing))
    out = run("-q", "-c", str(path), "run")
    assert out.returncode == 1 and "every source failed" in out.stderr and "pw" not in out.stderr
    path.write_text(tomli_w.dumps(config))
    command = [sys.executable, "-m", "agent", "-q", "-c", str(path), "run", "--fast"]
    agent = subprocess.Popen([*command, "-s", f"cam={CLIP}"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    agent.stdout.readline()
    agent.stdout.close()  # `agent run | head -1`
    assert agent.wait(60) == 1

"""Rough edges a new user hit from a fresh clone (issue 15), each pinned by a test."""

from __future__ import annotations

import pytest

from agent.cli import global_flags_first
from agent.config import parse_broker
from agent.errors import ConfigError
from tests.agent_support import EXAMPLES
from tests.mqtt_support import free_port
from tests.test_cli import one_error_line, run


def test_config_names_survive_in_errors_and_doctor(tmp_path):
    empty = tmp_path / "agent.toml"
    empty.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    line = one_error_line(run("-c", str(empty), "run"))
    assert "[[sources]]" in line
    doctor = run("-c", str(empty), "doctor")
    assert "[[sources]]" in doctor.stdout


def test_logging_flags_go_anywhere(tmp_path):
    assert global_flags_first(["enroll", "DIR", "-q", "-g", "x"]) == ["-q", "enroll", "DIR",
                                                                      "-g", "x"]  # fmt: skip
    assert global_flags_first(["search", "--", "-q"]) == ["search", "--", "-q"]  # a file "-q"
    out = run("enroll", str(EXAMPLES / "gallery"), "-g", str(tmp_path / "g"), "-q")
    assert out.returncode == 0, out.stderr
    assert "INFO" not in out.stderr


def test_every_main_command_has_an_example_in_its_help():
    for command in ("run", "status", "doctor", "embed", "enroll", "search", "eval"):
        out = run(command, "--help")
        assert "Example: agent " in out.stdout, command


def test_a_config_typo_gets_a_suggestion(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('[detect]\nmdoe = "person"\n[[sources]]\nid = "a"\nuri = "x.mp4"\n'
                      "realtme = true\n")  # fmt: skip
    line = one_error_line(run("-c", str(config), "config", "show"))
    assert "detect.mdoe" in line and "did you mean 'mode'?" in line
    assert "did you mean 'realtime'?" in line


def test_broker_urls():
    assert parse_broker("mqtt.local") == ("mqtt.local", None, None)
    assert parse_broker("mqtt.local:1884") == ("mqtt.local", 1884, None)
    assert parse_broker("mqtt://mqtt.local") == ("mqtt.local", None, False)
    assert parse_broker("mqtts://mqtt.local") == ("mqtt.local", 8883, True)
    assert parse_broker("mqtts://mqtt.local:9883/") == ("mqtt.local", 9883, True)
    with pytest.raises(ConfigError, match="mqtt:// or mqtts://"):
        parse_broker("http://mqtt.local")


def test_an_unreachable_broker_is_reported_within_seconds(gallery, tmp_path):
    port = free_port()  # nothing listens there
    out = run("--verbose", "run", "-g", str(gallery), "-s", f"cam={EXAMPLES / 'camera.mp4'}",
              "--broker", f"mqtt://127.0.0.1:{port}", "--duration", "4",
              env={"XDG_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                   **_models_env()})  # fmt: skip
    assert f"cannot reach the MQTT broker 127.0.0.1:{port}" in out.stderr, out.stderr[-2000:]


def _models_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("AGENT_")}


def test_opencv_does_not_write_raw_warnings_around_the_log(gallery, tmp_path):
    port = free_port()  # no RTSP server there: OpenCV's FFmpeg backend would warn
    out = run("run", "-g", str(gallery), "-s", f"cam=rtsp://127.0.0.1:{port}/none",
              "--duration", "3", env={"XDG_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                      **_models_env()})  # fmt: skip
    assert "cannot open stream source" in out.stderr  # the agent's own line
    assert "[ WARN:" not in out.stderr and "global cap" not in out.stderr


def test_embed_prints_vectors_on_request_and_says_when_it_keeps_none():
    import json

    import numpy as np

    folder = EXAMPLES / "gallery" / "Oatly-Oat-Milk"
    out = run("embed", str(folder), "--json", "--vectors")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    vectors = np.array([e["vector"] for e in report["embeddings"]])
    assert vectors.shape == (5, report["dim"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1,
                                                               atol=1e-4)  # fmt: skip
    plain = run("embed", str(folder))
    assert "embeddings not kept" in " ".join(plain.stdout.split())


def test_run_on_a_terminal_prints_readable_decisions_and_summaries(gallery, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "-g", str(gallery), "--fast",
         "-s", f"cam={EXAMPLES / 'camera.mp4'}"],
        stdout=slave, stderr=subprocess.DEVNULL,
        env={**os.environ, "XDG_DATA_HOME": str(tmp_path)},
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the agent closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert agent.wait(120) == 0
    lines = b"".join(chunks).decode().splitlines()
    decisions = [ln for ln in lines if " cam  " in ln]
    assert decisions and not any(ln.lstrip().startswith("{") for ln in lines)  # no JSON
    assert all("margin" in ln and "frame" in ln for ln in decisions)
    assert any(ln.startswith("-- cam ") and "fps" in ln for ln in lines)  # a summary


def test_eval_report_is_a_self_contained_page_of_pictures(tmp_path):
    import re

    report = tmp_path / "eval.html"
    out = run("eval", "-g", str(EXAMPLES / "gallery"), "-Q", str(EXAMPLES / "gallery"),
              "--report", str(report), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    page = report.read_text()
    assert page.count("<svg") == 2 and "<script" not in page and "http" not in page.lower()
    bars = re.findall(r'<rect [^>]*height="([0-9.]+)"', page)
    assert sum(float(h) > 0 for h in bars) >= 2  # both histograms drawn
    assert "match policy (score" in page and page.count("<polyline") == 1
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td>", page)
    assert {name for name, _ in rows} == {p.name for p in (EXAMPLES / "gallery").iterdir()}
    assert sum(int(n) for _, n in rows) == 40


def test_status_watch_keeps_reporting_until_interrupted(gallery, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.agent_support import AgentProcess, agent_config

    config = agent_config(tmp_path / "state", gallery, metrics={"interval_s": 0.3})
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop",
                         "-s", f"cam={EXAMPLES / 'camera.mp4'}")  # fmt: skip
    agent.wait_status(lambda r: r["metrics"] is not None)

    # Ctrl-C as in a terminal, also when the tests run from a script in the background (where
    # SIGINT is ignored, and a child started so would ignore it too).
    def like_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    watch = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(agent.config_path),
                              "status", "--watch", "0.3", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=like_a_terminal)  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while sum(ln.startswith('  "running": true') for ln in lines) < 3:  # three reports seen,
        assert time.monotonic() < deadline and watch.poll() is None, "".join(lines)[-500:]
        lines.append(watch.stdout.readline())  # (so Ctrl-C comes once it is watching)
    watch.send_signal(signal.SIGINT)
    rest, _ = watch.communicate(timeout=20)
    agent.stop()
    assert watch.returncode == 0, rest[-500:]


def test_search_on_a_folder_is_one_table_with_readable_paths(gallery):
    import os

    out = run("search", str(EXAMPLES / "gallery" / "Oatly-Oat-Milk"), "-g", str(gallery),
              env={**os.environ, "COLUMNS": "160"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("5 queries under") == 1 and out.stdout.count("int8)") == 1
    rows = [ln for ln in out.stdout.splitlines() if ".jpg" in ln]
    names = [r.split("│")[1].strip() for r in rows]
    assert len(rows) == 5 and all(n.startswith("Oatly-Oat-Milk_") for n in names)
    assert all(r.split("│")[2].strip() == "Oatly-Oat-Milk" for r in rows)  # top identity


def test_a_fresh_gallery_is_version_one_after_its_first_enroll(tmp_path):
    import json

    out = run("enroll", str(EXAMPLES / "gallery"), "-g", str(tmp_path / "g"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["gallery_version"] == 1

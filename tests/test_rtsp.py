"""Cameras for real: the agent against a real RTSP server (GstRtspServer, tools/rtsp_server.py,
run by the system python3; `.ci/run` installs it with apt-get): first connect and frame rate,
the server killed and restarted, a stalled server, credentials, TCP and UDP transport, and a
camera that comes back at another resolution."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.agent_support import AgentProcess, agent_config
from tests.mqtt_support import free_port

SERVER = Path(__file__).resolve().parents[1] / "tools" / "rtsp_server.py"
PYTHON3 = "/usr/bin/python3"


def gst_rtsp_available() -> bool:
    if not Path(PYTHON3).exists():
        return False
    probe = subprocess.run([PYTHON3, "-c", "import gi; gi.require_version('GstRtspServer', "
                            "'1.0'); from gi.repository import GstRtspServer"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def require_server():
    if gst_rtsp_available():
        return
    message = ("GstRtspServer is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 "
               "python3-gst-1.0 gstreamer1.0-plugins-ugly ...)")  # fmt: skip
    if os.environ.get("AGENT_REQUIRE_RTSP") == "1":
        pytest.fail(message + " and AGENT_REQUIRE_RTSP=1")
    pytest.skip(message)


class RtspServer:
    def __init__(self, port: int, *args: str):
        self.port, self.args = port, args
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, *extra: str) -> RtspServer:
        self.proc = subprocess.Popen([PYTHON3, str(SERVER), str(self.port), *self.args, *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server():
    made: list[RtspServer] = []

    def make(*args: str) -> RtspServer:
        s = RtspServer(free_port(), *args)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()


def run_agent(tmp_path, gallery, uri: str, **source) -> AgentProcess:
    cam = {"id": "cam", "uri": uri, "stall_timeout_s": 3.0, "reconnect_min_s": 0.3,
           "reconnect_max_s": 1.0, **source}  # fmt: skip
    config = agent_config(tmp_path / "state", gallery, sources=[cam],
                          metrics={"interval_s": 0.3})  # fmt: skip
    return AgentProcess(tmp_path, config)


def cam(record: dict) -> dict:
    return record["metrics"]["sources"]["cam"] if record["metrics"] else {}


def test_connects_at_the_camera_rate_and_comes_back_after_the_server_restarts(
    server, gallery, tmp_path
):
    rtsp = server("--fps", "10")
    agent = run_agent(tmp_path, gallery, rtsp.url)
    first = agent.wait_status(lambda r: cam(r).get("frames_in", 0) >= 20, 40)
    t0, n0 = time.monotonic(), cam(first)["frames_in"]
    later = agent.wait_status(lambda r: cam(r).get("frames_in", 0) >= n0 + 30, 20)
    rate = (cam(later)["frames_in"] - n0) / (time.monotonic() - t0)
    assert 6 <= rate <= 14, rate  # the camera's 10 frames/s, not a burst or a trickle
    rtsp.stop()
    agent.wait_status(lambda r: cam(r).get("health") in ("reconnecting", "stalled"), 20)
    rtsp.start()
    back = agent.wait_status(lambda r: cam(r).get("health") == "ok"
                             and cam(r)["reconnects"] >= 1, 40)  # fmt: skip
    assert back["status"]["sources"]["cam"]["health"] == "ok"
    assert agent.stop() == 0


def test_a_stalled_server_is_noticed_and_the_source_recovers(server, gallery, tmp_path):
    rtsp = server()
    agent = run_agent(tmp_path, gallery, rtsp.url)
    agent.wait_status(lambda r: cam(r).get("frames_in", 0) >= 10, 40)
    rtsp.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    agent.wait_status(lambda r: cam(r).get("health") in ("stalled", "reconnecting"), 15)
    assert time.monotonic() - stopped < 3.0 + 5  # stall_timeout_s, plus a report or two
    rtsp.signal(signal.SIGCONT)
    seen = cam(agent.status())["frames_in"]
    agent.wait_status(lambda r: cam(r).get("health") == "ok"
                      and cam(r)["frames_in"] > seen + 5, 40)  # fmt: skip
    t0 = time.monotonic()
    assert agent.stop() == 0 and time.monotonic() - t0 < 15  # no thread left blocked


def test_credentials_right_and_wrong_and_never_shown(server, gallery, tmp_path):
    rtsp = server("--user", "viewer", "--password", "s3cr3t-pw")
    good = run_agent(tmp_path / "good", gallery,
                     rtsp.url.replace("rtsp://", "rtsp://viewer:s3cr3t-pw@"))  # fmt: skip
    good.wait_status(lambda r: cam(r).get("frames_in", 0) >= 10, 40)
    assert good.stop() == 0
    bad = run_agent(tmp_path / "bad", gallery,
                    rtsp.url.replace("rtsp://", "rtsp://viewer:wrong-pw@"))  # fmt: skip
    record = bad.wait_status(lambda r: r["status"]["sources"]["cam"]["health"] == "reconnecting"
                             and r["status"]["sources"]["cam"]["error"], 40)  # fmt: skip
    assert cam(record).get("frames_in", 0) == 0
    assert bad.stop() == 0
    for agent in (good, bad):
        shown = agent.log() + json.dumps(agent.status())
        assert "s3cr3t-pw" not in shown and "wrong-pw" not in shown
        assert "viewer:***@" in json.dumps(agent.status())


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_tcp_and_udp_transport(server, gallery, tmp_path, transport):
    rtsp = server()
    agent = run_agent(tmp_path, gallery, rtsp.url, rtsp_transport=transport)
    agent.wait_status(lambda r: cam(r).get("frames_in", 0) >= 10, 40)
    assert agent.stop() == 0


def test_a_camera_that_comes_back_at_another_resolution(server, gallery, tmp_path):
    rtsp = server("--size", "320x240")
    agent = run_agent(tmp_path, gallery, rtsp.url)
    agent.wait_status(lambda r: cam(r).get("frames_processed", 0) >= 10, 40)
    rtsp.stop()
    rtsp.start("--size", "640x480")
    done = cam(agent.status())["frames_processed"]
    agent.wait_status(lambda r: cam(r).get("frames_processed", 0) >= done + 20
                      and cam(r)["reconnects"] >= 1, 40)  # fmt: skip
    assert agent.stop() == 0 and "Traceback" not in agent.log()


def opencv_has_gstreamer() -> bool:
    import cv2

    return any("GStreamer:" in ln and "YES" in ln for ln in cv2.getBuildInformation().splitlines())


@pytest.mark.skipif(not opencv_has_gstreamer(),
                    reason="this OpenCV is built without GStreamer (the pip wheels are); Jetson "
                    "images and Debian's python3-opencv have it")  # fmt: skip
def test_a_gstreamer_pipeline_source(gallery, tmp_path):
    pipeline = ("videotestsrc num-buffers=40 pattern=ball ! video/x-raw,width=320,height=240,"
                "framerate=10/1 ! videoconvert ! video/x-raw,format=BGR ! appsink")  # fmt: skip
    agent = run_agent(tmp_path, gallery, pipeline)
    agent.wait_status(lambda r: cam(r).get("frames_in", 0) >= 30, 40)
    assert agent.stop() == 0

"""Gallery rollout to a fleet on one machine: N real agents, one mosquitto, one HTTP server.

    python tools/bench_rollout.py [--agents 10] [--fps 2]

Each agent follows group `bench` and runs a camera: examples/camera.mp4 re-encoded at --fps
(every frame of it then reaches the pipeline, so frames read = frames searched), looped, paced.
The bench enrolls the example gallery (v1) and a copy without one identity (v2) and publishes
v1, so the agents start on it from the retained announcement. Then it measures:
  * rollout: from the v2 announcement reaching a subscriber to each agent's retained health
    saying it serves v2 (the agent republishes its health on every change of its fleet state);
  * frames: frames read, searched and dropped by every agent across the swap (counted after a
    clean SIGTERM; a paced file source may hold one frame that was not yet due at the stop);
  * refusal: a signed manifest whose artefact was tampered with: the time until every agent
    reports `refused`, and that each still serves v2.
Prints JSON (and a markdown table with --markdown). Needs mosquitto on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import tomli_w

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AGENT = [sys.executable, "-m", "agent"]
GROUP = "bench"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Watch:
    """Every retained health of the fleet's agents and the group's announcement, timestamped."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.health: dict[str, list[tuple[float, dict]]] = {}
        self.announced: list[tuple[float, int | None]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: (
            c.subscribe("agent/+/health", qos=1),
            c.subscribe(f"fleet/gallery/{GROUP}", qos=1),
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        now = time.monotonic()
        with self.lock:
            if message.topic.startswith("fleet/"):
                try:
                    version = json.loads(message.payload)["manifest"]["version"]
                except (ValueError, KeyError, TypeError):
                    version = None
                self.announced.append((now, version))
                return
            record = json.loads(message.payload)
            self.health.setdefault(record["device_id"], []).append((now, record))

    def first(self, predicate) -> dict[str, float]:
        """Per device, the first time its health matched."""
        with self.lock:
            return {device: next(t for t, r in records if predicate(r))
                    for device, records in self.health.items()
                    if any(predicate(r) for _, r in records)}  # fmt: skip

    def announced_at(self, version: int | None) -> float | None:
        with self.lock:
            return next((t for t, v in self.announced if v == version), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def clip_at(fps: float, target: Path) -> Path:
    """examples/camera.mp4 (10 fps) kept at `fps`: every (10 / fps)-th frame."""
    import cv2

    source = cv2.VideoCapture(str(REPO / "examples/camera.mp4"))
    step = max(1, round(source.get(cv2.CAP_PROP_FPS) / fps))
    writer = None
    index = 0
    while True:
        ok, frame = source.read()
        if not ok:
            break
        if index % step == 0:
            if writer is None:
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))  # fmt: skip
            writer.write(frame)
        index += 1
    source.release()
    writer.release()
    return target


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def fleet_state(record: dict) -> dict:
    return record.get("fleet") or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--fps", type=float, default=2.0, help="frames/s each camera samples")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    env = {**os.environ, "AGENT_MODELS_DIR": os.environ.get("AGENT_MODELS_DIR",
                                                           str(SHARED / "models"))}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        env["XDG_DATA_HOME"] = str(tmp / "xdg")
        port = free_port()
        (tmp / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(tmp / "mosquitto.conf")],
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        www = tmp / "www"
        www.mkdir()
        http_port = free_port()
        files = subprocess.Popen([sys.executable, "-m", "http.server", str(http_port), "-b",
                                  "127.0.0.1", "-d", str(www)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        agents: list[subprocess.Popen] = []
        watch = None
        try:
            wait_port(port)
            wait_port(http_port)
            run = lambda *a: subprocess.run([*AGENT, *a], env=env, check=True,  # noqa: E731
                                            capture_output=True, text=True)  # fmt: skip
            v1, v2 = tmp / "v1", tmp / "v2"
            run("-q", "enroll", str(REPO / "examples/gallery"), "-g", str(v1))
            shutil.copytree(v1, v2)
            run("gallery", "remove", "Oatly-Oat-Milk", "-g", str(v2))
            clip = clip_at(args.fps, tmp / "camera.mp4")
            key = tmp / "fleet.pem"
            public = run("fleet", "keygen", str(key)).stdout.split('"')[1]
            publish = [
                "gallery",
                "publish",
                GROUP,
                "--key",
                str(key),
                "--to",
                str(www),
                "--url",
                f"http://127.0.0.1:{http_port}",
                "--broker",
                f"127.0.0.1:{port}",
                "--json",
            ]
            run(*publish, "-g", str(v1))
            watch = Watch(port)
            started = time.monotonic()
            for i in range(args.agents):
                state = tmp / f"box{i}"
                config = {
                    "device_id": f"box{i}", "state_dir": str(state),
                    "gallery": {"path": str(state / "no-local-gallery")},
                    "mqtt": {"host": "127.0.0.1", "port": port},
                    "metrics": {"interval_s": 1.0},
                    "fleet": {"group": GROUP, "public_key": public, "startup_wait_s": 60.0},
                    "sources": [{"id": "cam", "uri": str(clip), "realtime": True,
                                 "loop": True}],
                }  # fmt: skip
                state.mkdir()
                (state / "agent.toml").write_text(tomli_w.dumps(config))
                agents.append(
                    subprocess.Popen(
                        [*AGENT, "-c", str(state / "agent.toml"), "run"],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=open(state / "log", "wb"),  # noqa: SIM115 (the agent keeps it)
                    )
                )
            serving_v1 = lambda r: fleet_state(r).get("version") == 1 and r["state"] == "online"  # noqa: E731
            wait_until(lambda: len(watch.first(serving_v1)) == args.agents, 300, "all on v1")
            all_started_s = time.monotonic() - started
            time.sleep(3)

            run(*publish, "-g", str(v2))
            wait_until(lambda: watch.announced_at(2) is not None, 30, "the v2 announcement")
            t0 = watch.announced_at(2)
            serving_v2 = lambda r: fleet_state(r).get("version") == 2  # noqa: E731
            wait_until(lambda: len(watch.first(serving_v2)) == args.agents, 300, "all on v2")
            delays = sorted(t - t0 for t in watch.first(serving_v2).values())
            time.sleep(3)

            # A tampered artefact under a valid signature: refused, v2 still served.
            from agent.fleet import keys
            from agent.fleet.artefact import Announcement

            good = Announcement.model_validate_json((www / GROUP / "2" / "manifest.json")
                                                    .read_text())  # fmt: skip
            data = bytearray((www / GROUP / "2" / "gallery.sqlite").read_bytes())
            data[len(data) // 2] ^= 0xFF
            (www / "tampered.sqlite").write_bytes(bytes(data))
            manifest = good.manifest.model_copy(update={"version": 3})
            signature = keys.sign(keys.load_private(key), manifest.signed_bytes())
            bad = Announcement(manifest=manifest, signature=signature,
                               url=f"http://127.0.0.1:{http_port}/tampered.sqlite")  # fmt: skip
            publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            publisher.connect("127.0.0.1", port)
            publisher.loop_start()
            publisher.publish(f"fleet/gallery/{GROUP}", bad.model_dump_json(), qos=1,
                              retain=True).wait_for_publish(10)  # fmt: skip
            publisher.loop_stop()
            wait_until(lambda: watch.announced_at(3) is not None, 30, "the v3 announcement")
            t3 = watch.announced_at(3)
            refused = lambda r: fleet_state(r).get("state") == "refused"  # noqa: E731
            wait_until(lambda: len(watch.first(refused)) == args.agents, 120, "all refusing v3")
            refusals = sorted(t - t3 for t in watch.first(refused).values())
            time.sleep(2)

            for agent in agents:
                agent.send_signal(signal.SIGTERM)
            codes = [agent.wait(120) for agent in agents]
            frames = {"in": 0, "searched": 0, "dropped": 0, "held_at_stop": 0}
            still_v2 = 0
            for i in range(args.agents):
                record = json.loads((tmp / f"box{i}" / "status.json").read_text())
                cam = record["metrics"]["sources"]["cam"]
                done = cam["frames_processed"] + cam["frames_reused"]
                frames["in"] += cam["frames_in"]
                frames["searched"] += done
                frames["dropped"] += cam["frames_dropped"]
                frames["held_at_stop"] += cam["frames_in"] - done
                still_v2 += record["status"]["fleet"]["version"] == 2
        finally:
            if watch is not None:
                watch.close()
            for agent in agents:
                if agent.poll() is None:
                    agent.kill()
            files.terminate()
            broker.terminate()
    report = {
        "machine": platform.node(), "cpus": os.cpu_count(), "agents": args.agents,
        "camera_fps": args.fps, "exit_codes": sorted(set(codes)),
        "start_to_all_serving_v1_s": round(all_started_s, 2),
        "rollout_s": {"first": round(delays[0], 3), "median": round(statistics.median(delays), 3),
                      "last": round(delays[-1], 3)},
        "frames": frames,
        "tampered_refused_s": {"median": round(statistics.median(refusals), 3),
                               "last": round(refusals[-1], 3)},
        "still_serving_v2_after_tampered": still_v2,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.markdown:
        r = report
        print(
            "\n| agents | announce -> first / median / last serving v2 (s) | frames read | "
            "searched | dropped | tampered: all refused (s) | still on v2 |\n"
            "|---|---|---|---|---|---|---|"
        )
        print(
            f"| {r['agents']} | {r['rollout_s']['first']} / {r['rollout_s']['median']} / "
            f"{r['rollout_s']['last']} | {frames['in']} | {frames['searched']} | "
            f"{frames['dropped']} | {r['tampered_refused_s']['last']} | {still_v2}/{r['agents']} |"
        )


if __name__ == "__main__":
    main()

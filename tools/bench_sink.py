"""`agent sink` into Qdrant (embedded mode) from a real mosquitto: rate, and nothing lost or
doubled through a SIGKILLed sink and a restarted broker.

    python tools/bench_sink.py [--events 5000] [--chaos-events 3000] [--rate 300] [--shared]

  * drain: N match events (1280-d float16 embeddings, as EfficientNet-Lite0 boxes send with
    pipeline.embed_vectors) are queued at the broker for the sink's persistent session while it
    is away; then `agent sink` starts and the time until the collection holds all N is taken:
    events/s written (each batch upserted, then acknowledged).
  * chaos: a publisher sends M events at --rate (QoS 1, re-sending what the broker did not
    acknowledge, as the agents' outbox does); the sink is SIGKILLed at 30 % of them, the broker
    restarted (persistence on) at 50 %, the sink started again at 60 %. At the end the points
    stored are counted against the events sent: lost = sent - stored; duplicates are impossible
    by construction of the point ids, and the sink's `written` counts show how many were
    delivered twice. --shared runs the sinks in a shared-subscription group (the mosquitto 2.0
    caveat in README.md).
Prints JSON (and a markdown table with --markdown).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from agent.events import BBox, MatchEvent, encode_embedding
from agent.fleet.sightings import Sightings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AGENT = [sys.executable, "-m", "agent"]
DIM = 1280


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"user {getpass.getuser()}\n"  # (as root it would drop to mosquitto)
                             f"persistence true\npersistence_location {workdir}/\n"
                             "autosave_interval 1\nmax_queued_messages 1000000\n")  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import socket

        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([mosquitto, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def events(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        vector = rng.normal(size=DIM).astype(np.float32)
        event = MatchEvent(
            device_id=f"box{i % 10}", source_id=f"cam{i % 3}", frame_index=i,
            frame_time_s=i / 10, bbox=BBox(x=0, y=0, w=64, h=64), identity=f"id-{i % 40}",
            score=0.8, candidates=[], model="efficientnet_lite0:int8", gallery_version=1,
            embedding_f16=encode_embedding(vector / np.linalg.norm(vector)),
        )  # fmt: skip
        out.append(event.to_json())
    return out


def publish(port: int, payloads: list[bytes], rate: float | None = None,
            progress: list[int] | None = None) -> None:  # fmt: skip
    """QoS 1; what the broker did not acknowledge (it was restarting) is sent again."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.reconnect_delay_set(0.2, 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    pending = []
    for i, payload in enumerate(payloads):
        if rate:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        topic = f"agent/box{i % 10}/match"
        pending.append((topic, payload, client.publish(topic, payload, qos=1)))
        if (rate and len(pending) >= 50) or i == len(payloads) - 1:
            pending = _confirm(client, pending)
        if progress is not None:
            progress[0] = i + 1
    client.loop_stop()
    client.disconnect()


def _confirm(client, pending: list) -> list:
    while pending:
        pending = [(topic, payload, client.publish(topic, payload, qos=1))
                   for topic, payload, info in pending if not _acked(info)]  # fmt: skip
        if pending:
            time.sleep(0.5)
    return []


def _acked(info) -> bool:
    try:
        info.wait_for_publish(3)
        return info.is_published()
    except (RuntimeError, ValueError):  # sent while the broker was away
        return False


def sink(qdrant: Path, port: int, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*AGENT, "sink", "--qdrant", str(qdrant), "--broker",
                             f"127.0.0.1:{port}", "--client-id", "bench-sink", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip


def stored(qdrant: Path) -> int:
    with Sightings(str(qdrant), DIM) as s:
        return s.count()


def drain_run(tmp: Path, n: int) -> dict:
    """The sink in this process (its counters read live); the events were queued before."""
    from agent.config import load_config
    from agent.fleet.sink import Sink

    work = tmp / "drain"
    work.mkdir()
    broker = Broker(work)
    broker.start()
    cfg = load_config(None)
    cfg.mqtt.host, cfg.mqtt.port = "127.0.0.1", broker.port
    try:
        with Sightings(str(work / "qdrant"), DIM) as sightings:
            Sink(cfg, sightings, client_id="bench-sink").run(duration_s=2)  # the session
            publish(broker.port, events(n, seed=1))
            sink = Sink(cfg, sightings, client_id="bench-sink")
            thread = threading.Thread(target=sink.run)
            t0 = time.monotonic()
            thread.start()
            while sink.stats.written < n and time.monotonic() - t0 < 600:
                time.sleep(0.01)
            seconds = time.monotonic() - t0
            sink.stop()
            thread.join()
            count = sightings.count()
    finally:
        broker.stop()
    return {"events": n, "stored": count, "seconds": round(seconds, 2),
            "events_per_s": round(sink.stats.written / seconds, 1),
            "batches": sink.stats.batches}  # fmt: skip


def chaos_run(tmp: Path, env: dict, m: int, rate: float, shared: bool) -> dict:
    work = tmp / ("chaos-shared" if shared else "chaos")
    work.mkdir()
    broker = Broker(work)
    broker.start()
    qdrant = work / "qdrant"
    extra = ("--group", "bench") if shared else ()
    written = 0
    try:
        first = sink(qdrant, broker.port, env, *extra)
        time.sleep(3)
        progress = [0]
        sender = threading.Thread(target=publish, args=(broker.port, events(m, seed=2), rate,
                                                        progress))  # fmt: skip
        sender.start()
        while progress[0] < 0.3 * m:
            time.sleep(0.05)
        first.kill()  # SIGKILL
        first.communicate(timeout=30)
        while progress[0] < 0.5 * m:
            time.sleep(0.05)
        broker.stop()
        time.sleep(1)
        broker.start()
        while progress[0] < 0.6 * m:
            time.sleep(0.05)
        second = sink(qdrant, broker.port, env, *extra)
        sender.join()
        time.sleep(5)
        second.terminate()
        out, _ = second.communicate(timeout=120)
        written += json.loads(out.strip().splitlines()[-1])["written"]
        last = sink(qdrant, broker.port, env, *extra, "--duration", "8")  # what still queues
        out, _ = last.communicate(timeout=120)
        written += json.loads(out.strip().splitlines()[-1])["written"]
    finally:
        broker.stop()
    count = stored(qdrant)
    return {"events": m, "rate": rate, "shared": shared, "stored": count, "lost": m - count,
            "written_after_the_kill": written}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--chaos-events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--shared", action="store_true", help="also run chaos with --group")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "AGENT_MODELS_DIR": os.environ.get("AGENT_MODELS_DIR",
                                                           str(SHARED / "models"))}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as name:
        tmp = Path(name)
        env["XDG_DATA_HOME"] = str(tmp / "xdg")
        report = {"machine": platform.node(), "cpus": os.cpu_count(),
                  "drain": drain_run(tmp, args.events),
                  "chaos": [chaos_run(tmp, env, args.chaos_events, args.rate, False)]}  # fmt: skip
        if args.shared:
            report["chaos"].append(chaos_run(tmp, env, args.chaos_events, args.rate, True))
    print(json.dumps(report, indent=2))
    if args.markdown:
        d = report["drain"]
        print(
            f"\n| drain: events | stored | events/s |\n|---|---|---|\n"
            f"| {d['events']} | {d['stored']} | {d['events_per_s']} |"
        )
        print(
            "\n| chaos: subscription | events | stored | lost | written after the kill |\n"
            "|---|---|---|---|---|"
        )
        for c in report["chaos"]:
            print(
                f"| {'shared' if c['shared'] else 'plain'} | {c['events']} | {c['stored']} | "
                f"{c['lost']} | {c['written_after_the_kill']} |"
            )


if __name__ == "__main__":
    main()

"""One place to search (issue 17): two real agents publish to a real mosquitto, `agent sink`
writes their match events into Qdrant (embedded mode, the same client API as a cluster) through
a shared subscription; the sink is killed with SIGKILL and the broker restarted mid-stream, and
every event is stored exactly once. `agent fleet search` then finds, for a product photo that
is not a frame of any camera, the box and camera that saw that product."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from agent.events import BBox, MatchEvent, encode_embedding
from agent.fleet.sightings import Sightings, point_id
from tests.agent_support import AgentProcess, agent_config
from tests.conftest import shared_file
from tests.mqtt_support import Broker, require_mosquitto


def sink(qdrant, broker: Broker, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "sink", "--qdrant", str(qdrant), "--broker",
         f"127.0.0.1:{broker.port}", "--client-id", "sink-a", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ,
    )  # fmt: skip


def test_sink_stores_every_event_once_and_fleet_search_finds_the_camera(gallery, tmp_path):
    require_mosquitto()
    frames = shared_file("data/frames/camera_frames")
    truth = {}
    for line in shared_file("data/frames/camera_gt.csv").read_text().splitlines()[1:]:
        index, _t, identity, _src = line.split(",", 3)
        truth[int(index)] = identity
    # Two boxes, each with a camera on half of the shelf (four products each), 10 s of video.
    halves = {"shelf-1": range(0, 100), "shelf-2": range(100, 200)}
    for name, indices in halves.items():
        shape = cv2.imread(str(frames / "frame_0000.jpg"))
        writer = cv2.VideoWriter(str(tmp_path / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                 10.0, (shape.shape[1], shape.shape[0]))  # fmt: skip
        for i in indices:
            writer.write(cv2.imread(str(frames / f"frame_{i:04d}.jpg")))
        writer.release()

    broker = Broker(tmp_path / "broker", kind="mosquitto").start()
    qdrant = tmp_path / "qdrant"
    written = 0
    agents = []
    try:
        first = sink(qdrant, broker)
        time.sleep(3)  # subscribed: from here the broker keeps the sink's queue
        for name, source in (("shelf-1", "aisle"), ("shelf-2", "door")):
            mqtt = {"host": "127.0.0.1", "port": broker.port}
            config = agent_config(tmp_path / name / "state", gallery, device_id=name, mqtt=mqtt,
                                  pipeline={"embed_vectors": True})  # fmt: skip
            agents.append(AgentProcess(tmp_path / name, config, "--realtime", "-s",
                                       f"{source}={tmp_path / f'{name}.mp4'}"))  # fmt: skip
        time.sleep(5)
        first.kill()  # SIGKILL mid-stream: whatever it had not acknowledged comes again
        first.wait(10)
        broker.stop()  # and the broker restarts (its persistence keeps the sink's queue)
        time.sleep(1)
        broker.start()
        for agent in agents:
            assert agent.wait(180) == 0, agent.log()
        produced = sum(a.status()["metrics"]["events_produced"] for a in agents)
        assert produced == 200  # every frame an event (test policy)
        assert all(a.status()["metrics"]["outbox_backlog"] == 0 for a in agents)
        second = sink(qdrant, broker, "--duration", "10")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        written = json.loads(out.strip().splitlines()[-1])["written"]
    finally:
        broker.stop()

    with Sightings(str(qdrant), dim=1) as stored:  # the collection exists: its own dim is kept
        assert stored.count() == produced, (written, out, err)  # none lost, none twice
        assert stored.dim > 1
    # The second sink wrote what the first had not acknowledged, and what queued meanwhile.
    assert 0 < written <= produced

    def fleet_search(*args: str) -> list[dict]:
        done = subprocess.run([sys.executable, "-m", "agent", "fleet", "search", *args,
                               "--qdrant", str(qdrant), "--json", "-k", "5"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    catalogue = shared_file("data/frames/gallery")
    for index, (device, source) in ((10, ("shelf-1", "aisle")), (160, ("shelf-2", "door"))):
        product = truth[index]
        photo = sorted((catalogue / product).glob("*.jpg"))[0]  # a shop photo, not a frame
        hits = fleet_search(str(photo))
        assert hits, product
        assert (hits[0]["device_id"], hits[0]["source_id"]) == (device, source), (product, hits)
        seen = fleet_search("--identity", product)
        assert seen and {(h["device_id"], h["source_id"]) for h in seen} == {(device, source)}
        assert [h["ts"] for h in seen] == sorted((h["ts"] for h in seen), reverse=True)

    nothing = subprocess.run([sys.executable, "-m", "agent", "fleet", "search", "--qdrant",
                              str(qdrant)], capture_output=True, text=True)  # fmt: skip
    assert nothing.returncode == 2 and "give an IMAGE or --identity" in nothing.stderr


def synthetic_event(i: int, dim: int = 8) -> MatchEvent:
    vector = np.random.default_rng(i).normal(size=dim).astype(np.float32)
    return MatchEvent(
        device_id=f"box-{i % 3}", source_id="cam", frame_index=i, frame_time_s=i / 10,
        bbox=BBox(x=0, y=0, w=10, h=10), identity=f"id-{i % 5}", score=0.9, candidates=[],
        model="test:int8", gallery_version=1,
        embedding_f16=encode_embedding(vector / np.linalg.norm(vector)),
    )  # fmt: skip


def test_sinks_of_a_group_share_the_events(tmp_path):
    """Scale-out: two sinks in one shared-subscription group split the events between them."""
    require_mosquitto()
    broker = Broker(tmp_path / "broker", kind="mosquitto").start()
    sinks = []
    try:
        for name in ("a", "b"):
            sinks.append(subprocess.Popen(
                [sys.executable, "-m", "agent", "sink", "--qdrant", str(tmp_path / name),
                 "--broker", f"127.0.0.1:{broker.port}", "--group", "writers", "--client-id",
                 f"sink-{name}", "--model", "efficientnet_lite0", "--duration", "12"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
        time.sleep(4)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        events = [synthetic_event(i) for i in range(300)]
        for e in events:
            client.publish(f"agent/{e.device_id}/match", e.to_json(), qos=1).wait_for_publish(10)
        client.loop_stop()
        client.disconnect()
        outputs = [s.communicate(timeout=60) for s in sinks]
        assert all(s.returncode == 0 for s in sinks), outputs
    finally:
        broker.stop()
    written = [json.loads(out.strip().splitlines()[-1])["written"] for out, _err in outputs]
    assert sum(written) == 300 and min(written) > 0, written  # spread, each event once
    stored = set()
    for name in ("a", "b"):
        with Sightings(str(tmp_path / name), dim=8) as part:
            ids = {r.id for r in part.client.scroll(part.collection, limit=1000)[0]}
            assert not ids & stored
            stored |= ids
    assert stored == {point_id(e.event_id) for e in events}

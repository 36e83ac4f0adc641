"""The agent against a real broker: end to end, retained status and Last Will, commands, and
loss tests (broker SIGKILL / SIGTERM and restart, agent SIGKILL and restart: 0 events lost)."""

from __future__ import annotations

import base64
import csv
import json
import signal
import time

import jsonschema
import pytest

from agent.events import CommandResult, MatchEvent, MetricsEvent, StatusEvent
from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.conftest import shared_file
from tests.mqtt_support import Broker, Subscriber, publish_once, require_mosquitto

PREFIX = "agent/testcam"


def mqtt_config(tmp_path, gallery, broker: Broker, protocol: str = "5", **extra) -> dict:
    mqtt = {"host": "127.0.0.1", "port": broker.port, "protocol": protocol, "keepalive_s": 5}
    return agent_config(
        tmp_path / "state", gallery, mqtt={**mqtt, **extra.pop("mqtt", {})}, **extra
    )


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def protocols() -> list[str]:
    return ["5", "3.1.1"]


@pytest.mark.parametrize("protocol", protocols())
def test_end_to_end_match_events_reach_a_subscriber(gallery, broker, tmp_path, protocol):
    if protocol == "5" and not broker.mqtt5:
        require_mosquitto()
    clip = shared_file("data/frames/camera.mp4")
    with open(shared_file("data/frames/camera_gt.csv"), newline="") as fh:
        gt = {int(r["frame"]): r["identity"] for r in csv.DictReader(fh)}
    sub = Subscriber(broker, f"{PREFIX}/#")
    agent = AgentProcess(tmp_path, mqtt_config(tmp_path, gallery, broker, protocol),
                         "--fast", "-s", f"cam={clip}")  # fmt: skip
    assert agent.wait(120) == 0, agent.log()
    assert sub.wait_for(lambda s: len(s.payloads("/match")) >= 200, 30)
    events = sub.payloads("/match")
    schema = MatchEvent.model_json_schema()
    for event in events:
        jsonschema.validate(event, schema)
    assert len({e["event_id"] for e in events}) == 200
    right = sum(e["identity"] == gt[e["frame_index"]] for e in events)
    print(f"\nMQTT {protocol} via {broker.kind}: per-frame accuracy {right}/200")
    assert right >= 180
    health = sub.payloads("/health")
    for status in health:
        jsonschema.validate(status, StatusEvent.model_json_schema())
    assert health[0]["state"] == "online" and health[-1]["state"] == "stopped"
    words = sub.words("/status")  # the plain word availability checks read
    assert words[0] == "online" and words[-1] == "stopped" and set(words) <= {"online", "stopped"}
    metrics = sub.payloads("/metrics")
    assert metrics, "no metrics published"
    jsonschema.validate(metrics[-1], MetricsEvent.model_json_schema())
    assert agent.status()["metrics"]["published"] == 200
    sub.close()
    late = Subscriber(broker, f"{PREFIX}/+", client_id="late-joiner")
    assert late.wait_for(lambda s: s.words("/status") and s.payloads("/health"), 10)
    assert late.words("/status")[-1] == "stopped"  # retained
    assert late.payloads("/health")[-1]["state"] == "stopped"


def test_last_will_says_offline_when_the_agent_dies(gallery, broker, tmp_path):
    sub = Subscriber(broker, f"{PREFIX}/status")
    config = mqtt_config(tmp_path, gallery, broker, "3.1.1")
    clip = EXAMPLES / "camera.mp4"
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop", "-s", f"cam={clip}")
    assert sub.wait_for(lambda s: "online" in s.words("/status"))
    agent.signal(signal.SIGKILL)
    agent.wait()
    assert sub.wait_for(lambda s: s.words("/status")[-1] == "offline", 20)


def test_commands_reload_remove_enroll_and_malformed(gallery, broker, tmp_path):
    config = mqtt_config(tmp_path, gallery, broker, "3.1.1", mqtt={"commands": True})
    sub = Subscriber(broker, f"{PREFIX}/cmd/+/result")
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop",
                         "-s", f"cam={EXAMPLES / 'camera.mp4'}")  # fmt: skip
    agent.wait_status(lambda r: r["metrics"]["broker_connected"])

    def ask(name: str, payload, n: int) -> dict:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        publish_once(broker.port, f"{PREFIX}/cmd/{name}", data)
        assert sub.wait_for(lambda s: len(s.messages) >= n, 60), agent.log()
        return sub.payloads(f"/cmd/{name}/result")[-1]

    assert ask("remove", b"{not json", 1)["ok"] is False
    assert ask("remove", {"identity": "nobody"}, 2)["ok"] is False
    result = ask("remove", {"identity": "Oatly-Oat-Milk", "request_id": "r1"}, 3)
    assert result["ok"] and result["request_id"] == "r1", result
    jpeg = sorted((EXAMPLES / "gallery" / "Oatly-Oat-Milk").iterdir())[0].read_bytes()
    bad = ask("enroll", {"identity": "x", "image_jpeg": base64.b64encode(b"nope").decode()}, 4)
    assert bad["ok"] is False and "decodable" in bad["message"]
    good = ask("enroll", {"identity": "Oat", "image_jpeg": base64.b64encode(jpeg).decode()}, 5)
    assert good["ok"], good
    assert ask("reload", b"", 6)["ok"]
    assert ask("explode", b"{}", 7)["ok"] is False
    long_name = {"identity": "é" * 200, "image_jpeg": base64.b64encode(jpeg).decode()}
    assert ask("enroll", long_name, 8)["ok"] is False  # 400 bytes: no such file name
    record = agent.wait_status(lambda r: r["metrics"]["gallery_size"] == 36)
    assert record["metrics"]["errors"]["commands"] == 5
    result_schema = CommandResult.model_json_schema()
    for payload in sub.payloads("/result"):  # every answer validates against its schema
        jsonschema.validate(payload, result_schema)
    assert record["metrics"]["sources"]["cam"]["health"] == "ok"  # still running
    assert agent.stop() == 0


def test_unreachable_broker_at_startup_then_backlog_is_delivered(gallery, tmp_path):
    broker = Broker(tmp_path / "broker")  # not started yet
    config = mqtt_config(tmp_path, gallery, broker, "3.1.1")
    agent = AgentProcess(tmp_path, config, "--realtime", "--loop", "--print-events",
                         "-s", f"cam={EXAMPLES / 'camera.mp4'}")  # fmt: skip
    down = agent.wait_status(lambda r: r["metrics"]["events_produced"] >= 10)
    assert down["metrics"]["broker_connected"] is False and down["metrics"]["outbox_backlog"] >= 10
    broker.start()
    try:
        sub = Subscriber(broker, f"{PREFIX}/match")
        agent.wait_status(lambda r: r["metrics"]["broker_connected"], 30)
        time.sleep(1)
        assert agent.stop() == 0
        produced = set(agent.event_ids())
        assert sub.wait_for(lambda s: produced <= {p["event_id"] for p in s.payloads("/match")}, 30)
    finally:
        broker.stop()


def _loss_run(tmp_path, gallery, disrupt) -> None:
    """Run the agent at 10 fps, disrupt mid-stream, and check every produced event arrived."""
    require_mosquitto()
    broker = Broker(tmp_path / "broker", kind="mosquitto").start()
    try:
        sub = Subscriber(broker, f"{PREFIX}/match")
        config = mqtt_config(tmp_path, gallery, broker, "5")
        args = ("--realtime", "--loop", "--print-events", "-s", f"cam={EXAMPLES / 'camera.mp4'}")
        agents = [AgentProcess(tmp_path / "a1", config, *args)]
        agents[0].wait_events(15)
        disrupt(broker, agents, lambda: AgentProcess(tmp_path / "a2", config, *args))
        agents[-1].wait_events(len(agents[-1].event_ids()) + 15)
        assert agents[-1].stop() == 0, agents[-1].log()
        produced = [i for a in agents for i in a.event_ids()]
        assert len(produced) >= 40

        def all_there(s):
            return set(produced) <= {p["event_id"] for p in s.payloads("/match")}

        delivered = sub.wait_for(all_there, 60)
        got = [p["event_id"] for p in sub.payloads("/match")]
        lost = set(produced) - set(got)
        print(f"\nproduced {len(produced)}, received {len(got)}, lost {len(lost)}, "
              f"duplicates {len(got) - len(set(got))}")  # fmt: skip
        assert delivered and not lost
        sub.close()
    finally:
        broker.stop()


def test_no_loss_when_the_broker_is_killed_and_restarted(gallery, tmp_path):
    def disrupt(broker, agents, _new):
        broker.kill(signal.SIGKILL)
        agents[0].wait_events(len(agents[0].event_ids()) + 15)  # produced while it is down
        broker.start()

    _loss_run(tmp_path, gallery, disrupt)


def test_no_loss_when_the_broker_stops_and_restarts(gallery, tmp_path):
    def disrupt(broker, agents, _new):
        broker.kill(signal.SIGTERM)
        agents[0].wait_events(len(agents[0].event_ids()) + 15)
        broker.start()

    _loss_run(tmp_path, gallery, disrupt)


def test_no_loss_when_the_agent_is_killed_and_restarted(gallery, tmp_path):
    def disrupt(broker, agents, new):
        broker.proc.send_signal(
            signal.SIGSTOP
        )  # hold acks back so the outbox has a backlog to lose
        agents[0].wait_events(len(agents[0].event_ids()) + 10)
        agents[0].signal(signal.SIGKILL)
        agents[0].wait()
        broker.proc.send_signal(signal.SIGCONT)
        agents.append(new())

    _loss_run(tmp_path, gallery, disrupt)


def test_readme_example_subscriber_prints_each_event_once(gallery, broker, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    folder = tmp_path / "shots"
    folder.mkdir()
    products = sorted(p for p in (EXAMPLES / "gallery").iterdir() if p.is_dir())[:3]
    for product in products:
        image = sorted(product.iterdir())[0]
        (folder / f"{product.name}.jpg").write_bytes(image.read_bytes())
    printer = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "subscriber.py"), "--host", "127.0.0.1",
         "--port", str(broker.port), "--count", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "subscribed to agent/+/match" in printer.stderr.readline()
        agent = AgentProcess(tmp_path, mqtt_config(tmp_path, gallery, broker, "3.1.1"),
                             "-s", f"shots={folder}")  # fmt: skip
        assert agent.wait(120) == 0, agent.log()
        out, _ = printer.communicate(timeout=30)
    finally:
        printer.kill()
    lines = out.splitlines()
    assert len(lines) == 3, out
    for product in products:
        assert any(f" {product.name} " in line for line in lines), (product.name, out)
    assert all(line.startswith("testcam shots frame ") for line in lines)


def test_an_event_too_large_for_the_broker_is_dead_lettered_and_the_rest_flow(tmp_path):
    """mosquitto with max_packet_size 6500 announces it in its MQTT 5 CONNACK: the 20 kB event
    goes to the outbox's dead letters (counted, with the reason) instead of looping
    connect/disconnect, and the events behind it are delivered."""
    require_mosquitto()
    from agent.config import AgentConfig
    from agent.events import StatusEvent
    from agent.metrics import Metrics
    from agent.publish.mqtt import MqttPublisher
    from agent.publish.outbox import Outbox

    broker = Broker(tmp_path / "broker", extra="max_packet_size 6500\n").start()
    try:
        sub = Subscriber(broker, f"{PREFIX}/match")
        mqtt = {"host": "127.0.0.1", "port": broker.port, "protocol": "5"}
        cfg = AgentConfig(device_id="testcam", mqtt=mqtt)
        metrics = Metrics()
        outbox = Outbox(tmp_path / "outbox.db")
        publisher = MqttPublisher(cfg, outbox, StatusEvent(device_id="testcam", state="online"),
                                  metrics=metrics)  # fmt: skip
        publisher.start()
        assert publisher.wait_connected(10)
        publisher.submit("small-1", f"{PREFIX}/match", json.dumps({"n": 1}).encode())
        publisher.submit("huge", f"{PREFIX}/match", b"x" * 20_000)
        publisher.submit("small-2", f"{PREFIX}/match", json.dumps({"n": 2}).encode())
        assert sub.wait_for(lambda s: len(s.messages) >= 2, 20)
        assert [m["n"] for m in sub.payloads("/match")] == [1, 2]
        assert publisher.drain(10) and outbox.dead_letters == 1
        assert metrics.errors.get("dead_letters") == 1 and publisher.connected
        publisher.stop(None)
    finally:
        broker.stop()

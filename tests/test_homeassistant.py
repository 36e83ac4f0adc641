"""Home Assistant MQTT discovery, the plain status word, the last decision and snapshots, on a
real broker. Payloads are checked against the keys Home Assistant documents for MQTT sensors
and cameras (home-assistant.io/integrations/sensor.mqtt, camera.mqtt, mqtt#discovery), and their
templates are rendered with Jinja2, as Home Assistant renders them, on what the agent published."""

from __future__ import annotations

import json
import re

import cv2
import jinja2
import numpy as np

from agent.config import AgentConfig
from agent.publish.homeassistant import discovery
from tests.agent_support import EXAMPLES, AgentProcess
from tests.mqtt_support import Subscriber
from tests.test_mqtt import PREFIX, broker, mqtt_config  # noqa: F401 (fixture)

COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "enabled_by_default", "encoding", "entity_category",
    "entity_picture", "icon", "json_attributes_template", "json_attributes_topic", "name",
    "object_id", "payload_available", "payload_not_available", "platform", "qos", "unique_id",
}  # fmt: skip
DOCUMENTED = {
    "sensor": COMMON | {"device_class", "expire_after", "force_update", "last_reset_value_template",
                        "options", "state_class", "state_topic", "suggested_display_precision",
                        "unit_of_measurement", "value_template"},
    "camera": COMMON | {"image_encoding", "topic"},
}  # fmt: skip
REQUIRED = {"sensor": {"state_topic"}, "camera": {"topic"}}
DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
          "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
          "via_device"}  # fmt: skip
AVAILABILITY = {"payload_available", "payload_not_available", "topic", "value_template"}
TOPIC = re.compile(r"^homeassistant/(sensor|camera)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


def check_schema(configs: dict[str, dict]) -> None:
    ids = [c["unique_id"] for c in configs.values()]
    assert len(ids) == len(set(ids))
    for topic, config in configs.items():
        component = TOPIC.match(topic).group(1)
        assert set(config) <= DOCUMENTED[component], set(config) - DOCUMENTED[component]
        assert REQUIRED[component] <= set(config)
        assert set(config["device"]) <= DEVICE and config["device"]["identifiers"]
        for item in config["availability"]:
            assert set(item) <= AVAILABILITY and "topic" in item


def render(template: str, payload: bytes) -> str:
    """A Home Assistant MQTT value template on a payload (value, value_json)."""
    value = payload.decode()
    try:
        value_json = json.loads(value)
    except ValueError:
        value_json = None
    return jinja2.Template(template).render(value=value, value_json=value_json).strip()


def test_discovery_payloads_follow_the_documented_schema():
    cfg = AgentConfig(device_id="shop 1", mqtt={"snapshots": True})
    configs = discovery(cfg, ["door", "till 2"])
    assert len(configs) == 8  # identity, fps, health, snapshot per source
    check_schema(configs)
    assert len({json.dumps(c["device"]) for c in configs.values()}) == 1  # one device


def test_home_assistant_sees_the_agent_on_a_real_broker(gallery, broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker, "#")
    state = {"homeassistant": {"enabled": True}, "mqtt": {"snapshots": True},
             "match": {"cooldown_s": 10.0, "threshold": "auto", "unknown_threshold": "auto",
                       "min_margin": "auto"}, "detect": {"change_threshold": 0.02}}  # fmt: skip
    agent_cfg = mqtt_config(tmp_path, gallery, broker, "3.1.1", **state)
    agent = AgentProcess(tmp_path, agent_cfg, "--fast", "-s", f"cam={EXAMPLES / 'camera.mp4'}")
    assert agent.wait(120) == 0, agent.log()
    assert sub.wait_for(lambda s: s.words("/status")[-1:] == ["stopped"], 20)
    configs = {t: json.loads(p) for t, p, _ in sub.messages if t.startswith("homeassistant/")}
    assert len(configs) == 4
    check_schema(configs)
    published = {t: p for t, p, _ in sub.messages}  # the last payload on each topic
    for config in configs.values():
        topic = config.get("state_topic") or config["topic"]
        assert topic in published, topic  # every entity has something to show
        if "value_template" in config:
            shown = render(config["value_template"], published[topic])
            assert shown and "Undefined" not in shown, (config["name"], shown)
    identity = next(c for c in configs.values() if c["unique_id"].endswith("_identity"))
    last = json.loads(published[identity["state_topic"]])
    assert (
        render(identity["value_template"], published[identity["state_topic"]]) == last["identity"]
    )
    events = sub.payloads("/match")
    assert last["event_id"] == events[-1]["event_id"] and last["identity"] == events[-1]["identity"]
    snapshot = cv2.imdecode(np.frombuffer(published[f"{PREFIX}/cam/snapshot"], np.uint8), 1)
    assert snapshot is not None and min(snapshot.shape[:2]) >= 32
    for config in configs.values():
        for item in config["availability"]:
            assert render(item["value_template"], published[item["topic"]]) == "offline"
    sub.close()
    # Run again with the source renamed: its old entities are removed (empty retained configs).
    late = Subscriber(broker, "homeassistant/#", client_id="ha-late")
    agent = AgentProcess(tmp_path / "again", agent_cfg, "--fast", "-s",
                         f"door={EXAMPLES / 'camera.mp4'}")  # fmt: skip
    assert agent.wait(120) == 0, agent.log()
    assert late.wait_for(
        lambda s: any(t.endswith("door_identity/config") for t, _, _ in s.messages)
    )
    final: dict[str, bytes] = {}
    for topic, payload, _ in late.messages:
        final[topic] = payload
    assert all(final[t] == b"" for t in configs)  # cam's entities cleared
    assert sum(1 for t, p in final.items() if p and "/door_" in t) == 4

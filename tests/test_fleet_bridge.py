"""Events at fleet scale (issue 17): two agents on a site broker, a mosquitto bridge from the
site to a central broker, and a consumer on the central one. Through an outage of the central
broker (SIGKILL, then restart) the consumer receives every event at least once, and exactly once
after dedupe by `event_id`."""

from __future__ import annotations

import signal
import time

from tests.agent_support import EXAMPLES, AgentProcess, agent_config
from tests.mqtt_support import Broker, Subscriber, require_mosquitto

CLIP = EXAMPLES / "camera.mp4"


def test_two_agents_through_a_bridged_broker_lose_nothing(gallery, tmp_path):
    require_mosquitto()
    central = Broker(tmp_path / "central", kind="mosquitto").start()
    bridge = (f"connection central\naddress 127.0.0.1:{central.port}\ntopic agent/# out 1\n"
              "cleansession false\nrestart_timeout 1\nbridge_protocol_version mqttv311\n"
              "try_private false\n")  # fmt: skip
    site = Broker(tmp_path / "site", kind="mosquitto", extra=bridge).start()
    consumer = Subscriber(central, "agent/+/match", client_id="fleet-consumer")
    agents = []
    try:
        for name in ("shelf-1", "shelf-2"):
            mqtt = {"host": "127.0.0.1", "port": site.port, "protocol": "3.1.1"}
            config = agent_config(tmp_path / name / "state", gallery, device_id=name, mqtt=mqtt)
            agents.append(AgentProcess(tmp_path / name, config, "--realtime", "-s",
                                       f"cam={CLIP}"))  # fmt: skip
        assert consumer.wait_for(lambda s: len(s.messages) >= 20, 60), site.log_tail()
        central.kill(signal.SIGKILL)  # the site link goes down; agents keep running
        time.sleep(4)
        central.start()
        consumer.connected.wait(30)
        for agent in agents:
            assert agent.wait(120) == 0, agent.log()
        produced = sum(a.status()["metrics"]["events_produced"] for a in agents)
        assert produced == 400  # 200 frames each, every frame an event (test policy)

        def unique(s: Subscriber) -> set[str]:
            return {e["event_id"] for e in s.payloads("/match")}

        assert consumer.wait_for(lambda s: len(unique(s)) >= produced, 90), (
            len(unique(consumer)), site.log_tail())  # fmt: skip
        per_device = {e["device_id"] for e in consumer.payloads("/match")}
        assert per_device == {"shelf-1", "shelf-2"} and len(unique(consumer)) == produced
    finally:
        consumer.close()
        site.stop()
        central.stop()

"""Announcements: the group's current gallery version, retained on `<fleet prefix>/gallery/
<group>` so that a box which was offline catches up as soon as it connects."""

from __future__ import annotations

import os
import threading

from agent.config import AgentConfig
from agent.errors import FleetError

RETAINED_GRACE_S = 1.0  # after SUBACK, how long a retained message may take to arrive


def topic(cfg: AgentConfig, group: str) -> str:
    return f"{cfg.fleet.topic_prefix.rstrip('/')}/gallery/{group}"


def _connected_client(cfg: AgentConfig, role: str, timeout_s: float):
    from agent.publish.mqtt import mqtt_client

    if not cfg.mqtt.host:
        raise FleetError("no broker: set mqtt.host or pass --broker")
    client = mqtt_client(cfg, f"agent-{role}-{cfg.device_id}-{os.getpid()}")
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: rc.is_failure or connected.set()
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.keepalive_s)
    except OSError as exc:
        where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        raise FleetError(f"cannot reach the broker {where}: {exc}") from None
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise FleetError(f"the broker {cfg.mqtt.host}:{cfg.mqtt.port} did not accept the "
                         f"connection within {timeout_s:.0f} s")  # fmt: skip
    return client


def current(cfg: AgentConfig, group: str, timeout_s: float = 10.0) -> bytes | None:
    """The retained announcement of `group` (its raw payload), or None if there is none."""
    client = _connected_client(cfg, "fleet-read", timeout_s)
    received: list[bytes] = []
    subscribed, arrived = threading.Event(), threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()

    def on_message(c, u, message) -> None:
        received.append(message.payload)
        arrived.set()

    client.on_message = on_message
    try:
        client.subscribe(topic(cfg, group), qos=1)
        if not subscribed.wait(timeout_s):
            raise FleetError(f"the broker did not confirm the subscription to {topic(cfg, group)}")
        arrived.wait(RETAINED_GRACE_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return received[-1] if received and received[-1] else None


def announce(cfg: AgentConfig, group: str, payload: bytes, timeout_s: float = 10.0) -> None:
    """Retain `payload` as the group's announcement (QoS 1, confirmed by the broker)."""
    client = _connected_client(cfg, "fleet-announce", timeout_s)
    try:
        info = client.publish(topic(cfg, group), payload, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise FleetError(f"the broker did not confirm the announcement on {topic(cfg, group)}")
    finally:
        client.disconnect()
        client.loop_stop()

"""MQTT transport (paho 2.x, MQTT 5 or 3.1.1): match events with QoS 1 from the outbox, retained
status with a Last Will, periodic metrics, and the optional `cmd/` topics."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.events import CommandResult, MetricsEvent, StatusEvent, TrackEvent
from agent.metrics import Metrics
from agent.publish.base import Publisher, Undeliverable
from agent.publish.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], CommandResult]
PACKET_OVERHEAD = 16  # fixed header, topic length, packet id and a few properties


def mqtt_client(cfg: AgentConfig, client_id: str, persistent: bool = False):
    """A paho client with the configured protocol, credentials and TLS (not yet connected).
    `persistent`: a session the broker keeps (and queues QoS 1 messages for) while the client
    is away (MQTT 3.1.1; with MQTT 5 pass `clean_start=False` and a session expiry at connect),
    and messages acknowledged only by `client.ack` once the client has handled them."""
    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    v5 = m.protocol == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=persistent,
    )
    if m.username:
        client.username_pw_set(m.username, read_password(cfg))
    if m.tls:
        client.tls_set(
            ca_certs=str(m.ca_file) if m.ca_file else None,
            certfile=str(m.cert_file) if m.cert_file else None,
            keyfile=str(m.key_file) if m.key_file else None,
        )
        client.tls_insecure_set(m.tls_insecure)
    return client


CREDENTIAL_NAME = "mqtt-password"


def read_password(cfg: AgentConfig) -> str | None:
    """mqtt.password_file, else $<password_env>, else the systemd credential `mqtt-password`."""
    m = cfg.mqtt
    if m.password_file is not None:
        try:
            return Path(m.password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file {m.password_file}: {exc.strerror}") from None
    if m.password_env and os.environ.get(m.password_env):
        return os.environ[m.password_env]
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")  # systemd LoadCredential=
    if credentials and (secret := Path(credentials) / CREDENTIAL_NAME).is_file():
        return secret.read_text().strip()
    return None


class MqttPublisher(Publisher):
    def __init__(
        self,
        cfg: AgentConfig,
        outbox: Outbox,
        initial_status: StatusEvent,
        on_command: CommandHandler | None = None,
        metrics: Metrics | None = None,
        subscriptions: dict[str, Callable[[bytes], None]] | None = None,
    ):
        """`subscriptions`: exact topics to follow, each with what takes its payloads (called on
        the network thread: it must only hand the payload on)."""
        import paho.mqtt.client as mqtt

        super().__init__(outbox, cfg.mqtt.max_inflight, metrics)
        self._mqtt = mqtt
        m = cfg.mqtt
        self.host, self.port = m.host, m.port
        self.prefix = cfg.topic_prefix
        self.status_topic = f"{self.prefix}/status"  # the plain state word
        self.health_topic = f"{self.prefix}/health"  # the StatusEvent JSON
        self.metrics_topic = f"{self.prefix}/metrics"
        self.cfg = cfg
        self.on_command = on_command if m.commands else None
        self.subscriptions = dict(subscriptions or {})
        self.v5 = m.protocol == "5"
        self._connected = threading.Event()
        self._status = initial_status
        self.connects = 0
        self._unreachable = False  # warned about the broker since the last connection
        self._stopping = False
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=64)

        client = mqtt_client(cfg, m.client_id or f"agent-{cfg.device_id}")
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.max_inflight_messages_set(m.max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client
        self.keepalive = m.keepalive_s
        self.configured_max_packet = m.max_packet_bytes
        self.max_packet = m.max_packet_bytes  # lowered by the broker's CONNACK (MQTT 5)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        log.info("MQTT broker %s:%d (MQTT %s), topics %s/...", self.host, self.port,
                 "5" if self.v5 else "3.1.1", self.prefix)  # fmt: skip
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if self.on_command is not None:
            threading.Thread(target=self._command_worker, name="commands", daemon=True).start()
        super().start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ---- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.metrics.error("connect_refused")
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        broker_limit = getattr(properties, "MaximumPacketSize", None) if properties else None
        self.max_packet = min(
            self.configured_max_packet, broker_limit or self.configured_max_packet
        )
        self._connected.set()
        self._unreachable = False
        log.info("MQTT connected (%s)", "first" if self.connects == 1 else "reconnect")
        status = self._status.model_copy(update={"state": "online", "ts": time.time()})
        self._publish_state(status)
        if self.cfg.homeassistant.enabled:
            self._announce()
        if self.on_command is not None:
            client.subscribe(f"{self.prefix}/cmd/+", qos=1)
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        """A connection attempt failed (refused, unreachable, DNS, TLS): say so at once, then
        keep retrying quietly; events wait in the outbox meanwhile."""
        self.metrics.error("connect_failed")
        if not self._unreachable:
            self._unreachable = True
            log.warning("cannot reach the MQTT broker %s:%d; retrying (events wait in the "
                        "outbox)", self.host, self.port)  # fmt: skip

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("MQTT disconnected (%s); retrying", reason_code)
            self.metrics.error("disconnects")
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked(mid, not reason_code.is_failure)

    def _on_message(self, client, userdata, message) -> None:
        if (take := self.subscriptions.get(message.topic)) is not None:
            take(message.payload)
            return
        name = message.topic.rsplit("/", 1)[-1]
        try:
            self._commands.put_nowait((name, message.payload))
        except queue.Full:
            self.metrics.error("commands_dropped")

    def _command_worker(self) -> None:
        while True:
            name, payload = self._commands.get()
            try:
                result = self.on_command(name, payload)
            except Exception as exc:  # a handler bug must not kill the command thread
                log.exception("command %s failed", name)
                result = CommandResult(command=name, ok=False, message=f"internal error: {exc}")
            self.client.publish(f"{self.prefix}/cmd/{name}/result", result.model_dump_json(), qos=1)

    # ---- transport -------------------------------------------------------------------------

    def _send(self, item: OutboxItem) -> int | None:
        # paho queues QoS 1 messages while disconnected and re-sends unacknowledged ones after
        # a reconnect, so the sender does not need to track the connection itself.
        size = len(item.payload) + len(item.topic.encode()) + PACKET_OVERHEAD
        if size > self.max_packet:
            raise Undeliverable(
                f"{size}-byte packet is above the maximum packet size {self.max_packet} "
                "(the broker's, or mqtt.max_packet_bytes)"
            )
        info = self.client.publish(item.topic, item.payload, qos=1)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            self.metrics.error("publish_failed")
            return None
        return info.mid

    def _publish_state(self, status: StatusEvent):
        """The plain word on `status` (what availability checks read), the JSON on `health`."""
        self.client.publish(self.health_topic, status.to_json(), qos=1, retain=True)
        return self.client.publish(self.status_topic, status.state.encode(), qos=1, retain=True)

    def _announce(self) -> None:
        """Home Assistant discovery: this run's entities, and removals of sources gone."""
        from agent.atomic import atomic_write_bytes
        from agent.publish.homeassistant import payloads

        record = self.cfg.state_dir / "homeassistant.json"
        try:
            announced = json.loads(record.read_text())
        except (OSError, ValueError):
            announced = []
        messages = payloads(self.cfg, [s.id for s in self.cfg.sources], announced)
        for topic, payload in messages.items():
            self.client.publish(topic, payload, qos=1, retain=True)
        try:
            atomic_write_bytes(record, json.dumps([t for t, p in messages.items() if p]).encode())
        except OSError as exc:
            log.warning("cannot record the Home Assistant entities in %s: %s", record, exc)

    def publish_status(self, status: StatusEvent) -> None:
        self._status = status
        if self.connected:
            self._publish_state(status)

    def publish_decision(self, source_id: str, summary: bytes, snapshot: bytes | None) -> None:
        if not self.connected:
            return
        self.client.publish(f"{self.prefix}/{source_id}/last", summary, qos=1, retain=True)
        if snapshot is not None:
            self.client.publish(f"{self.prefix}/{source_id}/snapshot", snapshot, qos=1,
                                retain=True)  # fmt: skip

    def publish_metrics(self, metrics: MetricsEvent) -> None:
        if self.connected:
            self.client.publish(self.metrics_topic, metrics.to_json(), qos=0)

    def publish_track(self, event: TrackEvent) -> None:
        if self.connected:
            self.client.publish(f"{self.prefix}/track", event.to_json(), qos=0)

    def _close(self, final: StatusEvent | None) -> None:
        self._stopping = True
        if final is not None and self.connected:
            info = self._publish_state(final)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()

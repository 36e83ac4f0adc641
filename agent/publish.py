"""Publishers: MQTT (paho 2.x, MQTT 5 or 3.1.1) or stdout JSON lines, both behind the outbox.

Match events go outbox -> sender thread -> transport, and leave the outbox only when delivered
(MQTT: on PUBACK; stdout: once written and flushed). Status (retained) and metrics are state,
not history: they are published directly and not queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.events import CommandResult, MetricsEvent, StatusEvent
from agent.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], CommandResult]


class Publisher:
    """Outbox draining common to every transport; subclasses deliver one item at a time."""

    def __init__(self, outbox: Outbox, window: int = 64):
        self.outbox = outbox
        self.window = window
        self.published = 0
        self.errors: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # transport token -> outbox seq
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._last_sent = 0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    # ---- what the agent calls --------------------------------------------------------------

    @property
    def connected(self) -> bool | None:
        return None

    def start(self) -> None:
        self._thread.start()

    def submit(self, event_id: str, topic: str, payload: bytes) -> None:
        """Commit to the outbox (durable from here on) and wake the sender."""
        self.outbox.put(event_id, topic, payload)
        self._wake.set()

    def publish_status(self, status: StatusEvent) -> None:
        raise NotImplementedError

    def publish_metrics(self, metrics: MetricsEvent) -> None:
        raise NotImplementedError

    def drain(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        return len(self.outbox) == 0

    def stop(self, final: StatusEvent | None) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._close(final)
        self.outbox.close()

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    # ---- sender ----------------------------------------------------------------------------

    def _send(self, item: OutboxItem) -> int | None:
        """Hand one item to the transport; a token whose ack comes through `_acked`, or None."""
        raise NotImplementedError

    def _close(self, final: StatusEvent | None) -> None:
        raise NotImplementedError

    def _acked(self, token: int, delivered: bool = True) -> None:
        """Called from any thread when the transport confirms `token`."""
        self._acks.put((token, delivered))
        self._wake.set()

    def _settle_acks(self) -> None:
        while True:
            try:
                token, delivered = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._inflight.pop(token, None)
            if seq is None:
                continue
            self.outbox.ack(seq)
            if delivered:
                self.published += 1
            else:
                self.count_error("publish_refused")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._settle_acks()
            room = self.window - len(self._inflight)
            if room <= 0:
                continue
            for item in self.outbox.pending(after=self._last_sent, limit=room):
                token = self._send(item)
                if token is None:
                    break
                self._inflight[token] = item.seq
                self._last_sent = item.seq
            self._settle_acks()


class StdoutPublisher(Publisher):
    """The embedded default: one JSON line per match event on stdout."""

    def __init__(self, outbox: Outbox, stream: TextIO | None = None):
        super().__init__(outbox)
        self.stream = stream or sys.stdout
        self._token = 0

    def _send(self, item: OutboxItem) -> int | None:
        try:
            self.stream.write(item.payload.decode() + "\n")
            self.stream.flush()
        except OSError as exc:  # closed pipe: keep the event for the next run
            self.count_error("stdout")
            log.error("cannot write events to stdout: %s", exc)
            self._stop.set()
            return None
        self._token += 1
        self._acked(self._token)
        return self._token

    def publish_status(self, status: StatusEvent) -> None:
        log.info("status: %s", status.state)

    def publish_metrics(self, metrics: MetricsEvent) -> None:
        pass

    def _close(self, final: StatusEvent | None) -> None:
        if final is not None:
            self.publish_status(final)


def mqtt_client(cfg: AgentConfig, client_id: str):
    """A paho client with the configured protocol, credentials and TLS (not yet connected)."""
    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311,
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
    ):
        import paho.mqtt.client as mqtt

        super().__init__(outbox, cfg.mqtt.max_inflight)
        self._mqtt = mqtt
        m = cfg.mqtt
        self.host, self.port = m.host, m.port
        self.prefix = cfg.topic_prefix
        self.status_topic = f"{self.prefix}/status"
        self.metrics_topic = f"{self.prefix}/metrics"
        self.on_command = on_command if m.commands else None
        self.v5 = m.protocol == "5"
        self._connected = threading.Event()
        self._status = initial_status
        self.connects = 0
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=64)

        client = mqtt_client(cfg, m.client_id or f"agent-{cfg.device_id}")
        offline = initial_status.model_copy(update={"state": "offline", "sources": {}})
        client.will_set(self.status_topic, offline.to_json(), qos=1, retain=True)
        client.max_inflight_messages_set(m.max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client
        self.keepalive = m.keepalive_s

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
            self.count_error("connect_refused")
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        self.connects += 1
        self._connected.set()
        log.info("MQTT connected (%s)", "first" if self.connects == 1 else "reconnect")
        status = self._status.model_copy(update={"state": "online", "ts": time.time()})
        client.publish(self.status_topic, status.to_json(), qos=1, retain=True)
        if self.on_command is not None:
            client.subscribe(f"{self.prefix}/cmd/+", qos=1)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            log.warning("MQTT disconnected (%s); retrying", reason_code)
            self.count_error("disconnects")
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acked(mid, not reason_code.is_failure)

    def _on_message(self, client, userdata, message) -> None:
        name = message.topic.rsplit("/", 1)[-1]
        try:
            self._commands.put_nowait((name, message.payload))
        except queue.Full:
            self.count_error("commands_dropped")

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
        info = self.client.publish(item.topic, item.payload, qos=1)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            self.count_error("publish_failed")
            return None
        return info.mid

    def publish_status(self, status: StatusEvent) -> None:
        self._status = status
        if self.connected:
            self.client.publish(self.status_topic, status.to_json(), qos=1, retain=True)

    def publish_metrics(self, metrics: MetricsEvent) -> None:
        if self.connected:
            self.client.publish(self.metrics_topic, metrics.to_json(), qos=0)

    def _close(self, final: StatusEvent | None) -> None:
        if final is not None and self.connected:
            info = self.client.publish(self.status_topic, final.to_json(), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()


def make_publisher(
    cfg: AgentConfig, initial_status: StatusEvent, on_command: CommandHandler | None = None
) -> Publisher:
    outbox = Outbox.from_config(cfg)
    if cfg.mqtt.host:
        return MqttPublisher(cfg, outbox, initial_status, on_command)
    return StdoutPublisher(outbox)

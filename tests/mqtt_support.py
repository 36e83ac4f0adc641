"""Real brokers and subscribers for the MQTT tests.

`Broker` runs mosquitto when it is on PATH (CI installs it), else the pure-Python amqtt broker
(MQTT 3.1.1 only) from the dev extra. mosquitto runs with persistence saved on every change, so a
SIGKILLed broker comes back with the subscriber's session and queued messages.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_mosquitto() -> str:
    if MOSQUITTO:
        return MOSQUITTO
    message = "mosquitto is not installed (apt-get install mosquitto)"
    if os.environ.get("AGENT_REQUIRE_MOSQUITTO") == "1":
        pytest.fail(message + " and AGENT_REQUIRE_MOSQUITTO=1")
    pytest.skip(message + "; this test needs a broker that persists sessions")


class Broker:
    def __init__(
        self, workdir: Path, kind: str | None = None, port: int | None = None, extra: str = ""
    ):
        self.kind = kind or ("mosquitto" if MOSQUITTO else "amqtt")
        self.port = port or free_port()
        self.extra = extra  # more mosquitto.conf lines
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    @property
    def mqtt5(self) -> bool:
        return self.kind == "mosquitto"

    def _command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                f"persistence true\npersistence_location {self.workdir}/\n"
                "autosave_interval 1\nautosave_on_changes true\n"
                f"max_queued_messages 100000\nlog_dest stderr\n{self.extra}"
            )
            return [MOSQUITTO, "-c", str(conf)]
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return [str(Path(sys.executable).parent / "amqtt"), "-c", str(conf)]

    def start(self) -> Broker:
        log = open(self.workdir / f"{self.kind}.log", "ab")  # noqa: SIM115 (the broker keeps it)
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited: {self.log_tail()}") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not listen on {self.port}: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.workdir / f"{self.kind}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test paused it
            self.proc.send_signal(sig)
            self.proc.wait(15)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class Subscriber:
    """Collects every message under a topic filter, with a persistent session (QoS 1)."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "test-subscriber"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.topic = topic
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(15), "subscriber could not connect"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def payloads(self, suffix: str) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def raw(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def words(self, suffix: str) -> list[str]:
        return [p.decode() for p in self.raw(suffix)]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_once(port: int, topic: str, payload: bytes | str, retain: bool = False) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()

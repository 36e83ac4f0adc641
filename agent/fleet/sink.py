"""`agent sink`: match events from the broker into the sightings database.

The session is persistent, so the broker queues events while the sink is away, and an event is
acknowledged only after the batch holding it is written: a sink killed at any moment loses
nothing, because the broker re-sends what was not acknowledged and the idempotent upsert (by
event_id) stores it once. With `group`, sinks share a subscription (`$share/<group>/<topic>`)
and the broker spreads events over them: start more sinks to scale out. Mosquitto 2.0 does not
restore a shared subscription of a persistent session when it restarts (events published after
the restart and before a sink of the group reconnects are lost; BENCHMARKS.md measures it), so
without `group` the sink uses a plain subscription, which every broker restores.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from pydantic import ValidationError

from agent.config import AgentConfig
from agent.errors import FleetError
from agent.events import MatchEvent
from agent.fleet.sightings import Sightings

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 7 * 86400  # how long the broker keeps a sink's queue while it is away


@dataclass
class SinkStats:
    written: int = 0
    without_vector: int = 0
    rejected: int = 0  # not a match event: acknowledged and dropped, with a warning
    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict:
        seconds = time.monotonic() - self.started
        return {"written": self.written, "without_vector": self.without_vector,
                "rejected": self.rejected, "batches": self.batches,
                "seconds": round(seconds, 1),
                "events_per_s": round(self.written / seconds, 1) if seconds else 0.0}  # fmt: skip


class Sink:
    def __init__(
        self,
        cfg: AgentConfig,
        sightings: Sightings,
        group: str | None = None,
        topic: str = "agent/+/match",
        client_id: str | None = None,
        batch: int = 256,
        linger_s: float = 0.2,
    ):
        if not cfg.mqtt.host:
            raise FleetError("no broker: set mqtt.host or pass --broker")
        self.cfg = cfg
        self.sightings = sightings
        self.subscription = f"$share/{group}/{topic}" if group else topic
        self.client_id = client_id or f"agent-sink-{group or 'single'}-{cfg.device_id}"
        self.batch = batch
        self.linger_s = linger_s
        self.stats = SinkStats()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connection = 0  # packet ids are only valid within the connection they came on

    def stop(self, *_args) -> None:
        self._stop.set()

    def run(self, duration_s: float | None = None) -> SinkStats:
        """Consume until stopped (or for `duration_s`); returns what was written."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from agent.publish.mqtt import mqtt_client

        client = mqtt_client(self.cfg, self.client_id, persistent=True)
        client.on_connect = self._on_connect
        client.on_message = lambda c, u, message: self._inbox.put((self._connection, message))
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        m = self.cfg.mqtt
        if m.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect_async(m.host, m.port, m.keepalive_s, clean_start=False,
                                 properties=props)  # fmt: skip
        else:
            client.connect_async(m.host, m.port, m.keepalive_s)
        client.loop_start()
        log.info("sink %s: %s from %s:%d into %s", self.client_id, self.subscription, m.host,
                 m.port, self.sightings.collection)  # fmt: skip
        deadline = time.monotonic() + duration_s if duration_s else None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self._write(client, self._take())
        finally:
            self._write(client, self._drain())
            client.disconnect()
            client.loop_stop()
        return self.stats

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("the broker refused the sink: %s", reason_code)
            return
        self._connection += 1
        client.subscribe(self.subscription, qos=1)

    def _take(self) -> list:
        """Up to `batch` messages: the first waited for, the rest for at most `linger_s`."""
        try:
            messages = [self._inbox.get(timeout=0.5)]
        except queue.Empty:
            return []
        until = time.monotonic() + self.linger_s
        while len(messages) < self.batch:
            try:
                messages.append(self._inbox.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
        return messages

    def _drain(self) -> list:
        messages = []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _write(self, client, messages: list) -> None:
        if not messages:
            return
        events = []
        for _connection, message in messages:
            try:
                event = MatchEvent.model_validate_json(message.payload)
            except ValidationError as exc:
                self.stats.rejected += 1
                log.warning("not a match event on %s (dropped): %s", message.topic,
                            exc.errors()[0]["msg"])  # fmt: skip
                continue
            events.append(event)
        self.stats.without_vector += self.sightings.add(events)
        self.stats.written += len(events)
        self.stats.batches += 1
        for connection, message in messages:  # only now: what is not acknowledged comes again
            if connection == self._connection:  # (after a reconnect the broker re-sends it)
                client.ack(message.mid, message.qos)

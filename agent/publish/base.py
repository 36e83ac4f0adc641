"""The publisher base: outbox draining common to every transport.

Match events go outbox -> sender thread -> transport, and leave the outbox only when delivered
(MQTT: on PUBACK; stdout: once written and flushed). Status (retained) and metrics are state,
not history: they are published directly and not queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod

from agent.errors import AgentError
from agent.events import MetricsEvent, StatusEvent, TrackEvent
from agent.metrics import Metrics, NullMetrics
from agent.publish.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)


class Undeliverable(AgentError):
    """An event no retry can deliver (too large for the broker, a topic it refuses)."""


class Publisher(ABC):
    """Outbox draining common to every transport; subclasses deliver one item at a time."""

    def __init__(self, outbox: Outbox, window: int = 64, metrics: Metrics | None = None):
        self.outbox = outbox
        self.window = window
        self.metrics = metrics or NullMetrics()
        self.published = 0
        self.failed = False  # the transport cannot take events any more (a closed stdout)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, int] = {}  # transport token -> outbox seq
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._last_sent = 0
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    # ---- what the agent calls --------------------------------------------------------------

    @property
    def connected(self) -> bool | None:
        """Whether the transport is connected; None for transports without a connection."""
        return None

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the transport can deliver; True at once for connectionless ones."""
        return True

    def start(self) -> None:
        self._thread.start()

    def submit(self, event_id: str, topic: str, payload: bytes) -> None:
        """Commit to the outbox (durable from here on) and wake the sender."""
        self.outbox.put(event_id, topic, payload)
        self._wake.set()

    @abstractmethod
    def publish_status(self, status: StatusEvent) -> None: ...

    @abstractmethod
    def publish_metrics(self, metrics: MetricsEvent) -> None: ...

    @abstractmethod
    def publish_track(self, event: TrackEvent) -> None:
        """Track lifecycle is state for live views, not history: not queued, may be dropped."""

    @abstractmethod
    def publish_decision(self, source_id: str, summary: bytes, snapshot: bytes | None) -> None:
        """A source's last decision (and the JPEG of its crop): retained state for dashboards,
        where the transport has such a thing. Not queued."""

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

    # ---- sender ----------------------------------------------------------------------------

    @abstractmethod
    def _send(self, item: OutboxItem) -> int | None:
        """Hand one item to the transport; a token whose ack comes through `_acked`, or None."""

    @abstractmethod
    def _close(self, final: StatusEvent | None) -> None: ...

    def _dead_letter(self, item: OutboxItem, reason: str) -> None:
        log.error("event %s on %s cannot be delivered, moved to the dead letters: %s",
                  item.event_id, item.topic, reason)  # fmt: skip
        self.outbox.dead_letter(item.seq, reason)
        self._last_sent = max(self._last_sent, item.seq)
        self.metrics.error("dead_letters")

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
                self.metrics.error("publish_refused")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            self._settle_acks()
            room = self.window - len(self._inflight)
            if room <= 0:
                continue
            for item in self.outbox.pending(after=self._last_sent, limit=room):
                try:
                    token = self._send(item)
                except Undeliverable as exc:
                    self._dead_letter(item, str(exc))
                    continue
                except Exception as exc:  # a transport bug must not stop delivery for good
                    self._dead_letter(item, f"{type(exc).__name__}: {exc}")
                    continue
                if token is None:
                    break
                self._inflight[token] = item.seq
                self._last_sent = item.seq
            self._settle_acks()

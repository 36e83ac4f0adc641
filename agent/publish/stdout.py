"""The embedded default transport: one JSON line per match event on stdout."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from agent.events import MetricsEvent, StatusEvent, TrackEvent
from agent.metrics import Metrics
from agent.publish.base import Publisher
from agent.publish.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)


class StdoutPublisher(Publisher):
    """The embedded default: one JSON line per match event on stdout."""

    def __init__(
        self, outbox: Outbox, stream: TextIO | None = None, metrics: Metrics | None = None
    ):
        super().__init__(outbox, metrics=metrics)
        self.stream = stream or sys.stdout
        self._token = 0

    def _send(self, item: OutboxItem) -> int | None:
        try:
            self.stream.write(item.payload.decode() + "\n")
            self.stream.flush()
        except OSError as exc:  # closed pipe: keep the event for the next run
            self.metrics.error("stdout")
            log.error("cannot write events to stdout: %s", exc)
            self.failed = True
            self._stop.set()
            return None
        self._token += 1
        self._acked(self._token)
        return self._token

    def publish_status(self, status: StatusEvent) -> None:
        log.info("status: %s", status.state)

    def publish_metrics(self, metrics: MetricsEvent) -> None:
        pass

    def publish_track(self, event: TrackEvent) -> None:
        pass

    def publish_decision(self, source_id: str, summary: bytes, snapshot: bytes | None) -> None:
        pass  # the event lines already carry every decision; stdout keeps no state

    def _close(self, final: StatusEvent | None) -> None:
        if final is not None:
            self.publish_status(final)

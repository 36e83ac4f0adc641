"""The embedded default transport: one JSON line per match event on stdout; on a terminal, a
readable line per decision and a summary at each metrics report instead."""

from __future__ import annotations

import json
import logging
import sys
import time
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
        self.readable = self.stream.isatty()  # a person reads it: lines, not JSON
        self._token = 0

    def _send(self, item: OutboxItem) -> int | None:
        try:
            text = item.payload.decode()
            self.stream.write((decision_line(text) if self.readable else text) + "\n")
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
        if not self.readable:
            return
        rates = ", ".join(f"{sid} {s.fps_processed:.1f} fps ({s.health})"
                          for sid, s in metrics.sources.items())  # fmt: skip
        self.stream.write(f"-- {rates}; {metrics.events_produced} events, outbox "
                          f"{metrics.outbox_backlog}\n")  # fmt: skip
        self.stream.flush()

    def publish_track(self, event: TrackEvent) -> None:
        pass

    def publish_decision(self, source_id: str, summary: bytes, snapshot: bytes | None) -> None:
        pass  # the event lines already carry every decision; stdout keeps no state

    def _close(self, final: StatusEvent | None) -> None:
        if final is not None:
            self.publish_status(final)


def decision_line(payload: str) -> str:
    """A match event as one line for a person: time, source, identity, score and margin,
    track and evidence."""
    event = json.loads(payload)
    when = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    who = event["identity"] or f"unknown {event.get('unknown_id') or ''}".rstrip()
    track = f", track {event['track_id']}" if event.get("track_id") else ""
    frames = event.get("evidence_frames")
    evidence = f", {frames} frames" if frames else ""
    return (f"{when} {event['source_id']}  {who}  {event['score']:.3f} (margin "
            f"{event['margin']:.3f}{track}{evidence}, frame {event['frame_index']})")  # fmt: skip

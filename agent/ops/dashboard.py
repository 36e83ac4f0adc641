"""What the local HTTP endpoint shows (`[http]`): the agent's last report, its recent decisions
with their crops, each source's last snapshot and the gallery's identities. The main loop
writes (`decided`, `reported`); the server's threads read, under one lock."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.events import MatchEvent, MetricsEvent, StatusEvent
from agent.gallery.gallery import Gallery
from agent.metrics import Metrics
from agent.publish.web import WebServer, WebView

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Dashboard:
    def __init__(self, cfg: AgentConfig, metrics: Metrics, engine_builds):
        try:
            from agent.publish.prometheus import AgentCollector, exposition
        except ImportError:
            raise ConfigError(
                "[http] needs prometheus-client: pip install 'edge-embedding-agent[prometheus]'"
            ) from None
        http = cfg.http
        token = os.environ.get(http.token_env) if http.token_env else None
        if http.host not in LOOPBACK and not token:
            raise ConfigError(
                f"[http] host {http.host} is beyond localhost: set a token in ${http.token_env}"
            )
        self.cfg = cfg
        self._lock = threading.Lock()
        self._decisions: OrderedDict[str, tuple[dict, bytes | None]] = OrderedDict()
        self._snapshots: dict[str, bytes] = {}
        self._report: tuple[StatusEvent, MetricsEvent] | None = None
        self._identities: list[dict] = []
        self._images: dict[str, Path] = {}
        self._gallery_version = -1
        collector = AgentCollector(self._metrics, metrics.histograms, engine_builds)
        view = WebView(
            state=self.state,
            metrics_text=lambda: exposition(collector),
            snapshot=lambda sid: self._snapshots.get(sid),
            crop=self._crop,
            identity_image=lambda name: self._images.get(name),
        )
        self.server = WebServer(http.host, http.port, view, token)

    def start(self) -> Dashboard:
        self.server.start()
        return self

    def close(self) -> None:
        self.server.stop()

    # ---- written by the main loop ------------------------------------------------------------

    def decided(self, event: MatchEvent, crop_jpeg: bytes | None) -> None:
        row = {"event_id": event.event_id, "ts": event.ts, "source_id": event.source_id,
               "identity": event.identity or "unknown", "score": event.score,
               "track_id": event.track_id}  # fmt: skip
        with self._lock:
            self._decisions[event.event_id] = (row, crop_jpeg)
            while len(self._decisions) > self.cfg.http.recent:
                self._decisions.popitem(last=False)
            if crop_jpeg is not None:
                self._snapshots[event.source_id] = crop_jpeg

    def reported(self, status: StatusEvent, metrics: MetricsEvent, gallery: Gallery) -> None:
        if gallery.version != self._gallery_version:  # the gallery is read here, not by the
            identities, images = [], {}  # server's threads (SQLite connections are per thread)
            for name, count, _ in gallery.store.identities():
                identities.append({"identity": name, "images": count})
                for entry in gallery.store.entries(name):
                    if Path(entry.source).is_file():
                        images[name] = Path(entry.source)
                        break
            self._gallery_version = gallery.version
            with self._lock:
                self._identities, self._images = identities, images
        with self._lock:
            self._report = (status, metrics)

    # ---- read by the server ------------------------------------------------------------------

    def _metrics(self) -> MetricsEvent:
        with self._lock:
            if self._report is None:
                raise RuntimeError("no report yet")
            return self._report[1]

    def _crop(self, event_id: str) -> bytes | None:
        with self._lock:
            found = self._decisions.get(event_id)
        return found[1] if found else None

    def state(self) -> dict:
        with self._lock:
            report = self._report
            decisions = [row for row, _ in reversed(self._decisions.values())]
            identities = list(self._identities)
        if report is None:
            return {"device_id": self.cfg.device_id, "state": "starting", "model": "",
                    "gallery_version": 0, "events": 0, "sources": [], "decisions": decisions,
                    "gallery": identities}  # fmt: skip
        status, metrics = report
        sources = [{"id": sid, "health": s.health, "fps": s.fps_processed,
                    "frames": s.frames_processed + s.frames_reused, "dropped": s.frames_dropped}
                   for sid, s in metrics.sources.items()]  # fmt: skip
        return {"device_id": self.cfg.device_id, "state": status.state, "model": metrics.model,
                "gallery_version": metrics.gallery_version, "events": metrics.events_produced,
                "sources": sources, "decisions": decisions, "gallery": identities}  # fmt: skip

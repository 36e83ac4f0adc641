"""`agent run`: wires sources -> pipeline -> publisher, and runs until stopped.

SIGTERM/SIGINT: stop reading, finish the frames already read, flush the outbox while the broker
is reachable (at most `pipeline.drain_timeout_s`), publish `stopped`, exit 0. SIGHUP re-opens the
gallery. Under systemd (NOTIFY_SOCKET) it sends READY once frames can flow and WATCHDOG pings
from the main loop, so a hung pipeline gets restarted.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from agent import __version__
from agent.atomic import atomic_write_bytes
from agent.commands import Commands
from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.events import (
    CommandResult,
    EngineBuildStatus,
    MatchEvent,
    MetricsEvent,
    SourceMetrics,
    StatusEvent,
    TrackEvent,
)
from agent.gallery.live import LiveGallery
from agent.metrics import Metrics, ProcessMeter, RateMeter
from agent.ops.build_watch import EngineBuildWatch
from agent.ops.sdnotify import SystemdNotifier
from agent.publish import make_publisher
from agent.runtime.session import EngineBuild, engine_builds
from agent.stream.detect import ModelDetector, make_prepare, source_detectors
from agent.stream.pipeline import Pipeline
from agent.stream.sources import check_file_source, make_source

log = logging.getLogger(__name__)
COMMAND_TIMEOUT_S = 300


def _build_status(builds: list[EngineBuild]) -> list[EngineBuildStatus]:
    return [EngineBuildStatus.model_validate(b, from_attributes=True) for b in builds]


class Agent:
    def __init__(self, cfg: AgentConfig, print_events: bool = False):
        if not cfg.sources:
            raise ConfigError("no sources: add [[sources]] to the config or pass --source")
        self.cfg = cfg
        self.exit_code = 0
        self.print_events = print_events and bool(cfg.mqtt.host)
        self.started = time.monotonic()
        self.notifier = SystemdNotifier()
        self._running = False
        for source in cfg.sources:
            check_file_source(source)
        self.rollout = None
        if cfg.fleet.group:
            from agent.fleet.rollout import GalleryRollout

            self.rollout = GalleryRollout(cfg)
        self._build_watch = EngineBuildWatch(self.notifier, self._report_engine_build).start()
        gallery_path = self.rollout.startup_path() if self.rollout else cfg.gallery_path
        self.live = LiveGallery(cfg, gallery_path)
        self.live.embedder.load()  # now (maybe building a TensorRT engine), not on the first frame
        self.ready = threading.Event()
        self.counters = Metrics()
        self.detectors = source_detectors(cfg, len(cfg.sources))
        self.sources = [make_source(s, make_prepare(cfg, s, d), self.ready)
                        for s, d in zip(cfg.sources, self.detectors, strict=True)]  # fmt: skip
        track = self._emit_track if cfg.mqtt.track_events else None
        self.dashboard = None
        if cfg.http.enabled:
            from agent.ops.dashboard import Dashboard

            self.dashboard = Dashboard(cfg, self.counters, lambda: len(engine_builds()))
        decision = self._emit_decision if cfg.mqtt.host or self.dashboard else None
        self.pipeline = Pipeline(cfg, self.sources, self.live, self._emit, self.ready,
                                 self.counters, track, decision)  # fmt: skip
        self.commands = Commands(cfg, self.live, self.counters)
        self._command_queue: queue.Queue[tuple[str, bytes, Future]] = queue.Queue()
        follow = {self.rollout.topic: self.rollout.announced} if self.rollout else None
        self.publisher = make_publisher(
            cfg, self.status("online"), self._queue_command, self.counters, follow
        )
        self.match_topic = f"{cfg.topic_prefix}/match"
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._process = ProcessMeter()
        self._rates = {s.id: (RateMeter(), RateMeter()) for s in self.sources}
        self._health = {s.id: s.health for s in self.sources}
        self._fleet = self.rollout.status if self.rollout else None  # replaced on every change

    # ---- outputs ---------------------------------------------------------------------------

    def _emit(self, event) -> None:
        payload = event.to_json()
        self.publisher.submit(event.event_id, self.match_topic, payload)
        if self.print_events:
            sys.stdout.write(payload.decode() + "\n")
            sys.stdout.flush()

    def _emit_track(self, event: TrackEvent) -> None:
        self.publisher.publish_track(event)

    def _emit_decision(self, event: MatchEvent, snapshot: bytes | None) -> None:
        """The source's last decision, retained: what dashboards and Home Assistant show."""
        summary = {
            "identity": event.identity or "unknown",
            "score": event.score,
            "margin": event.margin,
            "track_id": event.track_id,
            "unknown_id": event.unknown_id,
            "frame_time_s": event.frame_time_s,
            "ts": event.ts,
            "event_id": event.event_id,
            "snapshot_topic": f"{self.cfg.topic_prefix}/{event.source_id}/snapshot"
            if snapshot is not None else None,
        }  # fmt: skip
        self.publisher.publish_decision(event.source_id, json.dumps(summary).encode(), snapshot)
        if self.dashboard is not None:
            self.dashboard.decided(event, snapshot)

    def status(self, state: str) -> StatusEvent:
        return StatusEvent(
            device_id=self.cfg.device_id,
            state=state,
            version=__version__,
            provider=self.live.embedder.provider,
            model=self.live.gallery.model.label,
            gallery_version=self.live.loaded_version,
            sources={s.id: s.status() for s in self.sources},
            engine_builds=_build_status(engine_builds()),
            fleet=self.rollout.status if self.rollout else None,
        )

    def metrics(self) -> MetricsEvent:
        counters, cache = self.counters, self.live.embedder.cache
        sources = {}
        for s in self.sources:
            c = s.counters
            rate_in, rate_done = self._rates[s.id]
            sources[s.id] = SourceMetrics(
                health=s.health,
                frames_in=c.frames_in,
                frames_processed=c.frames_processed,
                frames_reused=c.frames_reused,
                frames_dropped=c.frames_dropped,
                frames_corrupt=c.frames_corrupt,
                reconnects=c.reconnects,
                fps_in=rate_in.rate(c.frames_in),
                fps_processed=rate_done.rate(c.frames_processed + c.frames_reused),
            )
        errors = counters.errors
        corrupt = sum(s.counters.frames_corrupt for s in self.sources)
        if corrupt:
            errors["corrupt_frames"] = corrupt
        return MetricsEvent(
            device_id=self.cfg.device_id,
            uptime_s=round(time.monotonic() - self.started, 1),
            pid=os.getpid(),
            provider=self.live.embedder.provider,
            model=self.live.gallery.model.label,
            sources=sources,
            latency_ms=counters.percentiles(),
            inference_calls=counters.counter("inference_calls"),
            crops_embedded=counters.counter("crops_embedded"),
            events_produced=counters.counter("events_produced"),
            events_suppressed=self.pipeline.suppressed,
            tracks_linked=counters.counter("tracks_linked"),
            detect_batches=sum(
                d.batches
                for d in {id(d): d for d in self.detectors}.values()
                if isinstance(d, ModelDetector)
            ),
            crops_rejected=counters.counters("rejected:"),
            cache_hit_rate=round(cache.stats.hit_rate, 4) if cache is not None else None,
            gallery_size=self.live.size,
            gallery_version=self.live.loaded_version,
            gallery_reloads=self.live.reloads,
            outbox_backlog=len(self.publisher.outbox),
            outbox_dropped=self.publisher.outbox.dropped,
            published=self.publisher.published,
            broker_connected=self.publisher.connected,
            errors=errors,
            cpu_percent=self._process.cpu_percent(),
            rss_mb=self._process.rss_mb(),
        )

    def _report(self, state: str) -> None:
        """Publish metrics and leave status + metrics in the state dir for `agent status`."""
        metrics, status = self.metrics(), self.status(state)
        self.publisher.publish_metrics(metrics)
        self._write_status_file(status, metrics)
        if self.dashboard is not None:
            self.dashboard.reported(status, metrics, self.live.gallery)

    def _report_engine_build(self, builds: list[EngineBuild]) -> None:
        """From the build watch thread: the main loop is blocked, so refresh the status file."""
        if self._running:
            self._write_status_file(self.status("online"), self.metrics())
            return
        status = StatusEvent(
            device_id=self.cfg.device_id,
            state="starting",
            version=__version__,
            engine_builds=_build_status(builds),
        )
        self._write_status_file(status, None)

    def _write_status_file(self, status: StatusEvent, metrics: MetricsEvent | None) -> None:
        record = {
            "pid": os.getpid(),
            "written_at": time.time(),
            "interval_s": self.cfg.metrics.interval_s,
            "status": status.model_dump(mode="json"),
            "metrics": metrics.model_dump(mode="json") if metrics is not None else None,
        }
        try:
            self.cfg.status_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.cfg.status_path, json.dumps(record).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.cfg.status_path, exc)

    # ---- commands --------------------------------------------------------------------------

    def _queue_command(self, name: str, payload: bytes) -> CommandResult:
        """Called from the publisher's command thread; the main loop runs the command."""
        future: Future = Future()
        self._command_queue.put((name, payload, future))
        try:
            return future.result(timeout=COMMAND_TIMEOUT_S)
        except FutureTimeout:
            return CommandResult(command=name, ok=False, message="timed out")

    def _run_commands(self) -> None:
        while True:
            try:
                name, payload, future = self._command_queue.get_nowait()
            except queue.Empty:
                return
            future.set_result(self.commands.run(name, payload))

    # ---- main loop -------------------------------------------------------------------------

    def stop(self, *_args) -> None:
        self._stop.set()
        self.ready.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def run(self, duration_s: float | None = None) -> int:
        self._install_signals()
        if self.rollout is not None:
            self.rollout.start(self.live.prepare)
        self.publisher.start()
        if self.dashboard is not None:
            self.dashboard.start()
        for source in self.sources:
            source.start()
        names = ", ".join(f"{s.id} ({s.kind})" for s in self.sources)
        log.info("agent running: %s on %s; sources: %s", self.live.gallery.model.label,
                 self.live.embedder.provider, names)  # fmt: skip
        self._running = True
        self.notifier.ready(f"running {len(self.sources)} source(s)")
        interval = self.cfg.metrics.interval_s
        next_report = time.monotonic()
        watchdog = self.notifier.watchdog_interval
        next_ping = time.monotonic()
        deadline = time.monotonic() + duration_s if duration_s else None
        while not self._stop.is_set():
            frames = self.pipeline.collect()
            if frames:
                self.pipeline.process(frames)
            self.pipeline.finish_ended_sources()
            now = time.monotonic()
            self._housekeeping(now)
            if watchdog and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + watchdog
            if now >= next_report:
                self._report("online")
                next_report = now + interval
            if deadline and now >= deadline:
                break
            if not frames and all(s.done and s.health == "failed" for s in self.sources):
                log.error("every source failed (%s); exiting 1 so the service manager restarts",
                          "; ".join(f"{s.id}: {s.error}" for s in self.sources))  # fmt: skip
                self.exit_code = 1
                break
            if self.publisher.failed:
                log.error("events cannot be written any more; they stay in the outbox")
                self.exit_code = 1
                break
            if (
                self.cfg.pipeline.exit_when_done
                and not frames
                and all(s.done for s in self.sources)
            ):
                log.info("all sources ended")
                break
        return self.shutdown()

    def _housekeeping(self, now: float) -> None:
        for source in self.sources:
            source.check_stall(now)
        if self._reload.is_set():
            self._reload.clear()
            log.info("SIGHUP: reloading the gallery")
            self.live.reload()
        else:
            self.live.poll(now)
        if self.rollout is not None and (ready := self.rollout.take_ready()):
            version, prepared = ready
            self.live.swap(prepared)  # between two frames: none is dropped or searched twice
            self.rollout.activated(version, prepared.path)
        self._run_commands()
        health = {s.id: s.health for s in self.sources}
        fleet = self.rollout.status if self.rollout else None
        if health != self._health or fleet is not self._fleet:
            self._health, self._fleet = health, fleet
            self.publisher.publish_status(self.status("online"))

    def _drain(self) -> None:
        """Flush the outbox within `drain_timeout_s`, waiting for a reconnect if need be."""
        deadline = time.monotonic() + self.cfg.pipeline.drain_timeout_s
        publisher = self.publisher
        if not len(publisher.outbox):
            return
        publisher.wait_connected(max(0.0, deadline - time.monotonic()))
        if not publisher.drain(max(0.0, deadline - time.monotonic())):
            log.warning("%d event(s) stay in the outbox for the next start", len(publisher.outbox))

    def shutdown(self) -> int:
        self.notifier.stopping()
        for source in self.sources:
            source.stop()
        for source in self.sources:
            source.join(5)
        for detector in {id(d): d for d in self.detectors}.values():
            if isinstance(detector, ModelDetector):
                detector.close()
        while frames := self.pipeline.collect(idle_wait=0):
            self.pipeline.process(frames)
        self.pipeline.finish()
        self._run_commands()
        self._drain()
        self._report("stopped")
        self.publisher.stop(self.status("stopped"))
        if self.dashboard is not None:
            self.dashboard.close()
        if self.rollout is not None:
            self.rollout.stop()
        self.live.close()
        self._build_watch.stop()
        log.info("agent stopped")
        return self.exit_code

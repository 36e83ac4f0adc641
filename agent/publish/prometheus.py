"""The agent's metrics in Prometheus' text format (prometheus_client), built on each scrape from
the same report `agent status` and `<prefix>/metrics` show, plus the stage latency histograms.
Names follow Prometheus' conventions: `agent_` prefix, base units (seconds), `_total` counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from agent import __version__
from agent.events import MetricsEvent
from agent.metrics import LATENCY_BUCKETS


class AgentCollector:
    def __init__(
        self,
        report: Callable[[], MetricsEvent],
        histograms: Callable[[], dict[str, tuple[list[int], float, int]]],
        engine_builds: Callable[[], int],
    ):
        self.report = report
        self.histograms = histograms
        self.engine_builds = engine_builds

    def collect(self) -> Iterator[Metric]:
        m = self.report()
        info = GaugeMetricFamily("agent_info", "The running agent.",
                                 labels=["version", "model", "provider", "device_id"])  # fmt: skip
        info.add_metric([__version__, m.model, m.provider or "none", m.device_id], 1)
        yield info
        frames = CounterMetricFamily("agent_frames", "Frames per source and outcome.",
                                     labels=["source", "outcome"])  # fmt: skip
        reconnects = CounterMetricFamily("agent_source_reconnects", "Reconnects of a source.",
                                         labels=["source"])  # fmt: skip
        up = GaugeMetricFamily("agent_source_up", "1 while the source delivers frames.",
                               labels=["source"])  # fmt: skip
        fps = GaugeMetricFamily("agent_source_fps", "Frames processed per second, recently.",
                                labels=["source"])  # fmt: skip
        for sid, s in m.sources.items():
            for outcome, n in (("in", s.frames_in), ("processed", s.frames_processed),
                               ("reused", s.frames_reused), ("dropped", s.frames_dropped),
                               ("corrupt", s.frames_corrupt)):  # fmt: skip
                frames.add_metric([sid, outcome], n)
            reconnects.add_metric([sid], s.reconnects)
            up.add_metric([sid], 1.0 if s.health == "ok" else 0.0)
            fps.add_metric([sid], s.fps_processed)
        yield from (frames, reconnects, up, fps)
        latency = HistogramMetricFamily(
            "agent_stage_latency_seconds", "Time per item in each stage.", labels=["stage"]
        )
        for stage, (counts, total, count) in self.histograms().items():
            buckets = [(str(b), c) for b, c in zip(LATENCY_BUCKETS, counts, strict=True)]
            latency.add_metric([stage], [*buckets, ("+Inf", count)], total)
        yield latency
        for name, doc, value in (
            ("agent_events", "Match events produced.", m.events_produced),
            ("agent_events_suppressed", "Matches held back by the cool-down.",
             m.events_suppressed),
            ("agent_published", "Events the broker acknowledged.", m.published),
            ("agent_inference_calls", "Embedding inference calls.", m.inference_calls),
            ("agent_crops_embedded", "Crops embedded.", m.crops_embedded),
            ("agent_detect_batches", "Detector inference calls.", m.detect_batches),
            ("agent_tracks_linked", "Tracks found to continue an earlier object.",
             m.tracks_linked),
            ("agent_outbox_dropped", "Events the full outbox dropped.", m.outbox_dropped),
            ("agent_gallery_reloads", "Gallery reloads.", m.gallery_reloads),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        errors = CounterMetricFamily("agent_errors", "Errors by kind.", labels=["kind"])
        for kind, n in m.errors.items():
            errors.add_metric([kind], n)
        yield errors
        rejected = CounterMetricFamily("agent_crops_rejected", "Detections not embedded.",
                                       labels=["reason"])  # fmt: skip
        for reason, n in m.crops_rejected.items():
            rejected.add_metric([reason], n)
        yield rejected
        for name, doc, value in (
            ("agent_outbox_backlog", "Events waiting in the outbox.", m.outbox_backlog),
            ("agent_cache_hit_ratio", "Embedding cache hit rate.", m.cache_hit_rate or 0.0),
            ("agent_gallery_vectors", "Vectors in the gallery.", m.gallery_size),
            ("agent_gallery_version", "Loaded gallery version.", m.gallery_version),
            ("agent_broker_connected", "1 while connected to the broker.",
             1.0 if m.broker_connected else 0.0),
            ("agent_engine_builds", "TensorRT engine builds under way.", self.engine_builds()),
            ("agent_cpu_percent", "CPU use of the agent process.", m.cpu_percent),
            ("agent_resident_memory_bytes", "Resident memory.", m.rss_mb * 2**20),
            ("agent_uptime_seconds", "Time since start.", m.uptime_s),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, doc, value=value)


def exposition(collector: AgentCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)

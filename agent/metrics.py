"""Counters the running agent keeps, and process CPU/RSS. Stage latencies are
`agent.stats.StageTimes` windows; percentiles are computed only when a MetricsEvent is made."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

from agent.events import Percentiles
from agent.stats import StageTimes

STAGES = ("decode", "detect", "embed", "search", "publish", "e2e")


def percentiles(times: StageTimes) -> Percentiles | None:
    """A stage's recent latency percentiles in ms, or None before its first sample."""
    summary = times.summary()
    if not summary["count"]:
        return None
    return Percentiles(p50=summary["p50_ms"], p95=summary["p95_ms"], p99=summary["p99_ms"],
                       n=int(summary["count"]))  # fmt: skip


@dataclass
class SourceCounters:
    """Written by one source thread (in, dropped, corrupt, reconnects) and the pipeline."""

    frames_in: int = 0
    frames_processed: int = 0
    frames_reused: int = 0
    frames_dropped: int = 0
    frames_corrupt: int = 0
    reconnects: int = 0


class RateMeter:
    """Per-second rate of a monotonically growing counter between two reads."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None

    def rate(self, value: int) -> float:
        now = time.monotonic()
        last, self._last = self._last, (now, value)
        if last is None or now <= last[0]:
            return 0.0
        return round((value - last[1]) / (now - last[0]), 2)


class ProcessMeter:
    """CPU percent (of one core) since the previous read, and resident memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (time.monotonic(), self._cpu_seconds())

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def cpu_percent(self) -> float:
        with self._lock:
            now, cpu = time.monotonic(), self._cpu_seconds()
            (then, cpu_then), self._last = self._last, (now, cpu)
        return round(100.0 * (cpu - cpu_then) / max(now - then, 1e-6), 1)

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                pages = int(fh.read().split()[1])
            return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
        except OSError:  # not Linux: peak instead of current
            return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

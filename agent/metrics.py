"""What the agent measures: stage latency windows, counters, errors by kind, process CPU/RSS.

`Metrics` is the one object the running agent hands to its stages (pipeline, sources,
publisher, commands); library users get `NullMetrics`, which records nothing, so no stage needs
an `if metrics:` branch. Percentiles are computed only when a report is made.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from agent.events import Percentiles

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StageTimes:
    """Recent durations of one stage, bounded so a long run keeps constant memory, and a
    histogram of all of them (per item, LATENCY_BUCKETS seconds) for Prometheus."""

    def __init__(self, maxlen: int = 4096):
        self._samples: deque[float] = deque(maxlen=maxlen)
        self.count = 0
        self.total_s = 0.0
        self._bins = [0] * len(LATENCY_BUCKETS)  # items in (previous bound, this bound]

    def add(self, seconds: float, n: int = 1) -> None:
        """Record `seconds` spent on `n` items (stored per item)."""
        per_item = seconds / n
        self._samples.append(per_item)
        self.count += n
        self.total_s += seconds
        i = bisect_left(LATENCY_BUCKETS, per_item)
        if i < len(self._bins):  # above the last bound: only in the count (+Inf)
            self._bins[i] += n

    @property
    def buckets(self) -> list[int]:
        """Items at or below each bound (cumulative, as Prometheus histograms count)."""
        return list(accumulate(self._bins))

    def summary(self) -> dict[str, float]:
        if not self._samples:
            return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "total_s": 0.0}
        arr = np.fromiter(self._samples, dtype=np.float64) * 1e3
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return {
            "count": self.count,
            "p50_ms": round(float(p50), 3),
            "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3),
            "total_s": round(self.total_s, 4),
        }


class PipelineStats:
    """Per-stage latencies and item counters, safe to update from worker threads."""

    def __init__(self, stages: tuple[str, ...]):
        self._lock = threading.Lock()
        self.stages = {name: StageTimes() for name in stages}
        self.items = 0
        self.errors = 0
        self.batches = 0
        self.wall_s = 0.0

    def record(self, stage: str, seconds: float, n: int = 1) -> None:
        with self._lock:
            self.stages[stage].add(seconds, n)

    def count(self, items: int = 0, errors: int = 0, batches: int = 0, wall_s: float = 0.0):
        with self._lock:
            self.items += items
            self.errors += errors
            self.batches += batches
            self.wall_s += wall_s

    def summary(self) -> dict:
        with self._lock:
            return {
                "items": self.items,
                "errors": self.errors,
                "batches": self.batches,
                "items_per_s": round(self.items / self.wall_s, 2) if self.wall_s else 0.0,
                "stages": {name: times.summary() for name, times in self.stages.items()},
            }


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.seconds`"""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0


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


class Metrics:
    """Stage latencies, named counters and errors by kind of one running agent (thread-safe)."""

    def __init__(self, stages: tuple[str, ...] = STAGES):
        self._lock = threading.Lock()
        self.latency = {name: StageTimes() for name in stages}
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def observe(self, stage: str, seconds: float, n: int = 1) -> None:
        with self._lock:
            self.latency[stage].add(seconds, n)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def error(self, kind: str, n: int = 1) -> None:
        """A failure of some kind (a crop that did not embed, a refused command, ...)."""
        with self._lock:
            self._errors[kind] += n

    def counter(self, name: str) -> int:
        return self._counts[name]

    def counters(self, prefix: str) -> dict[str, int]:
        """The counters named `prefix` + something, by that something."""
        with self._lock:
            return {k[len(prefix) :]: n for k, n in self._counts.items() if k.startswith(prefix)}

    @property
    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def percentiles(self) -> dict[str, Percentiles]:
        with self._lock:
            windows = dict(self.latency)
        return {k: p for k, t in windows.items() if (p := percentiles(t)) is not None}

    def histograms(self) -> dict[str, tuple[list[int], float, int]]:
        """Per stage: cumulative counts per LATENCY_BUCKETS bound, the sum (s) and the count."""
        with self._lock:
            return {k: (t.buckets, t.total_s, t.count) for k, t in self.latency.items()
                    if t.count}  # fmt: skip


class NullMetrics(Metrics):
    """Records nothing: the default for library use."""

    def observe(self, stage: str, seconds: float, n: int = 1) -> None:
        pass

    def count(self, name: str, n: int = 1) -> None:
        pass

    def error(self, kind: str, n: int = 1) -> None:
        pass

"""Bounded latency and throughput statistics (per stage p50/p95, counters)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class StageTimes:
    """Recent durations of one stage, bounded so a long run keeps constant memory."""

    def __init__(self, maxlen: int = 4096):
        self._samples: deque[float] = deque(maxlen=maxlen)
        self.count = 0
        self.total_s = 0.0

    def add(self, seconds: float, n: int = 1) -> None:
        """Record `seconds` spent on `n` items (stored per item)."""
        self._samples.append(seconds / n)
        self.count += n
        self.total_s += seconds

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

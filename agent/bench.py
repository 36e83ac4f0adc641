"""Model throughput benchmarks: variants interleaved in rounds so they share the same noise."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.extract import ImageExtractor
from agent.session import node_placement


@dataclass
class BenchRow:
    model: str
    variant: str
    provider: str
    batch: int
    images_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def bench_variants(
    extractors: dict[str, ImageExtractor],
    batches: list[int],
    seconds: float = 2.0,
    rounds: int = 3,
) -> list[BenchRow]:
    """Images/s of bare inference per variant and batch size.

    Each round runs every variant for `seconds / rounds`; the figure reported is the median over
    rounds, so a burst of load on a shared machine hits all variants alike.
    """
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        rates: dict[str, list[float]] = {v: [] for v in extractors}
        lat: dict[str, list[float]] = {v: [] for v in extractors}
        inputs = {}
        for name, ex in extractors.items():
            inputs[name] = rng.standard_normal((batch, *ex.preprocessor.shape)).astype(np.float32)
            ex.embed_tensors(inputs[name])  # warm this shape
        for _ in range(rounds):
            for name, ex in extractors.items():
                done, t0 = 0, time.perf_counter()
                while True:
                    t = time.perf_counter()
                    ex.embed_tensors(inputs[name])
                    lat[name].append(time.perf_counter() - t)
                    done += batch
                    if time.perf_counter() - t0 >= seconds / rounds:
                        break
                rates[name].append(done / (time.perf_counter() - t0))
        for name, ex in extractors.items():
            p50, p95 = np.percentile(np.array(lat[name]) * 1e3, [50, 95])
            rows.append(
                BenchRow(
                    ex.model.manifest.name,
                    name,
                    ex.provider,
                    batch,
                    round(float(np.median(rates[name])), 1),
                    round(float(p50), 2),
                    round(float(p95), 2),
                )
            )
    return rows


def placement_of(ex: ImageExtractor, trt_cache_base: Path | None) -> dict[str, int]:
    """Nodes per provider when `ex`'s model runs one image under the same provider options."""
    feed = {ex.spec.name: np.zeros((1, *ex.preprocessor.shape), dtype=np.float32)}
    m = ex.model
    return node_placement(m.path, ex.cfg, feed, trt_cache_base, m.sha256, m.variant.precision)

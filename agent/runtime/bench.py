"""Model throughput benchmarks: variants interleaved in rounds so they share the same noise."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.errors import InputError
from agent.runtime.extract import ImageExtractor
from agent.runtime.registry import ModelRegistry
from agent.runtime.session import node_placement


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


@dataclass(frozen=True)
class ModelBench:
    """`agent models bench`: rows per variant and batch, speed-ups over fp32 and where the
    nodes ran (a GPU provider that was asked for but left nodes on the CPU is a fallback)."""

    model: str
    rows: list[BenchRow]
    ratios: dict[str, float]
    requested_provider: str
    nodes_by_provider: dict[str, dict[str, int]]

    @property
    def fallbacks(self) -> dict[str, dict[str, int]]:
        return {v: n for v, n in self.nodes_by_provider.items()
                if set(n) != {self.requested_provider}}  # fmt: skip

    def as_dict(self) -> dict:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "ratios": self.ratios,
            "requested_provider": self.requested_provider,
            "nodes_by_provider": self.nodes_by_provider,
        }


def bench_model(
    cfg: AgentConfig, name: str, variants: list[str], batches: list[int], seconds: float
) -> ModelBench:
    """Bench the named variants of a model (all present ones when empty) in one run."""
    registry = ModelRegistry.from_config(cfg)
    manifest = registry.get(name)
    variants = variants or [s.name for s in registry.status(manifest) if s.path is not None]
    if not variants:
        raise InputError(f"no files present for any variant of {name}")
    models_cfg = cfg.models.model_copy(update={"max_batch": max(batches)})
    extractors = {}
    try:
        for v in variants:
            model = registry.resolve(name, v, cfg.models.verify_sha256)
            extractors[v] = ImageExtractor(model, models_cfg, cfg.trt_cache_path)
        rows = bench_variants(extractors, batches, seconds)
        placement = {v: placement_of(ex, cfg.trt_cache_path) for v, ex in extractors.items()}
    finally:
        for ex in extractors.values():
            ex.close()
    ratios = {}
    for r in rows:
        base = next((x for x in rows if x.variant == "fp32" and x.batch == r.batch), None)
        if base is not None and r.variant != "fp32":
            ratios[f"{r.variant}/fp32@b{r.batch}"] = round(r.images_per_s / base.images_per_s, 3)
    wanted = cfg.models.providers[0] if cfg.models.providers else "cpu"
    return ModelBench(name, rows, ratios, wanted, placement)

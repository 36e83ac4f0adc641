"""onnxruntime sessions: execution-provider choice (TensorRT > CUDA > CPU), options, fallback."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from agent.config import ModelsConfig
from agent.errors import ModelError

log = logging.getLogger(__name__)

ORT_PROVIDER = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAME = {v: k for k, v in ORT_PROVIDER.items()}
_OPT_LEVEL = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionInfo:
    requested: list[str]
    available: list[str]
    active: list[str]

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the first active one)."""
        return SHORT_NAME.get(self.active[0], self.active[0]) if self.active else "none"

    @property
    def fell_back(self) -> bool:
        return bool(self.requested) and self.provider != self.requested[0]


def _provider_options(name: str, cfg: ModelsConfig, cache_dir: Path | None) -> dict[str, str]:
    if name == "tensorrt":
        opts = {"trt_fp16_enable": str(cfg.trt_fp16), "trt_int8_enable": "False"}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            opts |= {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache_dir),
            }
        return opts
    return {}


def create_session(
    path: Path, cfg: ModelsConfig, trt_cache_dir: Path | None = None
) -> tuple[ort.InferenceSession, SessionInfo]:
    """Open `path` with the first usable provider of `cfg.providers`; say when it falls back."""
    available = ort.get_available_providers()
    requested = list(cfg.providers) or ["cpu"]
    chosen = [p for p in requested if ORT_PROVIDER[p] in available]
    skipped = [p for p in requested if ORT_PROVIDER[p] not in available]
    if skipped and requested[0] in skipped:
        log.info(
            "execution providers %s are not in this onnxruntime build (%s); using %s",
            ",".join(skipped),
            ",".join(SHORT_NAME.get(a, a) for a in available),
            chosen[0] if chosen else "cpu",
        )
    if not chosen:
        chosen = ["cpu"]
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVEL[cfg.graph_optimization]
    options.intra_op_num_threads = cfg.intra_threads or (os.cpu_count() or 1)
    options.log_severity_level = 3
    providers = [(ORT_PROVIDER[p], _provider_options(p, cfg, trt_cache_dir)) for p in chosen]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
    info = SessionInfo(
        requested=requested,
        available=[SHORT_NAME.get(a, a) for a in available],
        active=session.get_providers(),
    )
    if chosen and info.provider != chosen[0]:
        log.warning(
            "provider %s failed to initialise for %s; running on %s",
            chosen[0],
            path.name,
            info.provider,
        )
    log.info("%s runs on %s", path.name, info.provider)
    return session, info

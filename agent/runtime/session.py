"""onnxruntime sessions: execution-provider choice (TensorRT > CUDA > CPU), options, fallback.

TensorRT engines are cached under `<state_dir>/trt_cache/<model sha>-<gpu>-trt<version>/`, so a
new model file, another GPU or a TensorRT upgrade each get their own engine instead of loading a
stale one. Building an engine can take minutes on a Jetson; while one is being built it is listed
by `engine_builds()`, which the running agent turns into systemd keep-alives and a status field.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
GPU_PROVIDERS = {"tensorrt", "cuda"}
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


@dataclass(frozen=True)
class GraphInput:
    """The image input's name and per-item shape, for TensorRT optimisation profiles."""

    name: str
    item_shape: tuple[int, ...]
    max_batch: int


# ---- what the engine cache is keyed by -------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


@functools.cache
def gpu_identity() -> str:
    """A short name of this machine's GPU: the Jetson module, nvidia-smi's name, or `nogpu`."""
    model = Path("/proc/device-tree/model")
    with contextlib.suppress(OSError):
        text = model.read_text(errors="replace").strip("\0 \n")
        if "jetson" in text.lower() or "orin" in text.lower():
            return _slug(text)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return _slug(out.stdout.splitlines()[0])
    return "nogpu"


def _decode_trt_version(v: int) -> str:
    """getInferLibVersion(): 8601 = 8.6.1 (TensorRT 8), 100300 = 10.3.0 (TensorRT >= 10)."""
    if v >= 10000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


@functools.cache
def tensorrt_version() -> str | None:
    """The TensorRT library this process would load (the Python wheel or libnvinfer), or None."""
    for dist in ("tensorrt", "tensorrt-libs", "tensorrt_libs"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    for lib in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            return _decode_trt_version(int(ctypes.CDLL(lib).getInferLibVersion()))
        except (OSError, AttributeError):
            continue
    return None


def engine_cache_dir(base: Path, model_sha256: str) -> Path:
    """Where TensorRT engines for this model file, GPU and TensorRT version live."""
    trt = tensorrt_version() or "none"
    return base / f"{model_sha256[:16]}-{gpu_identity()}-trt{trt}"


def has_cached_engine(cache_dir: Path) -> bool:
    return cache_dir.is_dir() and any(cache_dir.glob("*.engine"))


# ---- engine builds in progress ---------------------------------------------------------------


@dataclass(frozen=True)
class EngineBuild:
    model: str
    cache_dir: str
    started_at: float = field(default_factory=time.time)


_builds: dict[int, EngineBuild] = {}
_builds_lock = threading.Lock()


def engine_builds() -> list[EngineBuild]:
    """TensorRT engines being built right now (in any thread)."""
    with _builds_lock:
        return list(_builds.values())


@contextlib.contextmanager
def engine_build(model: str, cache_dir: Path) -> Iterator[None]:
    """Mark a TensorRT engine build: logged loudly, listed by `engine_builds()` until done."""
    build = EngineBuild(model, str(cache_dir))
    log.warning(
        "building the TensorRT engine for %s (nothing cached in %s); this takes minutes on a "
        "Jetson and happens once per model, GPU and TensorRT version",
        model,
        cache_dir,
    )
    with _builds_lock:
        _builds[id(build)] = build
    try:
        yield
    finally:
        with _builds_lock:
            _builds.pop(id(build), None)
        log.warning("TensorRT engine for %s built in %.0f s", model, time.time() - build.started_at)


# ---- provider options ------------------------------------------------------------------------


def _shape(graph_input: GraphInput, batch: int) -> str:
    return f"{graph_input.name}:{'x'.join(str(d) for d in (batch, *graph_input.item_shape))}"


def provider_options(
    name: str,
    cfg: ModelsConfig,
    cache_dir: Path | None,
    precision: str = "fp32",
    graph_input: GraphInput | None = None,
) -> dict[str, str]:
    """onnxruntime options for one provider (strings, as the C API takes them)."""
    if name == "tensorrt":
        opts = {
            "trt_fp16_enable": str(cfg.trt_fp16),
            # A QDQ graph carries its own scales: int8 needs no calibration table.
            "trt_int8_enable": str(cfg.trt_int8 and precision == "int8"),
            "trt_max_workspace_size": str(cfg.trt_workspace_mb * 2**20),
            "trt_builder_optimization_level": str(cfg.trt_builder_level),
            "trt_cuda_graph_enable": str(cfg.cuda_graph),
        }
        if cache_dir is not None:
            opts |= {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache_dir),
            }
        if graph_input is not None:
            # One engine for every batch size the agent sends, built when the session opens.
            opts |= {
                "trt_profile_min_shapes": _shape(graph_input, 1),
                "trt_profile_opt_shapes": _shape(graph_input, graph_input.max_batch),
                "trt_profile_max_shapes": _shape(graph_input, graph_input.max_batch),
            }
        return opts
    if name == "cuda":
        return {
            "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "True",
            "enable_cuda_graph": str(cfg.cuda_graph),
        }
    return {}


def _session_options(cfg: ModelsConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVEL[cfg.graph_optimization]
    options.intra_op_num_threads = cfg.intra_threads or (os.cpu_count() or 1)
    options.log_severity_level = 3
    return options


@functools.cache
def _preload_cuda_libraries() -> None:
    """CUDA/cuDNN from NVIDIA's pip wheels (the x86 cuda image) are not on the loader's path;
    onnxruntime >= 1.21 can load them first. System-wide CUDA (Jetson) needs nothing."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            preload()


def _dynamic_batch(path: Path, graph_input: GraphInput) -> bool:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    probe = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in probe.get_inputs()}
    return not isinstance(shapes.get(graph_input.name, [1])[0], int)


@dataclass(frozen=True)
class ProviderPlan:
    """Which providers a session gets, with their options, and where TensorRT caches engines."""

    requested: list[str]
    available: list[str]
    chosen: list[str]
    cache_dir: Path | None
    providers: list[tuple[str, dict[str, str]]]


def plan_providers(
    path: Path,
    cfg: ModelsConfig,
    trt_cache_base: Path | None,
    sha256: str = "",
    precision: str = "fp32",
    graph_input: GraphInput | None = None,
) -> ProviderPlan:
    """The usable providers of `cfg.providers` in order, with options (cpu as a last resort)."""
    available = ort.get_available_providers()
    requested = list(cfg.providers) or ["cpu"]
    chosen = [p for p in requested if ORT_PROVIDER[p] in available]
    skipped = [p for p in requested if ORT_PROVIDER[p] not in available]
    if skipped and requested[0] in skipped:
        # A CPU-only build on a box without a GPU is the normal case there: said once, quietly.
        level = logging.INFO if GPU_PROVIDERS & {SHORT_NAME.get(a, a) for a in available} else (
            logging.DEBUG)  # fmt: skip
        log.log(
            level,
            "execution providers %s are not in this onnxruntime build (%s); using %s",
            ",".join(skipped),
            ",".join(SHORT_NAME.get(a, a) for a in available),
            chosen[0] if chosen else "cpu",
        )
    chosen = chosen or ["cpu"]
    if GPU_PROVIDERS & set(chosen):
        _preload_cuda_libraries()
    cache_dir = None
    if "tensorrt" in chosen and trt_cache_base is not None:
        cache_dir = engine_cache_dir(trt_cache_base, sha256 or path.name)
        cache_dir.mkdir(parents=True, exist_ok=True)
    if graph_input is not None and "tensorrt" in chosen and not _dynamic_batch(path, graph_input):
        graph_input = None  # a fixed-batch graph takes no optimisation profile
    providers = [
        (ORT_PROVIDER[p], provider_options(p, cfg, cache_dir, precision, graph_input))
        for p in chosen
    ]
    available_short = [SHORT_NAME.get(a, a) for a in available]
    return ProviderPlan(requested, available_short, chosen, cache_dir, providers)


def create_session(
    path: Path,
    cfg: ModelsConfig,
    trt_cache_base: Path | None = None,
    *,
    sha256: str = "",
    precision: str = "fp32",
    graph_input: GraphInput | None = None,
    label: str | None = None,
) -> tuple[ort.InferenceSession, SessionInfo]:
    """Open `path` with the first usable provider of `cfg.providers`; say when it falls back."""
    label = label or path.name
    plan = plan_providers(path, cfg, trt_cache_base, sha256, precision, graph_input)
    cache_dir = plan.cache_dir
    building = (
        engine_build(label, cache_dir)
        if plan.chosen[0] == "tensorrt" and cache_dir and not has_cached_engine(cache_dir)
        else contextlib.nullcontext()
    )
    try:
        with building:
            session = ort.InferenceSession(
                str(path), _session_options(cfg), providers=plan.providers
            )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}") from None
    info = SessionInfo(plan.requested, plan.available, session.get_providers())
    if info.provider != plan.chosen[0]:
        log.warning("provider %s failed to initialise for %s; running on %s",
                    plan.chosen[0], label, info.provider)  # fmt: skip
    log.info("%s runs on %s", label, info.provider)
    return session, info


# ---- running: plain, or bound to device buffers (CUDA graphs) --------------------------------


class BoundRunner:
    """Runs a one-input, one-output graph through IO binding into buffers kept per batch size.

    The input and output live on `device` ("cuda" or "cpu") at fixed addresses, which is what
    CUDA-graph replay needs; each batch size has its own buffers and graph id. Batches are padded
    up to a power of two (at most `max_batch`) so a handful of graphs serve every size.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_name: str,
        device: str,
        cuda_graph: bool = False,
    ):
        self.session = session
        self.cuda_graph = cuda_graph
        self.input_name = input_name
        self.output_name = output_name
        self.device = device
        self._buffers: dict[int, tuple[ort.OrtValue, ort.OrtValue, ort.IOBinding]] = {}
        self._item_shape: tuple[int, ...] | None = None

    @staticmethod
    def bucket(n: int, max_batch: int) -> int:
        size = 1
        while size < n:
            size *= 2
        return min(size, max_batch) if n <= max_batch else n

    def _output_shape(self, size: int) -> tuple[int, ...]:
        out = next(o for o in self.session.get_outputs() if o.name == self.output_name)
        if out.type != "tensor(float)" or not all(isinstance(d, int) for d in out.shape[1:]):
            raise ModelError(f"output {self.output_name!r} {out.type} {out.shape}: IO binding "
                             "needs a float output with a fixed per-item shape")  # fmt: skip
        return (size, *out.shape[1:])

    def _bound(self, size: int, item_shape: tuple[int, ...]):
        if size not in self._buffers:
            x = ort.OrtValue.ortvalue_from_shape_and_type((size, *item_shape), np.float32,
                                                          self.device, 0)  # fmt: skip
            y = ort.OrtValue.ortvalue_from_shape_and_type(self._output_shape(size), np.float32,
                                                          self.device, 0)  # fmt: skip
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, x)
            binding.bind_ortvalue_output(self.output_name, y)
            self._buffers[size] = (x, y, binding)
        return self._buffers[size]

    def run(self, batch: np.ndarray, max_batch: int) -> np.ndarray:
        n = len(batch)
        size = self.bucket(n, max_batch)
        if size != n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        x, y, binding = self._bound(size, tuple(batch.shape[1:]))
        x.update_inplace(np.ascontiguousarray(batch, dtype=np.float32))
        options = ort.RunOptions()
        if self.cuda_graph:
            options.add_run_config_entry("gpu_graph_id", str(size))
        self.session.run_with_iobinding(binding, options)
        return y.numpy()[:n]


# ---- where the nodes actually run ------------------------------------------------------------


def node_placement(
    path: Path,
    cfg: ModelsConfig,
    feed: dict[str, np.ndarray],
    trt_cache_base: Path | None = None,
    sha256: str = "",
    precision: str = "fp32",
) -> dict[str, int]:
    """Nodes executed per provider in one profiled run: {"cpu": 105} or {"tensorrt": 1, ...}.

    TensorRT shows as the fused subgraph nodes it took over; anything listed under cpu while a
    GPU provider was asked for is a (partial) CPU fallback.
    """
    options = _session_options(cfg)
    plan = plan_providers(path, cfg, trt_cache_base, sha256, precision)
    with tempfile.TemporaryDirectory(prefix="agent-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=plan.providers)
        session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for event in trace:
        args = event.get("args") or {}
        provider = args.get("provider")
        if event.get("cat") != "Node" or not provider or event["name"] in seen:
            continue
        seen.add(event["name"])
        counts[SHORT_NAME.get(provider, provider)] += 1
    return dict(counts)

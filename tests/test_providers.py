"""Execution-provider plumbing that runs without a GPU: TensorRT options and engine-cache keys,
IO binding (on CPU buffers), node placement, and the engine-build keep-alive."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import onnxruntime as ort
import pytest

from agent.config import ModelsConfig
from agent.ops.build_watch import EngineBuildWatch
from agent.ops.sdnotify import SystemdNotifier
from agent.runtime.session import (
    BoundRunner,
    GraphInput,
    _decode_trt_version,
    engine_build,
    engine_builds,
    engine_cache_dir,
    gpu_identity,
    has_cached_engine,
    node_placement,
    provider_options,
    tensorrt_version,
)
from tests.conftest import shared_file
from tests.test_cli import run


def test_tensorrt_options_follow_precision_workspace_and_profile(tmp_path):
    cfg = ModelsConfig(trt_workspace_mb=512, trt_builder_level=2)
    graph = GraphInput("input", (3, 224, 224), 16)
    fp32 = provider_options("tensorrt", cfg, tmp_path, "fp32", graph)
    int8 = provider_options("tensorrt", cfg, tmp_path, "int8", graph)
    assert fp32["trt_int8_enable"] == "False" and int8["trt_int8_enable"] == "True"
    assert fp32["trt_fp16_enable"] == "True"
    assert fp32["trt_max_workspace_size"] == str(512 * 2**20)
    assert fp32["trt_builder_optimization_level"] == "2"
    assert fp32["trt_engine_cache_path"] == fp32["trt_timing_cache_path"] == str(tmp_path)
    assert fp32["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert fp32["trt_profile_max_shapes"] == "input:16x3x224x224"
    off = ModelsConfig(trt_int8=False, trt_fp16=False, cuda_graph=True)
    opts = provider_options("tensorrt", off, None, "int8")
    assert opts["trt_int8_enable"] == "False" and opts["trt_fp16_enable"] == "False"
    assert "trt_engine_cache_path" not in opts and "trt_profile_min_shapes" not in opts
    assert opts["trt_cuda_graph_enable"] == "True"
    assert provider_options("cuda", off, None)["enable_cuda_graph"] == "True"
    assert provider_options("cpu", cfg, tmp_path) == {}


def test_engine_cache_is_keyed_by_model_gpu_and_tensorrt_version(tmp_path):
    a = engine_cache_dir(tmp_path, "a" * 64)
    b = engine_cache_dir(tmp_path, "b" * 64)
    assert a != b and a.parent == b.parent == tmp_path
    trt = tensorrt_version() or "none"
    assert a.name == f"{'a' * 16}-{gpu_identity()}-trt{trt}"
    assert _decode_trt_version(8601) == "8.6.1"  # TensorRT 8 numbering
    assert _decode_trt_version(100300) == "10.3.0"  # TensorRT 10 numbering
    a.mkdir()
    assert not has_cached_engine(a)
    (a / "TensorrtExecutionProvider_TRTKernel_graph_x_1_sm87.engine").write_bytes(b"x")
    assert has_cached_engine(a)


@pytest.fixture
def mobilenet_int8():
    return shared_file("models/mobilenetv2_int8_qdq.onnx")


def test_bound_runner_matches_plain_run_and_reuses_buffers(mobilenet_int8):
    session = ort.InferenceSession(str(mobilenet_int8), providers=["CPUExecutionProvider"])
    out_name = session.get_outputs()[0].name
    runner = BoundRunner(session, "input", out_name, "cpu")
    rng = np.random.default_rng(1)
    for n in (1, 3, 8):  # 3 is padded to a batch of 4
        batch = rng.standard_normal((n, 3, 224, 224)).astype(np.float32)
        want = session.run([out_name], {"input": batch})[0]
        got = runner.run(batch, max_batch=8)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert sorted(runner._buffers) == [1, 4, 8]
    x_before = runner._buffers[4][0].data_ptr()
    runner.run(rng.standard_normal((4, 3, 224, 224)).astype(np.float32), max_batch=8)
    assert runner._buffers[4][0].data_ptr() == x_before  # same device buffer: graph-replayable
    assert [BoundRunner.bucket(n, 16) for n in (1, 2, 3, 5, 16, 20)] == [1, 2, 4, 8, 16, 20]


def test_node_placement_counts_nodes_per_provider(mobilenet_int8):
    feed = {"input": np.zeros((1, 3, 224, 224), np.float32)}
    placement = node_placement(mobilenet_int8, ModelsConfig(providers=["cpu"]), feed)
    assert set(placement) == {"cpu"}
    assert placement["cpu"] > 20
    unoptimised = node_placement(
        mobilenet_int8, ModelsConfig(providers=["cpu"], graph_optimization="disable"), feed
    )
    assert unoptimised["cpu"] > placement["cpu"]  # fusion really shows in the count


def test_models_bench_reports_nodes_and_the_fallback(shared_models):
    out = run("models", "bench", "mobilenetv2", "--variant", "int8", "--batch", "1",
              "--seconds", "0.3", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["requested_provider"] == "tensorrt"  # the default preference
    nodes = report["nodes_by_provider"]["int8"]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        assert set(nodes) == {"cpu"}
        table = run("models", "bench", "mobilenetv2", "--variant", "int8", "--batch", "1",
                    "--seconds", "0.3")  # fmt: skip
        said = " ".join(table.stdout.split())
        assert "int8: 67 nodes on cpu (tensorrt is not in this onnxruntime build)" in said
        assert "warning" not in said  # a CPU-only build is not a fault


def test_engine_build_watch_keeps_systemd_informed(tmp_path, monkeypatch):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.6)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    seen: list[list] = []
    watch = EngineBuildWatch(SystemdNotifier(), seen.append, period_s=0.1).start()
    try:
        with pytest.raises(socket.timeout):
            sock.recv(4096)  # no build: silence, the main loop's pings are what count
        with engine_build("mobilenetv2:int8", tmp_path / "cache"):
            assert [b.model for b in engine_builds()] == ["mobilenetv2:int8"]
            message = sock.recv(4096).decode().split("\n")
        assert engine_builds() == []
    finally:
        watch.stop()
        sock.close()
    assert "WATCHDOG=1" in message
    assert "EXTEND_TIMEOUT_USEC=400000" in message
    assert any(m.startswith("STATUS=building TensorRT engine: mobilenetv2:int8") for m in message)
    assert seen and seen[0][0].cache_dir == str(tmp_path / "cache")


def test_status_during_an_engine_build_is_starting_not_dead(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    build = {"model": "m:int8", "started_at": time.time() - 42, "cache_dir": "/x"}
    record = {
        "pid": os.getpid(),
        "written_at": time.time(),
        "interval_s": 10,
        "status": {"device_id": "d", "state": "starting", "engine_builds": [build]},
        "metrics": None,
    }
    (state / "status.json").write_text(json.dumps(record))
    out = run("status", env={**os.environ, "AGENT_STATE_DIR": str(state)})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "building TensorRT engine for m:int8 (4" in text and "d starting" in text

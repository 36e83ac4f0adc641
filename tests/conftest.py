"""Fixtures: isolated state, real shared files (fail under AGENT_REQUIRE_SHARED=1), tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGENT_SHARED_DIR", REPO.parent / "shared"))


def shared_file(rel: str) -> Path:
    """A file under ../shared: skip when absent, or fail when AGENT_REQUIRE_SHARED=1 (CI)."""
    path = SHARED / rel
    if not path.exists():
        message = f"shared file {path} is missing"
        if os.environ.get("AGENT_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (AGENT_REQUIRE_SHARED=1)")
        pytest.skip(message + "; set AGENT_SHARED_DIR or run beside ../shared")
    return path


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory, monkeypatch):
    """Each test gets its own state dir; no user config or models dir leaks in."""
    state = tmp_path_factory.mktemp("state")
    for var in list(os.environ):
        if var.startswith("AGENT_") and var not in ("AGENT_REQUIRE_SHARED", "AGENT_SHARED_DIR"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_DATA_HOME", str(state))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return state / "agent"


@pytest.fixture(autouse=True)
def no_leftover_agents():
    yield
    from tests.agent_support import kill_leftovers

    kill_leftovers()


@pytest.fixture
def shared_models(monkeypatch) -> Path:
    models = shared_file("models")
    monkeypatch.setenv("AGENT_MODELS_DIR", str(models))
    return models


def build_tiny_image_model(
    path: Path,
    dim: int = 8,
    size: int = 32,
    input_name: str = "input",
    output_name: str = "embedding",
    fixed_batch: int | None = None,
    produce_nan: bool = False,
    seed: int = 0,
) -> Path:
    """A real ONNX graph: per-channel 4x4 average pools flattened, times a random matrix."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pooled = 3 * (size // 4) * (size // 4)
    weight = rng.standard_normal((pooled, dim)).astype(np.float32)
    batch = fixed_batch if fixed_batch else "batch"
    nodes = [
        helper.make_node(
            "AveragePool", [input_name], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["proj"]),
    ]
    if produce_nan:
        nodes += [  # log(-|x|): NaN (or -inf) in every row
            helper.make_node("Abs", ["proj"], ["absproj"]),
            helper.make_node("Neg", ["absproj"], ["neg"]),
            helper.make_node("Log", ["neg"], ["nan"]),
            helper.make_node("Add", ["proj", "nan"], [output_name]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["proj"], [output_name]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, dim])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_manifest_text(
    name: str,
    file: str,
    dim: int = 8,
    size: int = 32,
    sha: str | None = None,
    resize: str = "direct",
) -> str:
    sha_line = f'sha256 = "{sha}"\n' if sha else ""
    return f"""name = "{name}"
modality = "image"
embedding_dim = {dim}
output = "embedding"
default_variant = "fp32"

[image]
name = "input"
height = {size}
width = {size}
resize = "{resize}"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[variants.fp32]
file = "{file}"
{sha_line}"""


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A tiny image model + manifest in a models dir on AGENT_MODELS_DIR; returns that dir."""
    from agent.runtime.registry import sha256_file

    models = tmp_path / "tiny_models"
    models.mkdir()
    onnx_path = build_tiny_image_model(models / "tiny_fp32.onnx")
    (models / "tiny.toml").write_text(
        tiny_manifest_text("tiny", "tiny_fp32.onnx", sha=sha256_file(onnx_path))
    )
    monkeypatch.setenv("AGENT_MODELS_DIR", str(models))
    return models


def write_image(path: Path, pixels: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), pixels), path
    return path


def photo_like(seed: int, h: int = 64, w: int = 80) -> np.ndarray:
    """A smooth random colour image (JPEG-friendly), BGR uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="session")
def example_gallery(tmp_path_factory) -> Path:
    """examples/gallery enrolled once per session with the default shared model."""
    import subprocess
    import sys

    models = shared_file("models")
    root = tmp_path_factory.mktemp("example_gallery")
    env = {**os.environ, "AGENT_MODELS_DIR": str(models), "XDG_DATA_HOME": str(root / "state")}
    subprocess.run(
        [sys.executable, "-m", "agent", "-q", "enroll", str(REPO / "examples" / "gallery"),
         "-g", str(root / "gallery")],
        check=True, env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    return root / "gallery"


@pytest.fixture
def gallery(example_gallery, tmp_path, shared_models) -> Path:
    """A private copy of the example gallery (tests may change it)."""
    import shutil

    target = tmp_path / "gallery"
    shutil.copytree(example_gallery, target)
    return target

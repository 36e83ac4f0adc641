import http.server
import socket
import threading
import time

import pytest

from agent.config import load_config
from agent.errors import ModelError
from agent.runtime.manifest import load_any_manifest, load_manifest
from agent.runtime.model_import import import_model
from agent.runtime.registry import ModelRegistry, bundled_models_dir, sha256_file

from .conftest import build_tiny_image_model, tiny_manifest_text


def test_bundled_manifests_are_valid_and_default_model_is_verified():
    reg = ModelRegistry.from_config(load_config())
    manifests = reg.manifests()
    for name in (
        "efficientnet_lite0",
        "mobilenetv2",
        "osnet_x0_25",
        "minilm_l6",
        "resnet50",
        "efficientnet_b0",
        "clip_vit_b32_image",
        "clip_vit_b32_text",
    ):
        assert name in manifests
    assert manifests["clip_vit_b32_image"].paired_with == "clip_vit_b32_text"
    status = {s.name: s.state for s in reg.status(manifests["efficientnet_lite0"])}
    assert status["int8"] == "verified"  # the embedded default ships in the repo
    for path in bundled_models_dir().glob("*.toml"):
        load_any_manifest(path)
    assert set(reg.detectors()) == {
        "ssdlite_mobilenetv2_person", "yolov3_tiny_coco", "retinaface_mnet025"
    }  # fmt: skip
    with pytest.raises(ModelError, match="describes a detector, not an embedding model"):
        load_manifest(bundled_models_dir() / "yolov3_tiny_coco.toml")
    with pytest.raises(ModelError, match="is a detector"):
        reg.resolve("retinaface_mnet025")


def test_import_new_model_like_existing(tmp_path):
    src = build_tiny_image_model(tmp_path / "mine.onnx", dim=8, size=32)
    reg = ModelRegistry.from_config(load_config())
    manifest, variant, path = import_model(reg, src, "mine", None, "efficientnet_lite0")
    assert variant == "fp32" and path.is_file()
    assert manifest.embedding_dim == 8 and manifest.image.height == 32
    assert manifest.variants["fp32"].sha256 == sha256_file(src)
    resolved = ModelRegistry.from_config(load_config()).resolve("mine")
    assert resolved.path == path


def test_import_into_known_manifest_records_sha_and_checks_shape(tmp_path, tiny_model):
    (tiny_model / "tiny.toml").write_text(tiny_manifest_text("tiny", "tiny_fp32.onnx"))
    reg = ModelRegistry.from_config(load_config())
    wrong = build_tiny_image_model(tmp_path / "wrong.onnx", dim=16)
    with pytest.raises(ModelError, match="output dim 16"):
        import_model(reg, wrong, "tiny", "fp32", None)
    right = build_tiny_image_model(tmp_path / "right.onnx", dim=8, seed=3)
    manifest, _, _ = import_model(reg, right, "tiny", "fp32", None)
    assert manifest.variants["fp32"].sha256 == sha256_file(right)
    with pytest.raises(ModelError, match="no manifest named"):
        import_model(reg, right, "brand_new", None, None)


def _serve(directory):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(directory), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _manifest_with_url(models_dir, url, sha):
    (models_dir / "remote.toml").write_text(
        tiny_manifest_text("remote", "remote.onnx", sha=sha) + f'url = "{url}"\n'
    )


def test_pull_downloads_and_verifies(tmp_path, monkeypatch):
    served = tmp_path / "www"
    served.mkdir()
    src = build_tiny_image_model(served / "remote.onnx")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    monkeypatch.setenv("AGENT_MODELS_DIR", str(manifests))
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_port}/remote.onnx"
        _manifest_with_url(manifests, url, "f" * 64)
        reg = ModelRegistry.from_config(load_config())
        with pytest.raises(ModelError, match="expected ffffffffffff"):
            reg.pull("remote")
        assert not (reg.write_dir / "remote.onnx").exists()
        assert not list(reg.write_dir.glob("*.part"))
        _manifest_with_url(manifests, url, sha256_file(src))
        path = reg.pull("remote")
        assert sha256_file(path) == sha256_file(src)
        assert reg.resolve("remote").path == path
    finally:
        server.shutdown()


def test_pull_offline_is_a_quick_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _manifest_with_url(manifests, f"http://127.0.0.1:{port}/x.onnx", "a" * 64)
    monkeypatch.setenv("AGENT_MODELS_DIR", str(manifests))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="cannot download"):
        ModelRegistry.from_config(load_config()).pull("remote", timeout=5)
    assert time.monotonic() - t0 < 5

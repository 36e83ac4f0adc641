import numpy as np
import pytest

from agent.config import ModelsConfig, load_config
from agent.errors import InputError, ModelError
from agent.runtime.extract import ImageExtractor, normalise_checked
from agent.runtime.registry import ModelRegistry, ResolvedModel, sha256_file

from .conftest import build_tiny_image_model, photo_like, tiny_manifest_text, write_image


def tiny_extractor(max_batch=4, **kw) -> ImageExtractor:
    cfg = load_config()
    cfg.models = cfg.models.model_copy(update={"max_batch": max_batch, **kw})
    return ImageExtractor.from_config(cfg, "tiny")


def test_embeddings_are_unit_norm_and_batch_independent(tiny_model, tmp_path):
    paths = [write_image(tmp_path / f"{i}.jpg", photo_like(i)) for i in range(7)]
    with tiny_extractor(max_batch=3) as ex:
        batched = ex.extract(paths)
        singles = np.stack([ex.extract_one(p) for p in paths])
        assert ex.provider == "cpu"
        stats = ex.stats.summary()
    assert batched.ok.all() and not batched.errors
    np.testing.assert_allclose(np.linalg.norm(batched.embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched.embeddings, singles, atol=1e-5)
    assert stats["items"] == 14 and stats["stages"]["inference"]["count"] >= 14
    assert stats["stages"]["decode"]["p50_ms"] > 0


def test_corrupt_and_missing_items_do_not_sink_the_batch(tiny_model, tmp_path):
    good = [write_image(tmp_path / f"g{i}.png", photo_like(i)) for i in range(3)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    items = [good[0], corrupt, good[1], tmp_path / "missing.jpg", good[2]]
    with tiny_extractor() as ex:
        result = ex.extract(items)
        with pytest.raises(InputError, match="cannot decode"):
            ex.extract_one(corrupt)
    assert result.ok.tolist() == [True, False, True, False, True]
    assert {e.index for e in result.errors} == {1, 3}
    by_index = {e.index: e.message for e in result.errors}
    assert "cannot decode" in by_index[1] and "no such file" in by_index[3]
    assert not result.embeddings[1].any()
    assert len(result.valid) == 3


def test_inputs_bytes_arrays_and_paths_agree(tiny_model, tmp_path):
    img = photo_like(11)
    path = write_image(tmp_path / "x.png", img)
    with tiny_extractor() as ex:
        result = ex.extract([path, path.read_bytes(), img])
    np.testing.assert_allclose(result.embeddings[0], result.embeddings[1], atol=1e-6)
    np.testing.assert_allclose(result.embeddings[0], result.embeddings[2], atol=1e-6)


def test_flip_averaging_is_mirror_invariant(tiny_model):
    img = photo_like(12, 32, 32)
    with tiny_extractor() as ex:
        a = ex.extract_one(img, flip=True)
        b = ex.extract_one(np.ascontiguousarray(img[:, ::-1]), flip=True)
        plain = ex.extract_one(img)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.linalg.norm(a - plain) > 1e-3


def test_nan_embeddings_are_reported_per_item(tmp_path, monkeypatch):
    models = tmp_path / "m"
    models.mkdir()
    build_tiny_image_model(models / "nan.onnx", produce_nan=True)
    (models / "nan.toml").write_text(tiny_manifest_text("nanmodel", "nan.onnx"))
    monkeypatch.setenv("AGENT_MODELS_DIR", str(models))
    cfg = load_config()
    cfg.models = cfg.models.model_copy(update={"warmup": False})
    with ImageExtractor.from_config(cfg, "nanmodel") as ex:
        result = ex.extract([photo_like(1), photo_like(2)])
        with pytest.raises(ModelError, match="NaN"):
            ex.embed_tensors(np.ones((1, 3, 32, 32), np.float32))
    assert not result.ok.any()
    assert all("NaN or inf" in e.message for e in result.errors)


def test_normalise_checked_flags_zero_and_inf():
    raw = np.array([[3.0, 4.0], [0.0, 0.0], [np.inf, 1.0]], np.float32)
    emb, bad = normalise_checked(raw)
    np.testing.assert_allclose(emb[0], [0.6, 0.8])
    assert bad == {1: "embedding has zero norm", 2: "embedding has NaN or inf values"}


def test_fixed_batch_model_runs_one_at_a_time(tmp_path, monkeypatch):
    models = tmp_path / "m"
    models.mkdir()
    build_tiny_image_model(models / "fixed.onnx", fixed_batch=1)
    (models / "fixed.toml").write_text(tiny_manifest_text("fixed", "fixed.onnx"))
    monkeypatch.setenv("AGENT_MODELS_DIR", str(models))
    with ImageExtractor.from_config(load_config(), "fixed") as ex:
        assert ex.max_batch == 1
        result = ex.extract([photo_like(i) for i in range(3)])
    assert result.ok.all()


def test_sha_mismatch_and_missing_file_are_clear(tiny_model):
    (tiny_model / "tiny.toml").write_text(
        tiny_manifest_text("tiny", "tiny_fp32.onnx", sha="0" * 64)
    )
    reg = ModelRegistry.from_config(load_config())
    with pytest.raises(ModelError, match="does not match the sha256"):
        reg.resolve("tiny")
    (tiny_model / "tiny_fp32.onnx").unlink()
    with pytest.raises(ModelError, match="not found"):
        reg.resolve("tiny")
    with pytest.raises(ModelError, match="unknown model"):
        reg.resolve("nope")


def test_output_dim_disagreeing_with_manifest_is_refused(tmp_path):
    path = build_tiny_image_model(tmp_path / "t.onnx", dim=8)
    from agent.runtime.manifest import Manifest

    manifest = Manifest.model_validate(
        {
            "name": "t",
            "modality": "image",
            "embedding_dim": 16,
            "output": "embedding",
            "default_variant": "fp32",
            "variants": {"fp32": {"file": "t.onnx"}},
            "image": {
                "name": "input",
                "height": 32,
                "width": 32,
                "mean": [0, 0, 0],
                "std": [1, 1, 1],
            },
        }
    )
    model = ResolvedModel(manifest, "fp32", manifest.variants["fp32"], path, sha256_file(path))
    with pytest.raises(ModelError, match="dim 8"):
        ImageExtractor(model, ModelsConfig())


def test_load_tensors_skips_and_reports_bad_inputs(tiny_model, tmp_path):
    corrupt = tmp_path / "c.jpg"
    corrupt.write_bytes(b"nope")
    with tiny_extractor() as ex:
        tensors, errors = ex.load_tensors([photo_like(1), corrupt, photo_like(2)])
        assert tensors.shape == (2, *ex.preprocessor.shape)
        np.testing.assert_allclose(
            ex.embed_tensors(tensors)[1], ex.extract_one(photo_like(2)), atol=1e-6
        )
    assert [e.index for e in errors] == [1] and "cannot decode" in errors[0].message

"""Shipped models on real images against an independent plain-onnxruntime reference."""

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from agent.config import load_config
from agent.runtime.extract import ImageExtractor, TextExtractor

from .conftest import shared_file

pytestmark = pytest.mark.shared

# name, variant, file, input, output, (H, W), resize, mean, std
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE = ((127 / 255,) * 3, (128 / 255,) * 3)
MODELS = [
    (
        "efficientnet_lite0",
        "fp32",
        "efficientnet_lite0_fp32.onnx",
        "input",
        "embedding",
        (224, 224),
        "crop",
        *LITE,
    ),
    (
        "efficientnet_lite0",
        "int8",
        "efficientnet_lite0_int8_qdq.onnx",
        "input",
        "embedding",
        (224, 224),
        "crop",
        *LITE,
    ),
    (
        "mobilenetv2",
        "fp32",
        "mobilenetv2_fp32.onnx",
        "input",
        "embedding",
        (224, 224),
        "crop",
        *IMAGENET,
    ),
    (
        "mobilenetv2",
        "int8",
        "mobilenetv2_int8_qdq.onnx",
        "input",
        "embedding",
        (224, 224),
        "crop",
        *IMAGENET,
    ),
    (
        "osnet_x0_25",
        "fp32",
        "osnet_x0_25_msmt17_fp32.onnx",
        "images",
        "output",
        (256, 128),
        "direct",
        *IMAGENET,
    ),
    (
        "osnet_x0_25",
        "int8",
        "osnet_x0_25_msmt17_int8_qdq.onnx",
        "images",
        "output",
        (256, 128),
        "direct",
        *IMAGENET,
    ),
]


def reference_tensor(path: Path, size, resize, mean, std) -> np.ndarray:
    """Plain preprocessing written from the shared README, not from the agent's code."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    out_h, out_w = size
    if resize == "crop":
        s = 256 / min(h, w)
        nw, nh = round(w * s), round(h * s)
        if (nw, nh) != (w, h):
            rgb = cv2.resize(
                rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            )
        y0, x0 = (nh - out_h) // 2, (nw - out_w) // 2
        rgb = rgb[y0 : y0 + out_h, x0 : x0 + out_w]
    else:
        interp = cv2.INTER_AREA if out_h * out_w < h * w else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (out_w, out_h), interpolation=interp)
    x = (rgb.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def sample_images() -> list[Path]:
    grocery = sorted(shared_file("data/products/grocery/queries").rglob("*.jpg"))[::40]
    eth = sorted(shared_file("data/retrieval/queries").rglob("*.jpg"))[::60]
    return grocery + eth


@pytest.mark.parametrize(
    "name, variant, file, inp, out, size, resize, mean, std",
    MODELS,
    ids=[f"{m[0]}-{m[1]}" for m in MODELS],
)
def test_matches_plain_reference(
    shared_models, name, variant, file, inp, out, size, resize, mean, std
):
    images = sample_images()
    session = ort.InferenceSession(str(shared_models / file), providers=["CPUExecutionProvider"])
    ref = np.concatenate(
        [session.run([out], {inp: reference_tensor(p, size, resize, mean, std)})[0] for p in images]
    )
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    with ImageExtractor.from_config(load_config(), name, variant) as ex:
        result = ex.extract(images)
    assert result.ok.all()
    cosine_distance = 1.0 - np.sum(ref * result.embeddings, axis=1)
    assert cosine_distance.max() < 1e-4, cosine_distance.max()


def recall_at_1(gallery, g_ids, queries, q_ids) -> float:
    nearest = np.argmax(queries @ gallery.T, axis=1)
    return float(np.mean(np.array(g_ids)[nearest] == np.array(q_ids)))


# The shipped int8 files were calibrated on 27 skimage photos, not on ETH-80. MobileNetV2's reaches
# 0.947 here; `agent models quantize` calibrated on the user's own images reaches >= 0.95
# (tests/test_quantize.py).
@pytest.mark.parametrize("name, min_cos", [("efficientnet_lite0", 0.95), ("mobilenetv2", 0.94)])
def test_int8_close_to_fp32_on_real_retrieval(shared_models, name, min_cos):
    root = shared_file("data/retrieval")
    gallery = sorted((root / "gallery").rglob("*.jpg"))
    queries = sorted((root / "queries").rglob("*.jpg"))
    g_ids = [p.parent.name for p in gallery]
    q_ids = [p.parent.name for p in queries]
    cfg = load_config()
    emb = {}
    for variant in ("fp32", "int8"):
        with ImageExtractor.from_config(cfg, name, variant) as ex:
            emb[variant] = (ex.extract(gallery).embeddings, ex.extract(queries).embeddings)
    cos = np.concatenate([np.sum(emb["fp32"][i] * emb["int8"][i], axis=1) for i in (0, 1)])
    r_fp32 = recall_at_1(emb["fp32"][0], g_ids, emb["fp32"][1], q_ids)
    r_int8 = recall_at_1(emb["int8"][0], g_ids, emb["int8"][1], q_ids)
    print(
        f"{name}: cos mean {cos.mean():.4f} min {cos.min():.4f}; "
        f"recall@1 fp32 {r_fp32:.4f} int8 {r_int8:.4f}"
    )
    assert cos.mean() >= min_cos
    assert abs(r_fp32 - r_int8) <= 0.02
    assert r_fp32 > 0.5  # far above the colour-histogram baseline (P@1 0.287)


def test_minilm_text_embeddings(shared_models):
    ex = TextExtractor.from_config(load_config())
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is eating food.",
    ]
    emb = ex.encode(texts)
    single = ex.encode(["A man is eating a piece of bread."])[0]
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.6 and emb[0] @ emb[2] < 0.2
    # Dynamic int8 takes activation ranges over the whole batch, pads included: close, not equal.
    assert emb[1] @ single > 0.99
    np.testing.assert_allclose(emb[0], emb[3], atol=1e-6)

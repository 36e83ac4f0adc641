"""int8 static quantisation calibrated on real images, checked on held-out real images."""

import json
import subprocess
import sys

import numpy as np
import pytest

from agent.config import load_config
from agent.runtime.extract import ImageExtractor
from agent.runtime.registry import ModelRegistry

from .conftest import shared_file
from .test_real_models import recall_at_1

pytestmark = pytest.mark.shared


def test_quantize_cli_calibrated_on_own_images(shared_models):
    root = shared_file("data/retrieval")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "-q",
            "models",
            "quantize",
            "mobilenetv2",
            "--calib",
            str(root / "gallery"),
            "--samples",
            "48",
            "--variant-name",
            "int8-eth",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["accepted"] and report["calibration_images"] == 48
    cfg = load_config()
    status = {
        s.name: s.state
        for s in ModelRegistry.from_config(cfg).status(
            ModelRegistry.from_config(cfg).get("mobilenetv2")
        )
    }
    assert status["int8-eth"] == "verified"

    gallery = sorted((root / "gallery").rglob("*.jpg"))
    queries = sorted((root / "queries").rglob("*.jpg"))  # never seen by calibration
    g_ids, q_ids = [p.parent.name for p in gallery], [p.parent.name for p in queries]
    emb = {}
    for variant in ("fp32", "int8-eth"):
        with ImageExtractor.from_config(cfg, "mobilenetv2", variant) as ex:
            emb[variant] = (ex.extract(gallery).embeddings, ex.extract(queries).embeddings)
    cos = np.sum(emb["fp32"][1] * emb["int8-eth"][1], axis=1)
    r32 = recall_at_1(emb["fp32"][0], g_ids, emb["fp32"][1], q_ids)
    r8 = recall_at_1(emb["int8-eth"][0], g_ids, emb["int8-eth"][1], q_ids)
    print(f"own int8: cos mean {cos.mean():.4f} min {cos.min():.4f}; r@1 {r32:.4f} vs {r8:.4f}")
    assert cos.mean() >= 0.95
    assert abs(r32 - r8) <= 0.02


def test_quantize_refuses_bad_input(shared_models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "agent", "models", "quantize", "mobilenetv2", "--calib", str(empty)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "no images" in out.stderr

"""`agent eval` on the real sets against an independent plain-onnxruntime computation.

Acceptance of the gallery issue: with the same preprocessing (short side 256, centre crop 224),
`agent eval --plain` on a `--plain` gallery reports recall@1 and mAP within 0.01 of numbers
computed here without the agent; with the quality features on, mAP rises by at least 0.05.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest

from .conftest import shared_file
from .test_cli import run
from .test_real_models import reference_tensor

MEAN, STD = [127 / 255] * 3, [128 / 255] * 3  # EfficientNet-Lite0, per ../shared/models/README


def independent_metrics(root, model_file) -> tuple[float, float]:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])

    def embed(paths):
        rows = []
        for p in paths:
            x = reference_tensor(p, (224, 224), "crop", MEAN, STD)
            e = session.run(["embedding"], {"input": x})[0][0]
            rows.append(e / np.linalg.norm(e))
        return np.stack(rows)

    gallery = sorted(p for p in (root / "gallery").glob("*/*") if p.is_file())
    queries = sorted(p for p in (root / "queries").glob("*/*") if p.is_file())
    g_ids = np.array([p.parent.name for p in gallery])
    scores = embed(queries) @ embed(gallery).T
    r1, aps = [], []
    for i, q in enumerate(queries):
        rel = (g_ids[np.argsort(-scores[i], kind="stable")] == q.parent.name).astype(float)
        r1.append(rel[0])
        hits = np.cumsum(rel)
        aps.append((hits / np.arange(1, len(rel) + 1) * rel).sum() / rel.sum())
    return float(np.mean(r1)), float(np.mean(aps))


def agent_json(*args):
    out = run(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("dataset", ["retrieval", "products/grocery"])
def test_eval_matches_independent_and_features_help(dataset, shared_models, tmp_path):
    root = shared_file(f"data/{dataset}")
    model = ["-m", "efficientnet_lite0", "--variant", "fp32"]
    gallery = str(tmp_path / "plain")
    enrolled = agent_json("enroll", str(root / "gallery"), "-g", gallery, "--plain", *model)
    assert enrolled["failed"] == 0 and enrolled["added"] == enrolled["scanned"]
    plain = agent_json("eval", "-g", gallery, "-Q", str(root / "queries"), "--plain")
    r1, mean_ap = independent_metrics(root, shared_models / "efficientnet_lite0_fp32.onnx")
    assert plain["recall@1"] == pytest.approx(r1, abs=0.01)
    assert plain["mAP"] == pytest.approx(mean_ap, abs=0.01)
    assert (
        plain["gap"] > 0.1 and plain["same_identity"]["mean"] > plain["different_identity"]["mean"]
    )
    # Quality features as shipped (gallery enrolled on the fly from the folder).
    tuned = agent_json("eval", "-g", str(root / "gallery"), "-Q", str(root / "queries"), *model)
    assert tuned["gallery_enrolled_on_the_fly"] and tuned["features"]["identity_weight"] > 0
    assert tuned["mAP"] >= plain["mAP"] + 0.05
    assert tuned["recall@1"] >= plain["recall@1"]
    # Queries were embedded once: the second eval served them from the embedding cache.
    assert tuned["inferences"] == enrolled["scanned"]

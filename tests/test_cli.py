"""The CLI as a user meets it: exit codes, one-line errors, JSON output."""

import json
import subprocess
import sys

import numpy as np

from agent.runtime.embeddings import from_bytes

from .conftest import photo_like, write_image


def run(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=300, **kw
    )


def one_error_line(out) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    return lines[0]


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("embed", "models", "config", "bench"):
        assert cmd in out.stdout


def test_models_list_json_shows_bundled_default_verified():
    rows = json.loads(run("models", "list", "--json").stdout)
    default = [r for r in rows if r["model"] == "efficientnet_lite0" and r["variant"] == "int8"]
    assert default and default[0]["state"] == "verified" and default[0]["default"]


def test_missing_model_file_is_one_line(tmp_path):
    line = one_error_line(run("-q", "embed", "--model", "resnet50", str(tmp_path)))
    # The folder is checked first; give it an image so the model is the problem.
    write_image(tmp_path / "a.jpg", photo_like(0))
    line = one_error_line(run("-q", "embed", "--model", "resnet50", str(tmp_path)))
    assert "resnet50_fp32.onnx" in line and "not found" in line


def test_unknown_model_and_variant(tmp_path):
    write_image(tmp_path / "a.jpg", photo_like(0))
    assert "unknown model" in one_error_line(run("-q", "embed", "-m", "nope", str(tmp_path)))
    line = one_error_line(run("-q", "embed", "--variant", "fp64", str(tmp_path)))
    assert "no variant 'fp64'" in line


def test_directory_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    assert "no images" in one_error_line(run("-q", "embed", str(tmp_path)))


def test_embed_reports_corrupt_and_writes_outputs(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"img{i}.jpg", photo_like(i))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = run(
        "-q",
        "embed",
        str(tmp_path),
        "--json",
        "--out",
        str(tmp_path / "e.emb"),
        "--dtype",
        "float16",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["count"] == 4 and report["ok"] == 3 and report["dim"] == 1280
    assert report["errors"][0]["path"].endswith("broken.jpg")
    emb = from_bytes((tmp_path / "e.emb").read_bytes())
    assert emb.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    out = run("-q", "embed", str(tmp_path / "img0.jpg"), "--out", str(tmp_path / "e.npz"))
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert data["embeddings"].shape == (1, 1280)
        assert data["paths"][0].endswith("img0.jpg")


def test_all_corrupt_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    out = run("-q", "embed", str(tmp_path))
    assert out.returncode != 0 and "no image could be embedded" in out.stderr

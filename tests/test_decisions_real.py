"""Decisions on real data, measured as users meet them (the protocol of
../shared/tools/decisions_check.py): the open set through `agent eval --open-set`, which judges
each query with the configured policy exactly as `agent run` judges a frame."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_file
from tests.test_cli import run


@pytest.mark.shared
@pytest.mark.parametrize("name", ["retrieval", "products/grocery"])
def test_open_set_with_the_default_config_meets_the_targets(name, shared_models):
    data = shared_file(f"data/{name}")
    out = run("eval", "--open-set", "-g", str(data / "gallery"), "-Q", str(data / "queries"),
              "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rule"]["calibrated"]
    assert report["precision"] >= 0.93, report
    assert report["recall"] >= 0.85 * report["oracle_recall"] > 0, report
    assert len(report["left_out_identities"]) >= 16 and report["never_enrolled"] >= 48


def test_gallery_stats_show_the_calibrated_decisions(tmp_path, tiny_model):
    from tests.test_enroll import enroll, make_dir

    images = make_dir(tmp_path / "imgs", ids=[f"p{i}" for i in range(6)], per_id=4)
    enroll(str(images), "-g", str(tmp_path / "g"), "-m", "tiny")
    out = run("gallery", "stats", "-g", str(tmp_path / "g"), "--json")
    assert out.returncode == 0, out.stderr
    cal = json.loads(out.stdout)["calibration"]
    assert cal["genuine_samples"] == 24 and cal["impostor_samples"] == 24
    assert set(cal["decisions"]) >= {"match_score", "min_margin", "unknown_below", "calibrated"}

"""`agent eval` measures what `agent run` serves: the same gallery and query images give the same
top identity and score through both, with whitening and identity aggregation on."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.agent_support import AgentProcess, agent_config
from tests.conftest import shared_file
from tests.test_cli import run


@pytest.mark.shared
def test_eval_and_running_pipeline_agree_on_top_identity_and_score(tmp_path, shared_models):
    data = shared_file("data/retrieval")
    gallery = tmp_path / "gallery"
    enrolled = run("enroll", str(data / "gallery"), "-g", str(gallery), "--json")
    assert enrolled.returncode == 0, enrolled.stderr
    stats = json.loads(run("gallery", "stats", "-g", str(gallery), "--json").stdout)
    assert stats["whitened"] and stats["settings"]["identity_weight"] > 0  # the full path

    # 40 queries, as labelled folders for eval and as one flat folder (name order) for run.
    picks = sorted(p for p in (data / "queries").rglob("*") if p.is_file())[::6][:40]
    labelled, flat = tmp_path / "labelled", tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(picks):
        (labelled / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, labelled / path.parent.name / f"{i:03d}{path.suffix}")
        shutil.copy(path, flat / f"{i:03d}{path.suffix}")

    out = run("eval", "-g", str(gallery), "-Q", str(labelled), "--per-query", "--json")
    assert out.returncode == 0, out.stderr
    by_name = {json.loads(out.stdout)["per_query"][i]["path"].rsplit("/", 1)[-1]: q
               for i, q in enumerate(json.loads(out.stdout)["per_query"])}  # fmt: skip

    agent = AgentProcess(tmp_path / "run", agent_config(tmp_path / "state", gallery),
                         "--fast", "-s", f"queries={flat}")  # fmt: skip
    assert agent.wait() == 0, agent.log()
    events = sorted(agent.events, key=lambda e: e["frame_index"])
    assert len(events) == len(picks)
    names = sorted(p.name for p in flat.iterdir())
    for event in events:
        expected = by_name[names[event["frame_index"]]]
        assert event["identity"] == expected["top_identity"], (event, expected)
        assert event["score"] == pytest.approx(expected["top_score"], abs=1e-4)

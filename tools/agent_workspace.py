"""Shared by tools/bench_agent.py and tools/soak.py: a throwaway state dir with the example
gallery enrolled for a given model, and the default clip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared/data/frames/real_video/vtest.avi"


def enroll_examples(work: Path, model: str, variant: str) -> tuple[dict, Path]:
    """(environment for `agent` subprocesses, gallery dir) with examples/gallery enrolled."""
    os.environ.setdefault("AGENT_MODELS_DIR", str(REPO.parent / "shared" / "models"))
    env = {**os.environ, "XDG_DATA_HOME": str(work / "xdg")}
    gallery = work / "gallery"
    subprocess.run(
        [sys.executable, "-m", "agent", "-q", "enroll", str(REPO / "examples/gallery"),
         "-g", str(gallery), "-m", model, "--variant", variant],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return env, gallery

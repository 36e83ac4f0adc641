"""The Python API: the README's snippet run as written (bundled model only, as on a fresh
clone), and the gallery client's behaviour."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent import ImageExtractor, load_config, open_gallery
from agent.errors import InputError
from tests.agent_support import EXAMPLES

REPO = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    section = (REPO / "README.md").read_text().split("### Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_snippet_runs_on_a_fresh_clone(tmp_path):
    snippet = readme_python_blocks()[0]
    (tmp_path / "examples").symlink_to(EXAMPLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # no models but the bundled one
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Oatly-Oat-Milk ") and float(lines[0].split()[1]) > 0.5
    assert "Oatly-Oat-Milk" in lines[1] and lines[2] == "Oatly-Oat-Milk"
    metrics = ast.literal_eval(lines[3])  # the dict the snippet prints
    assert metrics["queries"] == 40 and metrics["identity_recall@1"] == 1.0
    assert (tmp_path / "my_gallery").is_dir()


def test_the_gallery_client(tmp_path, shared_models):
    photos = sorted((EXAMPLES / "gallery" / "Oatly-Oat-Milk").iterdir())
    with open_gallery(tmp_path / "g") as gallery:
        with pytest.raises(InputError, match="enroll a folder first"):
            gallery.search(photos[:1])
        first = gallery.enroll(EXAMPLES / "gallery")
        again = gallery.enroll(EXAMPLES / "gallery")
        assert first.added == 40 and again.added == 0 and again.unchanged == 40
        assert len(gallery.identities()) == 8
        image = photos[0].read_bytes()
        by_path, by_bytes = gallery.embed([photos[0]]), gallery.embed([image])
        assert np.allclose(by_path, by_bytes, atol=1e-5)
        label = gallery.decide([photos[0]])[0]
        assert label.identity == "Oatly-Oat-Milk" and label.margin > 0
        with pytest.raises(InputError):
            gallery.search([b"not an image"])


def test_async_calls_leave_the_event_loop_free(shared_models):
    photos = sorted((EXAMPLES / "gallery").glob("*/*.jpg"))
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    async def main(extractor: ImageExtractor):
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        t0 = time.perf_counter()
        results = await asyncio.gather(extractor.aextract(photos), extractor.aextract(photos))
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        return results, elapsed

    with ImageExtractor.from_config(load_config()) as extractor:
        (a, b), elapsed = asyncio.run(main(extractor))
    assert a.ok.all() and np.allclose(a.embeddings, b.embeddings, atol=1e-5)
    assert len(ticks) >= 0.5 * elapsed / 0.01  # the loop kept ticking while both ran

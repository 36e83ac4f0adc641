"""Throughput of the running agent: N sources of one clip at once vs the bare inference rate.

Usage: python tools/bench_agent.py [--clip ../shared/data/frames/real_video/vtest.avi]
           [--sources 4] [--model mobilenetv2] [--variant int8] [--seconds 30]

In one run, on the same gallery and model:
  bare      ImageExtractor.extract on decoded frames, batch = pipeline.max_batch (images/s),
            and the ONNX session alone on ready tensors
  fast/b8   `agent run`, all sources read as fast as possible, cross-source batches of 8
  fast/b1   the same with batches of 1 (what batching buys)
  live/b8   sources paced at the clip's frame rate (frames dropped when behind): the
            frame-to-publish latency a live deployment sees
Whole-frame crops, change gate off, cool-down 0 (every frame is an event, the worst case).
Results come from the agent's own metrics (status.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import tomli_w
from agent_workspace import DEFAULT_CLIP, enroll_examples
from rich.console import Console
from rich.table import Table


def bare_rate(cfg, model: str, variant: str, clip: Path, batch: int) -> tuple[float, float]:
    from agent import ArrayImage, ImageExtractor

    cap = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < 128:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(ArrayImage(frame, "BGR"))
    cap.release()
    cfg.models.max_batch = batch
    with ImageExtractor.from_config(cfg, model, variant) as ex:
        ex.extract(frames[:batch])
        t0 = time.perf_counter()
        ex.extract(frames)
        full = len(frames) / (time.perf_counter() - t0)
        tensors, _ = ex.load_tensors(frames)
        t0 = time.perf_counter()
        for i in range(0, len(tensors), batch):
            ex.embed_tensors(tensors[i : i + batch])
        session = len(tensors) / (time.perf_counter() - t0)
    return full, session


def run_agent(
    work: Path,
    env: dict,
    gallery: Path,
    clip: Path,
    n: int,
    seconds: float,
    realtime: bool,
    batch: int,
) -> dict:
    state = work / f"state-{'live' if realtime else 'fast'}-{batch}"
    cfg = {
        "state_dir": str(state),
        "device_id": "bench",
        "gallery": {"path": str(gallery)},
        "match": {"cooldown_s": 0.0, "threshold": 0.0, "unknown_threshold": 0.0, "min_margin": 0.0},
        "detect": {"change_threshold": 0.0},
        "pipeline": {"max_batch": batch, "cache_frames": False},
        "metrics": {"interval_s": 1.0},
        "sources": [
            {"id": f"cam{i}", "uri": str(clip), "loop": True, "realtime": realtime, "queue_size": 8}
            for i in range(n)
        ],
    }
    path = work / "bench.toml"
    path.write_text(tomli_w.dumps(cfg))
    with open(work / "events.jsonl", "wb") as sink:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "-q",
                "-c",
                str(path),
                "run",
                "--duration",
                str(seconds),
            ],
            env=env,
            stdout=sink,
            check=True,
        )
    return json.loads((state / "status.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    from agent.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env, gallery = enroll_examples(work, args.model, args.variant)
        cfg = load_config()
        full, session = bare_rate(cfg, args.model, args.variant, args.clip, 8)
        runs = {
            "fast/b8": run_agent(
                work, env, gallery, args.clip, args.sources, args.seconds, False, 8
            ),
            "fast/b1": run_agent(
                work, env, gallery, args.clip, args.sources, args.seconds, False, 1
            ),
            "live/b8": run_agent(
                work, env, gallery, args.clip, args.sources, args.seconds, True, 8
            ),
        }

    table = Table(
        title=f"{args.sources} x {args.clip.name}, {args.model}:{args.variant}, "
        f"{os.cpu_count()} cores, {args.seconds:.0f} s per run"
    )
    for col in (
        "run",
        "processed fps",
        "vs bare",
        "dropped",
        "e2e p50 ms",
        "e2e p95 ms",
        "embed p50 ms",
        "cpu %",
        "rss MB",
    ):
        table.add_column(col)
    table.add_row("bare extract (b8)", f"{full:.1f}", "1.00", "", "", "", "", "", "")
    table.add_row("bare session (b8)", f"{session:.1f}", f"{session / full:.2f}", *[""] * 6)
    for name, m in runs.items():
        done = sum(s["frames_processed"] + s["frames_reused"] for s in m["sources"].values())
        dropped = sum(s["frames_dropped"] for s in m["sources"].values())
        fps = done / m["uptime_s"]
        e2e, embed = m["latency_ms"]["e2e"], m["latency_ms"]["embed"]
        table.add_row(
            name,
            f"{fps:.1f}",
            f"{fps / full:.2f}",
            str(dropped),
            f"{e2e['p50']:.0f}",
            f"{e2e['p95']:.0f}",
            f"{embed['p50']:.0f}",
            f"{m['cpu_percent']:.0f}",
            f"{m['rss_mb']:.0f}",
        )
    Console().print(table)
    print(
        "note: processed fps = frames done / agent uptime (includes start-up);",
        "bare rates exclude decoding the clip.",
    )


if __name__ == "__main__":
    main()

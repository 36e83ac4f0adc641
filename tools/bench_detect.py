"""Person mode on several copies of a street video: SSDLite (one session shared by the sources,
batched) against OpenCV's HOG people detector, in one run.

    python tools/bench_detect.py [--clip ../shared/data/frames/real_video/vtest.avi]
                                 [--sources 4] [--frames 150] [--gallery DIR]

The first `--frames` frames of the clip go to a temporary file; `agent run --fast` reads it
from `--sources` sources at once: SSDLite (`detect.model` unset), SSDLite with
`detect.max_batch = 1` (the sources' frames one at a time through the shared session), and
HOG (`detect.model = "opencv"`, a detector per source), each with an empty embedding cache.
Reported per detector: frames processed per second (all sources, the run's wall clock),
detection p50 per frame, detector calls, crops embedded and embedding p50 per batch
(metrics), events. Then people found on frames 100,
400 and 700 of the clip by each detector alone, and its time per frame there.
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
import numpy as np
import tomli_w

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared/data/frames/real_video/vtest.avi"


def cut(clip: Path, frames: int, out: Path) -> None:
    capture = cv2.VideoCapture(str(clip))
    fps = capture.get(cv2.CAP_PROP_FPS) or 10
    writer = None
    for _ in range(frames):
        ok, frame = capture.read()
        if not ok:
            break
        if writer is None:
            size = (frame.shape[1], frame.shape[0])
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        writer.write(frame)
    capture.release()
    if writer is not None:
        writer.release()


VARIANTS = {  # label: [detect] settings on top of person mode
    "ssdlite": {},
    "ssdlite_unbatched": {"max_batch": 1},
    "hog": {"model": "opencv"},
}


def run_agent(work: Path, gallery: Path, clip: Path, sources: int, label: str) -> dict:
    state = work / f"state-{label}"
    detect = {"mode": "person", "change_threshold": 0.0, "min_size": 16, **VARIANTS[label]}
    config = {"state_dir": str(state), "gallery": {"path": str(gallery)}, "detect": detect,
              "cache": {"max_entries": 1}}  # fmt: skip
    path = work / f"agent-{label}.toml"
    path.write_text(tomli_w.dumps(config))
    args = [sys.executable, "-m", "agent", "-q", "-c", str(path), "run", "--fast"]
    for i in range(sources):
        args += ["-s", f"cam{i}={clip}"]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=os.environ, check=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((state / "status.json").read_text())["metrics"]
    frames = sum(s["frames_processed"] for s in metrics["sources"].values())
    events = sum(1 for line in out.stdout.splitlines() if line.startswith("{"))
    return {"frames": frames, "wall_s": round(wall, 1), "frames_per_s": round(frames / wall, 1),
            "detect_p50_ms": metrics["latency_ms"].get("detect", {}).get("p50"),
            "detect_calls": metrics["detect_batches"], "crops_embedded": metrics["crops_embedded"],
            "embed_p50_ms": metrics["latency_ms"].get("embed", {}).get("p50"),
            "events": events}  # fmt: skip


def model_of(gallery: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "agent", "gallery", "stats", "-g", str(gallery),
                          "--json"], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)["model"]


def people(clip: Path) -> dict:
    from agent.config import AgentConfig
    from agent.stream.detect import make_detector

    capture = cv2.VideoCapture(str(clip))
    frames = {}
    for index in range(701):
        ok, frame = capture.read()
        if not ok:
            break
        if index in (100, 400, 700):
            frames[index] = frame
    found = {}
    for label, model in (("ssdlite", None), ("hog", "opencv")):
        detector = make_detector(AgentConfig(detect={"mode": "person", "model": model}))
        counts, times = {}, []
        for index, frame in frames.items():
            t0 = time.perf_counter()
            counts[index] = len(detector.detections(frame))
            times.append(time.perf_counter() - t0)
        found[label] = {"boxes": counts, "total": sum(counts.values()),
                        "ms_per_frame": round(1000 * float(np.median(times)), 1)}  # fmt: skip
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument(
        "--gallery",
        type=Path,
        help="Enrolled gallery (default: examples/gallery enrolled in person mode, so with "
        "OSNet when its file is present).",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gallery = args.gallery or work / "gallery"
        if args.gallery is None:  # enrolled as person mode would: with OSNet when present
            person = work / "person.toml"
            person.write_text('[detect]\nmode = "person"\n')
            subprocess.run([sys.executable, "-m", "agent", "-q", "-c", str(person), "enroll",
                            str(REPO / "examples" / "gallery"), "-g", str(gallery)],
                           check=True, capture_output=True)  # fmt: skip
        clip = work / "clip.avi"
        cut(args.clip, args.frames, clip)
        runs = {label: run_agent(work, gallery, clip, args.sources, label) for label in VARIANTS}
        model = model_of(gallery)
    ratio = runs["ssdlite"]["frames_per_s"] / max(runs["hog"]["frames_per_s"], 1e-9)
    print(json.dumps({"sources": args.sources, "frames_per_source": args.frames,
                      "model": model, "runs": runs,
                      "ssdlite_vs_hog_frames_per_s": round(ratio, 2),
                      "people": people(args.clip)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

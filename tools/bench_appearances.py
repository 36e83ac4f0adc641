"""Decisions on labelled videos made from a set's query photos, scored like held-back videos.

    python tools/bench_appearances.py [SET_DIR ...] [--videos 3] [--appearances 12] [--seed 0]

SET_DIR holds `gallery/<identity>/` and `queries/<identity>/` (default: both sets of
`../shared/data` with queries). Each generated video is like `frames/camera.mp4`: appearances of
15-40 frames at 10 fps, 480x360, each a smooth pan and zoom over one query photo, with hard cuts
between them. Every 5th identity (sorted by name) is never enrolled, and a share of the
appearances (`--unknown-share`, 0.2) show one of those. The other identities' gallery photos
are enrolled, and `agent run --fast` judges each video with the default config.

Scored per set, over its videos:
- identity events right: events naming the identity on screen / all events naming one;
- appearances decided: an enrolled one has an event naming it, a never-enrolled one has none
  naming anything;
- identity events per appearance.
Targets, as for held-back labelled videos: >= 90% right, >= 70% decided, <= 1.25 per appearance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = [SHARED / "data/retrieval", SHARED / "data/products/grocery"]
W, H, FPS = 480, 360, 10
IMAGES = {".jpg", ".jpeg", ".png", ".bmp"}


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGES)


def pan_zoom(img: np.ndarray, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A 4:3 window gliding and zooming over the photo, resized to W x H."""
    ih, iw = img.shape[:2]
    full = min(iw, ih * W / H)
    sizes = full * np.clip(rng.uniform(0.6, 0.95) * np.array([1.0, rng.uniform(0.8, 1.2)]), 0.4, 1)
    ends = []
    for size in sizes:
        w, h = size, size * H / W
        ends.append((rng.uniform(w / 2, iw - w / 2), rng.uniform(h / 2, ih - h / 2)))
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        size = sizes[0] + t * (sizes[1] - sizes[0])
        cx = ends[0][0] + t * (ends[1][0] - ends[0][0])
        cy = ends[0][1] + t * (ends[1][1] - ends[0][1])
        w, h = size, size * H / W
        x0 = int(np.clip(cx - w / 2, 0, iw - w))
        y0 = int(np.clip(cy - h / 2, 0, ih - h))
        out.append(cv2.resize(img[y0 : y0 + int(h), x0 : x0 + int(w)], (W, H)))
    return out


Appearance = tuple[str, int, int, bool]  # identity, first frame, last frame, enrolled


def make_video(path: Path, root: Path, enrolled: list[str], left_out: list[str], count: int,
               unknown_share: float, rng: np.random.Generator) -> list[Appearance]:  # fmt: skip
    """Writes the video; returns its appearances."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    appearances, frame, last = [], 0, None
    for _ in range(count):
        known = rng.random() >= unknown_share
        pool = [i for i in (enrolled if known else left_out) if i != last]
        identity = str(rng.choice(pool))
        shot = photos(root / "queries" / identity)
        img = cv2.imread(str(shot[int(rng.integers(len(shot)))]))
        length = int(rng.integers(15, 41))
        for image in pan_zoom(img, length, rng):
            writer.write(image)
        appearances.append((identity, frame, frame + length - 1, known))
        frame += length
        last = identity
    writer.release()
    return appearances


def agent(*args: str | Path) -> str:
    done = subprocess.run([sys.executable, "-m", "agent", *map(str, args)], capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    if done.returncode:
        sys.exit(f"agent {' '.join(map(str, args[:2]))} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def identity_events(stdout: str) -> list[tuple[int, str]]:
    found = []
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("type") == "match" and event.get("identity"):
            found.append((int(event["frame_index"]), event["identity"]))
    return found


def score(appearances: list[Appearance], events: list[tuple[int, str]]) -> dict[str, int]:
    def on_screen(frame: int) -> Appearance:
        return next(a for a in appearances if a[1] <= frame <= a[2])

    right = sum(1 for f, identity in events if on_screen(f)[0] == identity)
    decided = 0
    for identity, first, last, known in appearances:
        named = [i for f, i in events if first <= f <= last]
        decided += (identity in named) if known else not named
    return {"appearances": len(appearances), "events": len(events), "right": right,
            "decided": decided}  # fmt: skip


def bench_set(root: Path, videos: int, count: int, unknown_share: float,
              seed: int) -> dict[str, float | str]:  # fmt: skip
    identities = sorted(p.name for p in (root / "gallery").iterdir() if p.is_dir())
    left_out = identities[4::5]
    enrolled = [i for i in identities if i not in left_out]
    rng = np.random.default_rng(seed)
    totals = {"appearances": 0, "events": 0, "right": 0, "decided": 0}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "gallery").mkdir()
        for identity in enrolled:
            os.symlink((root / "gallery" / identity).resolve(), work / "gallery" / identity)
        config = work / "agent.toml"
        config.write_text(f'device_id = "bench"\nstate_dir = "{work / "state"}"\n')
        agent("-q", "-c", config, "enroll", work / "gallery", "-g", work / "g")
        for v in range(videos):
            clip = work / f"video_{v}.mp4"
            appearances = make_video(clip, root, enrolled, left_out, count, unknown_share, rng)
            out = agent("-q", "-c", config, "run", "-g", work / "g", "-s", f"cam={clip}", "--fast")
            for key, value in score(appearances, identity_events(out)).items():
                totals[key] += value
    shown = totals["appearances"]
    return {"set": root.name, **totals,
            "right_share": round(totals["right"] / max(totals["events"], 1), 3),
            "decided_share": round(totals["decided"] / shown, 3),
            "events_per_appearance": round(totals["events"] / shown, 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", type=Path, nargs="*", default=SETS)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--appearances", type=int, default=12)
    ap.add_argument("--unknown-share", type=float, default=0.2,
                    help="Share of appearances showing a never-enrolled identity.")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for root in args.sets:
        row = bench_set(root, args.videos, args.appearances, args.unknown_share, args.seed)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

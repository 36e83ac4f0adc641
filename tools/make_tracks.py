"""Labelled tracking sequences from real images: objects moving over real video.

    python tools/make_tracks.py OUT_DIR [--sequences 5] [--frames 150] [--seed 0]

Backgrounds are frames of `../shared/data/frames/real_video/vtest.avi` (a real street scene);
the objects are real photographs from `../shared/data/retrieval/gallery` (ETH-80 objects), cut
out and pasted at a size that changes with depth. Each object moves at constant velocity with
small random turns, crosses and occludes others (nearer objects are drawn last), leaves the
frame and comes back. Per sequence it writes `seq_NN.mp4` and `seq_NN.csv` with one row per
visible object and frame: frame, object (track truth), identity (ETH-80 object), x, y, w, h,
visible (fraction of the box not covered by nearer objects).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
W, H = 768, 576


def background_frames(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SHARED / "data/frames/real_video/vtest.avi"))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 795
    start = int(rng.integers(0, max(1, total - n)))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.resize(frame, (W, H)))
    cap.release()
    return frames


def object_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The photo and a mask of the object (ETH-80 shots are on a uniform blue background)."""
    img = cv2.imread(str(path))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    blue = (hsv[..., 0] > 95) & (hsv[..., 0] < 135) & (hsv[..., 1] > 80)
    mask = (~blue).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if len(xs) < 100:
        return img, np.ones(img.shape[:2], np.uint8)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return img[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def sequence(index: int, out: Path, frames: int, rng: np.random.Generator) -> None:
    gallery = SHARED / "data/retrieval/gallery"
    identities = sorted(p.name for p in gallery.iterdir() if p.is_dir())
    count = int(rng.integers(4, 8))
    chosen = rng.choice(identities, count, replace=False)
    objects = []
    for k, identity in enumerate(chosen):
        files = sorted((gallery / identity).iterdir())
        img, mask = object_image(files[int(rng.integers(0, len(files)))])
        size = float(rng.uniform(70, 140))
        objects.append({
            "id": k + 1, "identity": str(identity), "img": img, "mask": mask,
            "pos": np.array([rng.uniform(0, W), rng.uniform(0, H)]),
            "vel": rng.normal(0, 4.0, 2), "size": size, "depth": float(rng.uniform(0, 1)),
        })  # fmt: skip
    backgrounds = background_frames(frames, rng)
    writer = cv2.VideoWriter(str(out / f"seq_{index:02d}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                             10, (W, H))  # fmt: skip
    rows = []
    for f in range(frames):
        canvas = backgrounds[f].copy()
        cover = np.zeros((H, W), np.int32)
        boxes = {}
        for obj in sorted(objects, key=lambda o: o["depth"]):  # far first, near drawn last
            obj["vel"] = obj["vel"] + rng.normal(0, 0.3, 2)
            obj["pos"] = obj["pos"] + obj["vel"]
            # leave and come back: wrap around with a margin outside the frame
            obj["pos"] = (obj["pos"] + 200) % np.array([W + 400, H + 400]) - 200
            h = int(obj["size"])
            w = max(8, int(h * obj["img"].shape[1] / obj["img"].shape[0]))
            x, y = int(obj["pos"][0] - w / 2), int(obj["pos"][1] - h / 2)
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            img = cv2.resize(obj["img"], (w, h))
            mask = cv2.resize(obj["mask"], (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            sub = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
            region = canvas[y0:y1, x0:x1]
            region[mask[sub]] = img[sub][mask[sub]]
            cover[y0:y1, x0:x1][mask[sub]] = obj["id"]
            boxes[obj["id"]] = (obj, (x0, y0, x1 - x0, y1 - y0), int(mask[sub].sum()))
        for oid, (obj, (x, y, w, h), area) in boxes.items():
            visible = float((cover[y : y + h, x : x + w] == oid).sum()) / max(area, 1)
            rows.append([f, oid, obj["identity"], x, y, w, h, round(visible, 3)])
        writer.write(canvas)
    writer.release()
    with open(out / f"seq_{index:02d}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "object", "identity", "x", "y", "w", "h", "visible"])
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sequences", type=int, default=5)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.sequences):
        sequence(i, args.out, args.frames, rng)
        print(f"wrote {args.out / f'seq_{i:02d}.mp4'}")


if __name__ == "__main__":
    main()

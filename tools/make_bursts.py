"""A copy of an image set whose gallery was enrolled from bursts: each photo and 2 near-copies.

    python tools/make_bursts.py SET_DIR OUT_DIR [--copies 2] [--seed 0]

Galleries enrolled from camera frames, video or re-id tracklets hold several near-identical
images per capture. This writes OUT_DIR/gallery/<identity>/ with every photo of
SET_DIR/gallery followed by `--copies` frames of it slightly re-framed (a 90-97% crop, resized
back) and re-exposed (brightness x 0.9-1.1), and links OUT_DIR/queries to SET_DIR/queries, so
`agent eval -g OUT_DIR/gallery -Q OUT_DIR/queries --open-set` measures how the calibrated
decisions hold up on such a gallery.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

IMAGES = {".jpg", ".jpeg", ".png", ".bmp"}


def near_copy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    scale = rng.uniform(0.9, 0.97)
    cw, ch = int(w * scale), int(h * scale)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    frame = cv2.resize(img[y : y + ch, x : x + cw], (w, h))
    return np.clip(frame.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = sorted(p for p in (args.set_dir / "gallery").glob("*/*") if p.suffix.lower() in IMAGES)
    if not photos:
        raise SystemExit(f"{args.set_dir}/gallery: no <identity>/<image> photos")
    for photo in photos:
        img = cv2.imread(str(photo))
        if img is None:
            raise SystemExit(f"{photo}: not a readable image")
        folder = args.out_dir / "gallery" / photo.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{photo.stem}.jpg"), img)
        for k in range(args.copies):
            cv2.imwrite(str(folder / f"{photo.stem}_copy{k}.jpg"), near_copy(img, rng))
    queries = args.out_dir / "queries"
    if not queries.exists():
        queries.symlink_to((args.set_dir / "queries").resolve(), target_is_directory=True)
    total = len(photos) * (1 + args.copies)
    print(f"{len(photos)} photos, {total} gallery images in {args.out_dir}")


if __name__ == "__main__":
    main()

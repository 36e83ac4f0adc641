"""Demo: embed sampled frames of a camera clip and find each one's nearest gallery image.

Usage: python tools/demo_search.py GALLERY.npz CLIP.mp4 GROUND_TRUTH.csv [--every N]
GALLERY.npz comes from `agent embed examples/gallery --out GALLERY.npz`; the identity of a gallery
image is its folder name. Prints a table of frames with predicted vs true identity, and accuracy.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from agent import ArrayImage, ImageExtractor, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gallery", type=Path)
    parser.add_argument("clip", type=Path)
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("--every", type=int, default=10, help="Use every Nth frame.")
    args = parser.parse_args()

    with np.load(args.gallery, allow_pickle=False) as data:
        gallery, paths = data["embeddings"].astype(np.float32), data["paths"]
    identities = np.array([Path(p).parent.name for p in paths])
    with open(args.ground_truth, newline="") as fh:
        truth = {int(r["frame"]): r["identity"] for r in csv.DictReader(fh)}

    capture = cv2.VideoCapture(str(args.clip))
    frames, indices, index = [], [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % args.every == 0:
            frames.append(ArrayImage(frame, "BGR"))
            indices.append(index)
        index += 1
    capture.release()

    with ImageExtractor.from_config(load_config()) as extractor:
        result = extractor.extract(frames)
        label, provider = extractor.model.label, extractor.provider
    scores = result.embeddings @ gallery.T
    best = scores.argmax(axis=1)

    table = Table(
        title=f"{len(frames)} frames of {args.clip.name} vs {len(gallery)} gallery "
        f"images ({label} on {provider})"
    )
    for col in ("frame", "predicted", "score", "truth", ""):
        table.add_column(col)
    correct = 0
    for row, frame_index in enumerate(indices):
        predicted, true = identities[best[row]], truth.get(frame_index, "?")
        hit = predicted == true
        correct += hit
        table.add_row(
            str(frame_index),
            predicted,
            f"{scores[row, best[row]]:.3f}",
            true,
            "[green]ok[/]" if hit else "[red]miss[/]",
        )
    console = Console()
    console.print(table)
    console.print(f"top-1 accuracy: {correct}/{len(indices)} = {correct / len(indices):.2%}")


if __name__ == "__main__":
    main()

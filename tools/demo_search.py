"""Demo: embed sampled frames of a camera clip and find each one's identity in the gallery.

Usage: python tools/demo_search.py GALLERY_DIR CLIP.mp4 GROUND_TRUTH.csv [--every N]
GALLERY_DIR comes from `agent enroll examples/gallery -g GALLERY_DIR`. Prints a table of frames
with predicted vs true identity, and the top-1 accuracy.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
from rich.console import Console
from rich.table import Table

from agent import ArrayImage, ImageExtractor, load_config
from agent.gallery.gallery import Gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gallery", type=Path)
    parser.add_argument("clip", type=Path)
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("--every", type=int, default=10, help="Use every Nth frame.")
    args = parser.parse_args()

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

    cfg = load_config()
    with Gallery.open(args.gallery) as gallery:
        name, variant = gallery.model.name, gallery.model.variant
        with ImageExtractor.from_config(cfg, name, variant) as extractor:
            result = extractor.extract(frames)
            label, provider = extractor.model.label, extractor.provider
        matches = [r.identities[0] for r in gallery.search(result.embeddings, k=1)]
        size = gallery.count

    table = Table(
        title=f"{len(frames)} frames of {args.clip.name} vs {size} gallery "
        f"images ({label} on {provider})"
    )
    for col in ("frame", "predicted", "score", "truth", ""):
        table.add_column(col)
    correct = 0
    for row, frame_index in enumerate(indices):
        predicted, true = matches[row].identity, truth.get(frame_index, "?")
        hit = predicted == true
        correct += hit
        table.add_row(
            str(frame_index),
            predicted,
            f"{matches[row].score:.3f}",
            true,
            "[green]ok[/]" if hit else "[red]miss[/]",
        )
    console = Console()
    console.print(table)
    console.print(f"top-1 accuracy: {correct}/{len(indices)} = {correct / len(indices):.2%}")


if __name__ == "__main__":
    main()

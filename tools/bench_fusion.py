"""Image + caption fusion on the grocery set: a query shows a product and says what kind it is.

    python tools/bench_fusion.py [--set ../shared/data/products/grocery] [--weight 0.5]

Captions are written from the set's manifest for every identity: its name in words, and its
name with its category ("Golden Delicious, an apple"). Each query image comes with the text of
its category only ("Apple"), which narrows the search but cannot pick the product. Reported:
identity top-1 of the image alone (the gallery of images, default model), of the text alone (a
caption gallery, MiniLM-L6) and of their late fusion (`agent.gallery.scoring.fuse`).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GROCERY = REPO.parent / "shared/data/products/grocery"


def main() -> None:
    from agent.api import open_gallery
    from agent.config import load_config
    from agent.gallery.gallery import Gallery
    from agent.gallery.scoring import fuse
    from agent.runtime.extract import TextExtractor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=Path, default=GROCERY)
    ap.add_argument("--weight", type=float, action="append", help="Image weight (repeatable).")
    args = ap.parse_args()
    weights = args.weight or [0.3, 0.5, 0.7]
    with open(args.set / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    category = {r["identity"]: r["category"] for r in rows}
    queries = [(args.set / r["path"], r["identity"]) for r in rows if r["split"] == "queries"]
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        captions = work / "captions"
        for identity, kind in category.items():
            words = identity.replace("-", " ")
            folder = captions / identity
            folder.mkdir(parents=True)
            (folder / "captions.txt").write_text(f"{words}\n{words}, a {kind.lower()}\n")
        for folder, extra in ((args.set / "gallery", []), (captions, ["--model", "minilm_l6"])):
            target = work / ("images" if folder.name == "gallery" else "text")
            subprocess.run([sys.executable, "-m", "agent", "-q", "enroll", str(folder), "-g",
                            str(target), *extra], check=True, capture_output=True)  # fmt: skip
        n = len(category)
        with open_gallery(work / "images", cfg) as images:
            by_image = images.search([p for p, _ in queries], k=n)
        encoder = TextExtractor.from_config(cfg, "minilm_l6")
        with Gallery.open(work / "text") as text:
            said = encoder.encode([category[t] for _, t in queries])
            by_text = text.search(said, k=n, candidates=max(100, 4 * n))
    truth = [t for _, t in queries]

    def top1(results) -> float:
        right = [r[0].identity == t for r, t in zip(results, truth, strict=True)]
        return round(float(np.mean(right)), 4)

    report = {"queries": len(queries), "identities": n,
              "image_top1": top1([r.identities for r in by_image]),
              "text_top1": top1([r.identities for r in by_text])}  # fmt: skip
    for w in weights:
        fused = [fuse(a, b, w) for a, b in zip(by_image, by_text, strict=True)]
        report[f"fused_top1@image_weight={w}"] = top1(fused)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

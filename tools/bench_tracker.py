"""Tracker quality on labelled sequences (tools/make_tracks.py): IDF1 and identity switches.

    python tools/bench_tracker.py SEQ_DIR [--drop 0.1] [--false-positives 0.5] [--jitter 0.05]

Detections are the ground-truth boxes of objects at least 30% visible, with each box's position
and size jittered by `--jitter` x its size, `--drop` of them removed at random, and on average
`--false-positives` spurious boxes per frame; scores are drawn as a detector's would be (true
boxes high, false ones low). The agent's ByteTracker runs over them in media time (10 fps), and
the tracks are scored against the truth (with `--appearance` the tracker also sees the frames,
for its colour-histogram cue; with `--embed` the confirmed tracks' crops are also embedded with
the gallery's model and tracks are found again by `agent.decide.link.TrackLinker`, as `agent run`
does, with the gallery's calibrated thresholds; the gallery defaults to `examples/gallery`,
another domain than the tracked objects): IDF1 (Ristani et al. 2016: identity-level F1 under the
best one-to-one mapping of tracks to true objects, boxes matching at IoU >= 0.5) and identity
switches (a true object's matched track changing from one frame to the next).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from agent.config import AgentConfig, MatchPolicyConfig, TrackConfig
from agent.decide.link import TrackLinker, View, shows_whole
from agent.decide.policy import decision_rule
from agent.runtime.images import ArrayImage
from agent.stream.track import ByteTracker, assign, iou_matrix

FPS = 10.0
REPO = Path(__file__).resolve().parents[1]


class Linking:
    """The agent's extraction and track linking over a gallery's search space."""

    def __init__(self, gallery_dir: Path | None, track: TrackConfig):
        from agent.gallery.gallery import Gallery
        from agent.gallery.models import embedder_for

        if gallery_dir is None:
            gallery_dir = Path(tempfile.mkdtemp()) / "gallery"
            subprocess.run([sys.executable, "-m", "agent", "-q", "enroll",
                            str(REPO / "examples" / "gallery"), "-g", str(gallery_dir)],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        self.gallery = Gallery.open(gallery_dir)
        self.embedder = embedder_for(AgentConfig(), self.gallery)
        policy = MatchPolicyConfig()
        self.rule = decision_rule(policy, self.gallery.calibration)
        self.track = track

    def linker(self) -> TrackLinker:
        return TrackLinker(self.track.remember_s, self.track.link_views)

    def space(self, frame: np.ndarray, boxes: list) -> np.ndarray:
        crops = []
        for x, y, w, h in boxes:
            x0, y0 = max(int(x), 0), max(int(y), 0)
            crops.append(ArrayImage(np.ascontiguousarray(frame[y0 : int(y + h), x0 : int(x + w)]),
                                    "BGR"))  # fmt: skip
        embedded = self.embedder.embed(crops, flip=self.gallery.settings.flip, cached=False)
        return self.gallery.to_search_space(embedded.vectors)


def load(path: Path) -> dict[int, list[tuple[int, tuple[float, float, float, float], float]]]:
    frames: dict[int, list] = defaultdict(list)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            box = (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]))
            frames[int(r["frame"])].append((int(r["object"]), box, float(r["visible"])))
    return frames


def detections(truth, rng, drop: float, fps_rate: float, jitter: float):
    boxes, scores = [], []
    for _, (x, y, w, h), visible in truth:
        if visible < 0.3 or rng.random() < drop:
            continue
        dx, dy = rng.normal(0, jitter * w), rng.normal(0, jitter * h)
        dw, dh = rng.normal(0, jitter * w), rng.normal(0, jitter * h)
        boxes.append((x + dx, y + dy, max(4.0, w + dw), max(4.0, h + dh)))
        scores.append(float(np.clip(rng.normal(0.8, 0.12) * (0.5 + 0.5 * visible), 0.15, 1.0)))
    for _ in range(rng.poisson(fps_rate)):
        w, h = rng.uniform(30, 120, 2)
        boxes.append((rng.uniform(0, 700), rng.uniform(0, 500), w, h))
        scores.append(float(rng.uniform(0.1, 0.65)))
    return boxes, scores


def idf1(pairs: list[tuple[int, int, int]], n_truth: int, n_pred: int) -> tuple[float, int]:
    """pairs: (frame, true id, track id) of boxes matched at IoU >= 0.5 in each frame."""
    truths = sorted({t for _, t, _ in pairs})
    tracks = sorted({p for _, _, p in pairs})
    overlap = np.zeros((len(truths), len(tracks)))
    ti = {t: i for i, t in enumerate(truths)}
    pi = {p: i for i, p in enumerate(tracks)}
    for _, t, p in pairs:
        overlap[ti[t], pi[p]] += 1
    idtp = 0.0
    if overlap.size:
        norm = overlap / overlap.max()
        matched, _, _ = assign(norm, 1e-9)
        idtp = sum(overlap[r, c] for r, c in matched)
    switches = 0
    last: dict[int, int] = {}
    for _, t, p in sorted(pairs):
        if t in last and last[t] != p:
            switches += 1
        last[t] = p
    return 2 * idtp / max(n_truth + n_pred, 1), switches


def run(csv_path: Path, args, rng, linking: Linking | None) -> dict:
    truth = load(csv_path)
    tracker = ByteTracker(TrackConfig(**args.set), "t")
    video = (cv2.VideoCapture(str(csv_path.with_suffix(".mp4")))
             if args.appearance or linking else None)  # fmt: skip
    linker = linking.linker() if linking and linking.track.remember_s > 0 else None
    pairs, n_truth, n_pred = [], 0, 0
    output: set[str] = set()
    resolved: dict[str, str] = {}  # track id -> the object it turned out to continue
    for f in range(max(truth) + 1):
        gt = [g for g in truth.get(f, []) if g[2] >= 0.3]
        n_truth += len(gt)
        boxes, scores = detections(truth.get(f, []), rng, args.drop, args.false_positives,
                                   args.jitter)  # fmt: skip
        frame = video.read()[1] if video is not None else None
        update = tracker.update(boxes, scores, f / FPS, frame if args.appearance else None)
        out = [(tid, boxes[i]) for i, tid in update.assigned.items()]
        if linking and linker and out:
            space = linking.space(frame, [b for _, b in out])
            height, width = frame.shape[:2]
            views = [View(tid, v, shows_whole(b, width, height))
                     for (tid, b), v in zip(out, space, strict=True)]  # fmt: skip
            for link, (tid, _) in zip(linker.observe(views, f / FPS, linking.rule), out,
                                      strict=True):  # fmt: skip
                if not link.pending:
                    resolved.setdefault(tid, link.object_id)
        for tid in update.ended if linker else ():
            linker.end(tid)
        n_pred += len(out)
        output |= {tid for tid, _ in out}
        if gt and out:
            iou = iou_matrix(np.array([g[1] for g in gt]), np.array([b for _, b in out]))
            matched, _, _ = assign(iou, 0.5)
            pairs += [(f, gt[r][0], out[c][0]) for r, c in matched]
    # A pending track's views are judged under the object it turns out to be (the agent holds
    # its decisions back until then), or under its own id if it never continues one.
    pairs = [(f, t, resolved.get(p, p)) for f, t, p in pairs]
    tracks_seen = {resolved.get(p, p) for p in output}
    if args.oracle:  # the ceiling: every track relabelled to the true object it mostly covers
        votes: dict[str, Counter] = defaultdict(Counter)
        for _, true_id, track in pairs:
            votes[track][true_id] += 1
        pairs = [(f, t, f"o{votes[p].most_common(1)[0][0]}") for f, t, p in pairs]
    score, switches = idf1(pairs, n_truth, n_pred)
    objects = len({g[0] for rows in truth.values() for g in rows})
    return {"sequence": csv_path.stem, "objects": objects, "tracks": len(tracks_seen),
            "idf1": round(score, 4), "id_switches": switches,
            "linked": linker.linked if linker else 0}  # fmt: skip


def _setting(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    return key, float(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sequences", type=Path)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--false-positives", type=float, default=0.5)
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a [track] setting, e.g. --set match_iou=0.1 (repeatable).",
    )
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="Score the ceiling: tracks relabelled to their majority true object.",
    )
    ap.add_argument(
        "--appearance",
        action="store_true",
        help="Give the tracker the frames (colour histograms of the boxes).",
    )
    ap.add_argument(
        "--embed",
        action="store_true",
        help="Embed the tracks' crops and find lost tracks again by embedding (TrackLinker).",
    )
    ap.add_argument(
        "--gallery",
        type=Path,
        help="Enrolled gallery whose model and calibration --embed uses "
        "(default: examples/gallery, enrolled into a temporary folder).",
    )
    args = ap.parse_args()
    args.set = dict(args.set)
    rng = np.random.default_rng(args.seed)
    linking = Linking(args.gallery, TrackConfig(**args.set)) if args.embed else None
    rows = [run(p, args, rng, linking) for p in sorted(args.sequences.glob("seq_*.csv"))]
    tracks = sum(r["tracks"] for r in rows)
    switches = sum(r["id_switches"] for r in rows)
    summary = {"sequences": rows, "mean_idf1": round(float(np.mean([r["idf1"] for r in rows])), 4),
               "switches_per_10_tracks": round(10 * switches / max(tracks, 1), 2)}  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

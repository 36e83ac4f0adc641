"""Objects over time, before anything is embedded: tracks of detected boxes (crop modes) and
appearances of the whole scene (frame mode).

Tracks follow ByteTrack (Zhang et al., ECCV 2022): a constant-velocity Kalman filter predicts
each track's box; confident detections are matched to tracks by IoU first, then the leftover
tracks try the low-score detections (occluded or blurred objects that a single threshold would
drop); unmatched confident detections start tentative tracks, confirmed after `min_hits`
frames, and tracks unseen for `max_lost_s` end. Assignment uses lapx's Jonker-Volgenant solver.
When the frame is given, each track also keeps a colour histogram of its box (cheap, no model):
it breaks ties where boxes overlap (two people crossing) and lets a lost track be found again
where its motion prediction has drifted away (re-entry after leaving the frame).
Appearances end at a scene cut (the gate's thumbnail difference to the previous frame).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.config import TrackConfig

Box = tuple[float, float, float, float]  # x, y, w, h


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n, 4] against every box in b [m, 4] (x, y, w, h)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ax1, ay1, ax2, ay2 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(ax1[:, None], bx1), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(ay1[:, None], by1), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def assign(
    iou: np.ndarray, min_iou: float, appearance: np.ndarray | None = None
) -> tuple[list[tuple[int, int]], set[int], set[int]]:
    """Optimal one-to-one matching maximising IoU (less the appearance distance, 0..1, when
    given); pairs below `min_iou` are not matched."""
    import lap

    rows, cols = iou.shape
    if not rows or not cols:
        return [], set(range(rows)), set(range(cols))
    cost = 1.0 - iou
    if appearance is not None:
        cost = np.where(iou >= min_iou, 0.5 * cost + 0.5 * appearance, 1.0)
    _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=1.0 - min_iou * 0.999)
    pairs = [(r, int(c)) for r, c in enumerate(x) if c >= 0]
    return pairs, set(range(rows)) - {r for r, _ in pairs}, set(range(cols)) - {c for _, c in pairs}


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, aspect, h), as in SORT/ByteTrack."""

    def __init__(self, box: Box):
        x, y, w, h = box
        self.mean = np.array([x + w / 2, y + h / 2, w / max(h, 1e-6), h, 0, 0, 0, 0], float)
        pos, vel = 2 * 0.05 * h, 10 * 0.00625 * h
        self.cov = np.diag([pos**2, pos**2, 1e-4, pos**2, vel**2, vel**2, 1e-10, vel**2])

    def predict(self, steps: float = 1.0) -> None:
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * steps
        h = self.mean[3]
        q = np.diag([(0.05 * h) ** 2] * 2 + [1e-4, (0.05 * h) ** 2]
                    + [(0.00625 * h) ** 2] * 2 + [1e-10, (0.00625 * h) ** 2]) * steps  # fmt: skip
        self.mean = f @ self.mean
        self.cov = f @ self.cov @ f.T + q

    def update(self, box: Box) -> None:
        x, y, w, h = box
        z = np.array([x + w / 2, y + h / 2, w / max(h, 1e-6), h])
        hm = np.eye(4, 8)
        r = np.diag([(0.05 * self.mean[3]) ** 2] * 2 + [1e-2, (0.05 * self.mean[3]) ** 2])
        s = hm @ self.cov @ hm.T + r
        k = self.cov @ hm.T @ np.linalg.inv(s)
        self.mean = self.mean + k @ (z - hm @ self.mean)
        self.cov = (np.eye(8) - k @ hm) @ self.cov

    @property
    def box(self) -> Box:
        cx, cy, a, h = self.mean[:4]
        w = a * h
        return (cx - w / 2, cy - h / 2, w, h)


def histogram(frame: np.ndarray, box: Box) -> np.ndarray | None:
    """Hue-saturation histogram of a box (16 x 4 bins, sums to 1), or None when empty."""
    x, y, w, h = (int(np.rint(v)) for v in box)
    x0, y0 = max(x, 0), max(y, 0)
    patch = frame[y0 : max(y + h, y0), x0 : max(x + w, x0)]
    if patch.size == 0 or patch.ndim != 3:
        return None
    hsv = cv2.cvtColor(patch, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 4], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1e-9)


def appearance_distance(a: list[np.ndarray | None], b: list[np.ndarray | None]) -> np.ndarray:
    """Hellinger distance (0 same, 1 disjoint) between every histogram of a and of b."""
    out = np.ones((len(a), len(b)))
    for i, ha in enumerate(a):
        for j, hb in enumerate(b):
            if ha is not None and hb is not None:
                out[i, j] = np.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(ha * hb)))))
    return out


@dataclass
class Track:
    id: str
    filter: KalmanBox
    last_seen: float
    hits: int = 1
    confirmed: bool = False
    hist: np.ndarray | None = None

    @property
    def box(self) -> Box:
        return self.filter.box


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame did to the tracks: detection index -> track id, and tracks that ended."""

    assigned: dict[int, str] = field(default_factory=dict)
    started: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()


class ByteTracker:
    """Multi-object tracker of one source (not thread-safe: one per source thread)."""

    def __init__(self, cfg: TrackConfig, prefix: str):
        self.cfg = cfg
        self.prefix = prefix
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)
        self._last_time: float | None = None
        self._step_s: float | None = None

    def update(
        self,
        boxes: list[Box],
        scores: list[float],
        time_s: float,
        frame: np.ndarray | None = None,
    ) -> TrackUpdate:
        cfg = self.cfg
        hists = [histogram(frame, b) for b in boxes] if frame is not None else None
        if self._last_time is not None and time_s > self._last_time:
            gap = time_s - self._last_time
            self._step_s = gap if self._step_s is None else 0.9 * self._step_s + 0.1 * gap
        steps = 1.0 if self._last_time is None or not self._step_s else max(
            1.0, (time_s - self._last_time) / self._step_s)  # fmt: skip
        self._last_time = time_s
        for track in self.tracks:
            track.filter.predict(steps)
        dets = np.asarray(boxes, float).reshape(-1, 4)
        conf = np.asarray(scores, float)
        high = np.flatnonzero(conf >= cfg.high_score)
        low = np.flatnonzero((conf < cfg.high_score) & (conf >= cfg.low_score))
        assigned: dict[int, str] = {}
        # 1: confident detections against every live track (confirmed first by cost ties).
        pool = list(range(len(self.tracks)))
        track_boxes = np.array([t.box for t in self.tracks], float).reshape(-1, 4)
        looks = None
        if hists is not None:
            looks = appearance_distance([t.hist for t in self.tracks], [hists[i] for i in high])
        pairs, left_tracks, left_high = assign(iou_matrix(track_boxes[pool], dets[high]),
                                               cfg.match_iou, looks)  # fmt: skip
        for r, c in pairs:
            self._hit(self.tracks[pool[r]], tuple(dets[high[c]]), time_s, hists, int(high[c]))
            assigned[int(high[c])] = self.tracks[pool[r]].id
        # 2: low-score detections rescue confirmed tracks left over from the first stage.
        rest = [pool[r] for r in sorted(left_tracks) if self.tracks[pool[r]].confirmed]
        pairs, _, _ = assign(iou_matrix(track_boxes[rest], dets[low]), cfg.low_match_iou)
        for r, c in pairs:
            self._hit(self.tracks[rest[r]], tuple(dets[low[c]]), time_s, hists, int(low[c]))
            assigned[int(low[c])] = self.tracks[rest[r]].id
        # 2b: confident leftovers that look like a confirmed track gone astray (re-entry).
        if hists is not None:
            left_high = self._recover(left_tracks, pool, left_high, high, dets, hists, time_s,
                                      assigned)  # fmt: skip
        # 3: births from confident, unmatched detections.
        started = []
        for c in sorted(left_high):
            i = int(high[c])
            if conf[i] < cfg.new_track_score:
                continue
            track = Track(f"{self.prefix}{next(self._ids)}", KalmanBox(tuple(dets[i])), time_s,
                          hist=hists[i] if hists is not None else None)  # fmt: skip
            track.confirmed = cfg.min_hits <= 1
            self.tracks.append(track)
            assigned[i] = track.id
            started.append(track.id)
        # 4: deaths: tentative tracks missed once, confirmed ones unseen for max_lost_s.
        ended, alive = [], []
        for track in self.tracks:
            seen = track.last_seen == time_s
            if (not track.confirmed and not seen) or time_s - track.last_seen > cfg.max_lost_s:
                if track.confirmed:
                    ended.append(track.id)
                continue
            alive.append(track)
        self.tracks = alive
        confirmed = {t.id for t in self.tracks if t.confirmed}
        return TrackUpdate(
            {i: tid for i, tid in assigned.items() if tid in confirmed},
            tuple(t for t in started if t in confirmed),
            tuple(ended),
        )

    def _recover(self, left_tracks, pool, left_high, high, dets, hists, time_s, assigned):
        """Confirmed tracks not matched this frame and detections left over: pair them by
        appearance alone (their boxes no longer overlap), if clearly the nearest."""
        lost = [
            pool[r]
            for r in sorted(left_tracks)
            if self.tracks[pool[r]].confirmed and self.tracks[pool[r]].last_seen < time_s
        ]
        cand = sorted(left_high)
        if not lost or not cand:
            return left_high
        dist = appearance_distance([self.tracks[t].hist for t in lost],
                                   [hists[int(high[c])] for c in cand])  # fmt: skip
        taken: set[int] = set()
        for c_pos in np.argsort(dist.min(axis=0)):
            column = dist[:, c_pos]
            order = np.argsort(column)
            best = int(order[0])
            runner = float(column[order[1]]) if len(order) > 1 else 1.0
            if best in taken or column[best] > self.cfg.relink_distance:
                continue
            if runner - column[best] < 0.1:
                continue
            taken.add(best)
            track, i = self.tracks[lost[best]], int(high[cand[c_pos]])
            track.filter = KalmanBox(tuple(dets[i]))  # restart the motion model where it is
            self._hit(track, tuple(dets[i]), time_s, hists, i)
            assigned[i] = track.id
            left_high = left_high - {cand[c_pos]}
        return left_high

    def _hit(self, track: Track, box: Box, time_s: float, hists=None, index: int = -1) -> None:
        track.filter.update(box)
        track.last_seen = time_s
        track.hits += 1
        seen = hists[index] if hists is not None and index >= 0 else None
        if seen is not None:
            track.hist = seen if track.hist is None else 0.8 * track.hist + 0.2 * seen
        if track.hits >= self.cfg.min_hits:
            track.confirmed = True


class AppearanceTracker:
    """Frame mode: the whole frame is the object; a scene cut ends one appearance and starts
    the next."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._ids = itertools.count(1)
        self.current: str | None = None

    def update(self, cut: bool) -> TrackUpdate:
        if self.current is not None and not cut:
            return TrackUpdate({0: self.current})
        ended = (self.current,) if self.current is not None else ()
        self.current = f"{self.prefix}{next(self._ids)}"
        return TrackUpdate({0: self.current}, (self.current,), ended)

    def end_all(self) -> tuple[str, ...]:
        ended = (self.current,) if self.current is not None else ()
        self.current = None
        return ended

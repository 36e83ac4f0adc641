"""Detectors described by a manifest (`models/*.toml` with `modality = "detector"`): how a frame
becomes the input tensor and how the outputs become boxes in frame pixels.

Decoders:
- `ssd`: TensorFlow Object Detection API graphs: post-NMS `detection_boxes` (y1, x1, y2, x2
  normalised to the input), `detection_scores`, `detection_classes`;
- `yolo_v5`: (N, 5 + C): centre x, centre y, width, height in input pixels, objectness, class
  probabilities; `yolo_v8`: (4 + C, N), no objectness; `yolo`: either, by the output's shape;
- `retinaface`: `boxes` (x1, y1, x2, y2) and `landmarks` (5 points) normalised to the input,
  `scores`.
 Every decoder ends with the score threshold, the class
filter and non-maximum suppression at the manifest's (or the config's) IoU.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from agent.config import ModelsConfig
from agent.runtime.manifest import DetectorManifest
from agent.runtime.registry import ResolvedDetector


@dataclass(frozen=True)
class Detection:
    """One box in frame pixels; `landmarks`: five (x, y) points for faces."""

    x: float
    y: float
    w: float
    h: float
    score: float
    label: int = 0
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class _Placement:
    """Where the frame went in the input tensor: input = frame * scale (+ no offset)."""

    scale_x: float
    scale_y: float


class ManifestDetector:
    """One inference session (through the provider plan) of a manifest detector; not
    thread-safe: one per source thread."""

    def __init__(
        self,
        detector: ResolvedDetector,
        models: ModelsConfig,
        trt_cache: Path | None = None,
        classes: list[int] | None = None,
        nms_iou: float | None = None,
    ):
        from agent.runtime.session import create_session

        self.resolved = detector
        self.spec: DetectorManifest = detector.manifest
        self.classes = classes or []
        self.nms_iou = self.spec.detector.nms_iou if nms_iou is None else nms_iou
        self.session, self.session_info = create_session(
            detector.path, models, trt_cache, label=f"detector {detector.manifest.name}"
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.input = self.spec.detector.input or self.session.get_inputs()[0].name

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def max_batch(self) -> int:
        """Frames one call can take: 1 for a graph with a fixed batch of 1."""
        dim = self.session.get_inputs()[0].shape[0]
        return 1 if isinstance(dim, int) and dim == 1 else 64

    def detect(self, frame: np.ndarray, min_score: float) -> list[Detection]:
        tensor, place = self.prepare(frame)
        return self.decode(self.run(tensor)[0], tensor.shape, place, min_score)

    def prepare(self, frame: np.ndarray) -> tuple[np.ndarray, _Placement]:
        """The frame's input tensor (batch of 1) and where the frame went in it."""
        return self._tensor(frame)

    def run(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """One session call on a batch of same-shaped tensors: each frame's outputs."""
        raw = [np.asarray(r) for r in self.session.run(None, {self.input: batch})]
        return [dict(zip(self.outputs, (r[i] for r in raw), strict=True))
                for i in range(len(batch))]  # fmt: skip

    def decode(
        self,
        outputs: dict[str, np.ndarray],
        shape: tuple[int, ...],
        place: _Placement,
        min_score: float,
    ) -> list[Detection]:
        """One frame's outputs as detections in frame pixels: threshold, classes, NMS."""
        height, width = shape[1:3] if self.spec.detector.layout == "NHWC" else shape[2:]
        decode = _DECODERS[self.spec.detector.decoder]
        rects, scores, labels, marks = decode(outputs, width, height)
        keep = scores >= min_score
        if self.classes:
            keep &= np.isin(labels, self.classes)
        rects, scores, labels = rects[keep], scores[keep], labels[keep]
        marks = marks[keep] if marks is not None else None
        rects = rects / [place.scale_x, place.scale_y, place.scale_x, place.scale_y]
        if marks is not None:
            marks = marks / [place.scale_x, place.scale_y]
        chosen = nms(rects, scores, min_score, self.nms_iou)
        return [
            Detection(*(float(v) for v in rects[i]), float(scores[i]), int(labels[i]),
                      None if marks is None else tuple((float(x), float(y)) for x, y in marks[i]))
            for i in chosen
        ]  # fmt: skip

    def _tensor(self, frame: np.ndarray) -> tuple[np.ndarray, _Placement]:
        spec = self.spec.detector
        h, w = frame.shape[:2]
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if spec.resize == "stretch":
            image = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
            place = _Placement(spec.width / w, spec.height / h)
        elif spec.resize == "letterbox":
            scale = min(spec.width / w, spec.height / h)
            resized = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=cv2.INTER_LINEAR)  # fmt: skip
            image = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
            image[: resized.shape[0], : resized.shape[1]] = resized
            place = _Placement(scale, scale)
        else:  # fit: any input size; only shrink to the manifest's bounds
            scale = min(1.0, spec.width / w, spec.height / h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = frame if scale == 1.0 else cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            place = _Placement(size[0] / w, size[1] / h)
        if spec.channel_order == "RGB":
            image = image[:, :, ::-1]
        if spec.dtype == "uint8":
            tensor = np.ascontiguousarray(image)
        else:
            tensor = image.astype(np.float32) * spec.scale - np.asarray(spec.mean, np.float32)
        if spec.layout == "NCHW":
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[None]), place


@dataclass
class _Request:
    tensor: np.ndarray
    place: _Placement
    min_score: float
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Detection] | None = None
    error: BaseException | None = None


class DetectionBatcher:
    """One detector session for every source: the source threads prepare their frames in
    parallel and hand the tensors over; a worker runs the frames that arrive together (same
    input shape, at most `max_batch`) as one batch and hands each thread its detections. It
    waits up to `max_wait_ms` for a frame from each source seen in the last second, no longer,
    so a single source never waits."""

    def __init__(self, model: ManifestDetector, max_batch: int, max_wait_ms: float):
        self.model = model
        self.max_batch = max(1, min(max_batch, model.max_batch))
        self.max_wait_s = max_wait_ms / 1000
        self.batches = 0
        self.frames = 0
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._callers: dict[int, float] = {}
        self._closed = False
        self._worker: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.model.name

    def detect(self, frame: np.ndarray, min_score: float) -> list[Detection]:
        tensor, place = self.model.prepare(frame)
        request = _Request(tensor, place, min_score)
        with self._cond:
            if self._closed:
                raise RuntimeError("the detector is closed")
            self._callers[threading.get_ident()] = time.monotonic()
            self._pending.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="detector", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(5)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                deadline = time.monotonic() + self.max_wait_s
                while len(self._pending) < min(self._expected(), self.max_batch):
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cond.wait(left)
                shape = self._pending[0].tensor.shape
                batch = [r for r in self._pending if r.tensor.shape == shape][: self.max_batch]
                self._pending = [r for r in self._pending if not any(r is b for b in batch)]
            self._run(batch)

    def _expected(self) -> int:
        """Sources that handed a frame over in the last second."""
        now = time.monotonic()
        self._callers = {k: t for k, t in self._callers.items() if now - t < 1.0}
        return max(1, len(self._callers))

    def _run(self, batch: list[_Request]) -> None:
        try:
            outputs = self.model.run(np.concatenate([r.tensor for r in batch]))
            for request, out in zip(batch, outputs, strict=True):
                request.result = self.model.decode(out, request.tensor.shape, request.place,
                                                   request.min_score)  # fmt: skip
        except Exception as exc:  # every waiting source gets the error, none hangs
            for request in batch:
                request.error = exc
        finally:
            self.batches += 1
            self.frames += len(batch)
            for request in batch:
                request.done.set()


Decoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


def _ssd(outputs: dict[str, np.ndarray], width: int, height: int) -> Decoded:
    boxes = outputs["detection_boxes"] * [height, width, height, width]
    y1, x1, y2, x2 = (boxes[:, i] for i in range(4))
    rects = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    labels = outputs.get("detection_classes", np.ones(len(rects))).astype(int) - 1
    return rects, outputs["detection_scores"].astype(np.float64), labels, None


def _yolo(rows: np.ndarray, objectness: bool) -> Decoded:
    scores_all = rows[:, 5:] * rows[:, 4:5] if objectness else rows[:, 4:]
    labels = scores_all.argmax(axis=1) if scores_all.shape[1] else np.zeros(len(rows), int)
    scores = scores_all[np.arange(len(rows)), labels] if scores_all.shape[1] else rows[:, 4]
    cx, cy, bw, bh = (rows[:, i] for i in range(4))
    rects = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
    return rects, scores.astype(np.float64), labels, None


def _yolo_v5(outputs: dict[str, np.ndarray], width: int, height: int) -> Decoded:
    return _yolo(next(iter(outputs.values())), objectness=True)


def _yolo_v8(outputs: dict[str, np.ndarray], width: int, height: int) -> Decoded:
    return _yolo(next(iter(outputs.values())).T, objectness=False)


def _yolo_any(outputs: dict[str, np.ndarray], width: int, height: int) -> Decoded:
    """v8 when the boxes run along the longer axis of a (4 + C, N) output, else v5."""
    rows = next(iter(outputs.values()))
    return (
        _yolo(rows.T, objectness=False)
        if rows.shape[0] < rows.shape[1]
        else _yolo(rows, objectness=True)
    )


def _retinaface(outputs: dict[str, np.ndarray], width: int, height: int) -> Decoded:
    boxes = outputs["boxes"] * [width, height, width, height]
    rects = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0],
                      boxes[:, 3] - boxes[:, 1]], axis=1)  # fmt: skip
    marks = outputs["landmarks"].reshape(-1, 5, 2) * [width, height]
    scores = outputs["scores"].astype(np.float64)
    return rects, scores, np.zeros(len(rects), int), marks


_DECODERS = {
    "ssd": _ssd,
    "yolo": _yolo_any,
    "yolo_v5": _yolo_v5,
    "yolo_v8": _yolo_v8,
    "retinaface": _retinaface,
}


def nms(rects, scores, threshold: float, iou: float) -> list[int]:
    """Indices kept by OpenCV's non-maximum suppression, best first."""
    if len(rects) == 0:
        return []
    boxes = [[float(v) for v in r] for r in np.asarray(rects).reshape(-1, 4)]
    kept = cv2.dnn.NMSBoxes(boxes, [float(s) for s in scores], threshold, iou)
    return [int(i) for i in np.ravel(kept)]

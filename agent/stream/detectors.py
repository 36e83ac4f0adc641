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

from dataclasses import dataclass
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

    def detect(self, frame: np.ndarray, min_score: float) -> list[Detection]:
        tensor, place = self._tensor(frame)
        raw = self.session.run(None, {self.input: tensor})
        outputs = dict(zip(self.outputs, (np.asarray(r)[0] for r in raw), strict=True))
        nhwc = self.spec.detector.layout == "NHWC"
        height, width = tensor.shape[1:3] if nhwc else tensor.shape[2:]
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

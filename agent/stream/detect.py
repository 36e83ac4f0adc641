"""Crops: what part of a frame gets embedded, and which object (track, appearance) it shows.

`frame` (default) embeds the whole frame; `person` uses OpenCV's HOG people detector, `face` its
bundled Haar frontal-face cascade (both only in OpenCV 4.x wheels, hence the <5 pin); `onnx` runs
a YOLO-style detector the user supplies. Detectors are not thread-safe: one per source thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from agent.config import AgentConfig, DetectConfig, ModelsConfig, SourceConfig
from agent.errors import ConfigError
from agent.events import BBox
from agent.stream.frame import Crop, Frame
from agent.stream.track import AppearanceTracker, ByteTracker, TrackUpdate

Box = tuple[float, float, float, float, float]  # x, y, w, h, score in frame pixels


class Detector:
    """Boxes in frame coordinates; `crops` pads, filters and cuts them out."""

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg

    def boxes(self, frame: np.ndarray, min_score: float | None = None) -> list[Box]:
        """Detections scoring at least `min_score` (default: detect.score_threshold)."""
        raise NotImplementedError

    def crop(self, frame: np.ndarray, box: Box, object_id: str = "") -> Crop | None:
        """The padded crop of one box, or None when it is smaller than detect.min_size."""
        height, width = frame.shape[:2]
        x, y, w, h, score = box
        pad_w, pad_h = w * self.cfg.padding, h * self.cfg.padding
        x0, y0 = max(0, int(x - pad_w)), max(0, int(y - pad_h))
        x1, y1 = min(width, int(x + w + pad_w)), min(height, int(y + h + pad_h))
        if min(x1 - x0, y1 - y0) < self.cfg.min_size:
            return None
        return Crop(BBox(x=x0, y=y0, w=x1 - x0, h=y1 - y0), score, frame[y0:y1, x0:x1],
                    object_id, quality=score)  # fmt: skip

    def crops(self, frame: np.ndarray) -> list[Crop]:
        out = [c for b in self.boxes(frame) if (c := self.crop(frame, b)) is not None]
        out.sort(key=lambda c: (-c.score, -c.bbox.w * c.bbox.h))
        return out[: self.cfg.max_crops]

    def _resized(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The frame at `detect_width` (up too: HOG's 64x128 window misses small people)."""
        scale = self.cfg.detect_width / frame.shape[1]
        if abs(scale - 1) < 0.02:
            return frame, 1.0
        method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=method), scale


class WholeFrame(Detector):
    def boxes(self, frame: np.ndarray, min_score: float | None = None) -> list[Box]:
        return [(0, 0, frame.shape[1], frame.shape[0], 1.0)]

    def crop(self, frame: np.ndarray, box: Box, object_id: str = "") -> Crop:
        h, w = frame.shape[:2]
        return Crop(BBox(x=0, y=0, w=w, h=h), 1.0, frame, object_id)


class HogPeople(Detector):
    def __init__(self, cfg: DetectConfig):
        super().__init__(cfg)
        if not hasattr(cv2, "HOGDescriptor"):
            raise ConfigError("detect.mode = person needs OpenCV 4.x (cv2.HOGDescriptor)")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def boxes(self, frame: np.ndarray, min_score: float | None = None) -> list[Box]:
        small, scale = self._resized(frame)
        rects, weights = self.hog.detectMultiScale(
            small, winStride=(8, 8), padding=(8, 8), scale=1.05
        )
        floor = self.cfg.score_threshold if min_score is None else min_score
        keep = _nms(rects, np.ravel(weights), floor, self.cfg.nms_iou)
        return [(*(rects[i] / scale), float(np.ravel(weights)[i])) for i in keep]


class HaarFaces(Detector):
    def __init__(self, cfg: DetectConfig):
        super().__init__(cfg)
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml" if data else None
        if path is None or not path.is_file():
            raise ConfigError("detect.mode = face needs OpenCV 4.x with its Haar cascade files")
        self.cascade = cv2.CascadeClassifier(str(path))

    def boxes(self, frame: np.ndarray, min_score: float | None = None) -> list[Box]:
        small, scale = self._resized(frame)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        side = max(8, int(self.cfg.min_size * scale))
        rects = self.cascade.detectMultiScale(grey, 1.1, 5, minSize=(side, side))
        return [(*(np.asarray(r, float) / scale), 1.0) for r in rects]


class OnnxBoxes(Detector):
    """YOLO-style output: (1, N, 5 + C) with objectness (v5) or (1, 4 + C, N) without (v8);
    boxes as centre x, centre y, width, height in input pixels of a letterboxed square.
    `ssd`: TensorFlow Object Detection API graphs (uint8 NHWC RGB input, the frame stretched to
    the square; post-NMS `detection_boxes` y1, x1, y2, x2 normalised, `detection_scores`)."""

    def __init__(self, cfg: DetectConfig, models: ModelsConfig, trt_cache: Path | None = None):
        super().__init__(cfg)
        from agent.runtime.session import create_session

        if cfg.onnx_model is None or not Path(cfg.onnx_model).is_file():
            raise ConfigError(f"detect.onnx_model not found: {cfg.onnx_model}")
        # The same provider plan as the extractors: TensorRT/CUDA when present, engine cache,
        # a warning on fallback, ModelError for a file onnxruntime cannot load.
        self.session, self.session_info = create_session(
            Path(cfg.onnx_model), models, trt_cache, label=f"detector {Path(cfg.onnx_model).name}"
        )
        self.input = self.session.get_inputs()[0].name
        self.size = cfg.onnx_input_size

    def boxes(self, frame: np.ndarray, min_score: float | None = None) -> list[Box]:
        if self.cfg.onnx_layout == "ssd":
            return self._ssd_boxes(frame, min_score)
        h, w = frame.shape[:2]
        scale = self.size / max(h, w)
        resized = cv2.resize(frame, (round(w * scale), round(h * scale)))
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = np.asarray(self.session.run(None, {self.input: tensor})[0])[0]
        layout = self.cfg.onnx_layout
        if layout == "auto":
            layout = "v8" if out.shape[0] < out.shape[1] else "v5"
        if layout == "v8":  # (4 + C, N), no objectness
            out = out.T
            scores_all = out[:, 4:]
        else:
            scores_all = out[:, 5:] * out[:, 4:5]
        if scores_all.shape[1] == 0:
            return []
        classes = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(out)), classes]
        floor = self.cfg.score_threshold if min_score is None else min_score
        keep = scores >= floor
        if self.cfg.onnx_classes:
            keep &= np.isin(classes, self.cfg.onnx_classes)
        cx, cy, bw, bh = (out[keep, i] / scale for i in range(4))
        rects = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
        chosen = _nms(rects, scores[keep], floor, self.cfg.nms_iou)
        return [(*rects[i], float(scores[keep][i])) for i in chosen]

    def _ssd_boxes(self, frame: np.ndarray, min_score: float | None) -> list[Box]:
        h, w = frame.shape[:2]
        rgb = cv2.resize(frame, (self.size, self.size))[:, :, ::-1]
        outputs = dict(zip((o.name for o in self.session.get_outputs()),
                           self.session.run(None, {self.input: np.ascontiguousarray(rgb)[None]}),
                           strict=True))  # fmt: skip
        boxes = np.asarray(outputs["detection_boxes"])[0] * [h, w, h, w]
        scores = np.asarray(outputs["detection_scores"])[0]
        floor = self.cfg.score_threshold if min_score is None else min_score
        keep = scores >= floor
        y1, x1, y2, x2 = (boxes[keep, i] for i in range(4))
        rects = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
        chosen = _nms(rects, scores[keep], floor, self.cfg.nms_iou)
        return [(*rects[i], float(scores[keep][i])) for i in chosen]


def _nms(rects, scores, threshold: float, iou: float) -> list[int]:
    if len(rects) == 0:
        return []
    boxes = [[float(v) for v in r] for r in np.asarray(rects).reshape(-1, 4)]
    kept = cv2.dnn.NMSBoxes(boxes, [float(s) for s in scores], threshold, iou)
    return [int(i) for i in np.ravel(kept)]


def make_detector(cfg: AgentConfig) -> Detector:
    detect = cfg.detect
    if detect.mode == "person":
        return HogPeople(detect)
    if detect.mode == "face":
        return HaarFaces(detect)
    if detect.mode == "onnx":
        return OnnxBoxes(detect, cfg.models, cfg.trt_cache_path)
    return WholeFrame(detect)


class FrameGate:
    """Two questions about a frame, from one 32x32 grey thumbnail: has it changed enough since
    the last extracted frame to be extracted again, and is it a scene cut from the previous
    frame (the end of an appearance)."""

    SIDE = 32

    def __init__(self, change_threshold: float, cut_threshold: float | None):
        """cut_threshold None: scene cuts are not needed (crop modes, per-frame judging)."""
        self.change_threshold = change_threshold
        self.cut_threshold = cut_threshold
        self._extracted: np.ndarray | None = None
        self._previous: np.ndarray | None = None

    @classmethod
    def thumbnail(cls, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        thumb = cv2.resize(grey, (cls.SIDE, cls.SIDE), interpolation=cv2.INTER_AREA)
        return thumb.astype(np.float32) / (65535.0 if thumb.dtype == np.uint16 else 255.0)

    def check(self, frame: np.ndarray) -> tuple[bool, bool]:
        """(changed, cut) for the next frame of the source."""
        if self.change_threshold <= 0 and self.cut_threshold is None:
            return True, False  # nothing to compare: no thumbnail
        thumb = self.thumbnail(frame)
        previous, self._previous = self._previous, thumb
        cut = self.cut_threshold is not None and (
            previous is None or _difference(thumb, previous) > self.cut_threshold
        )
        unchanged = self.change_threshold > 0 and self._extracted is not None and not cut
        if unchanged and _difference(thumb, self._extracted) < self.change_threshold:
            return False, False
        self._extracted = thumb
        return True, cut


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def make_prepare(cfg: AgentConfig, source: SourceConfig) -> Callable[[Frame], Frame]:
    """The per-source step run in the source thread: change gate, detector, then the objects
    the crops belong to (appearances in frame mode, tracks in crop modes). With a cool-down of
    0 every crop is judged on its own and no objects are kept."""
    detector = make_detector(cfg)
    per_frame = (source.match or cfg.match).cooldown_s <= 0
    appearances_cut = cfg.detect.mode == "frame" and not per_frame
    gate = FrameGate(cfg.detect.change_threshold, cfg.detect.scene_cut if appearances_cut else None)
    prefix = f"{source.id}-"
    if cfg.detect.mode == "frame":
        appearances = AppearanceTracker(prefix)

        def prepare_frame(frame: Frame) -> Frame:
            changed, cut = gate.check(frame.pixels)
            if not changed:
                return replace(frame, reused=True)
            update = appearances.update(cut) if not per_frame else TrackUpdate({0: ""})
            crop = detector.crop(frame.pixels, (0, 0, 0, 0, 1.0), update.assigned[0])
            return replace(frame, crops=(crop,), started=update.started, ended=update.ended)

        return prepare_frame
    tracker = ByteTracker(cfg.track, prefix)
    floor = min(cfg.track.low_score, cfg.detect.score_threshold)

    def prepare_crops(frame: Frame) -> Frame:
        changed, _ = gate.check(frame.pixels)
        if not changed:
            return replace(frame, reused=True)
        t0 = time.perf_counter()
        if per_frame:
            crops = tuple(detector.crops(frame.pixels))
            return replace(frame, crops=crops, detect_ms=(time.perf_counter() - t0) * 1000)
        boxes = detector.boxes(frame.pixels, floor)
        update = tracker.update([b[:4] for b in boxes], [b[4] for b in boxes], frame.media_time,
                                frame.pixels)  # fmt: skip
        crops = [
            c
            for i, oid in update.assigned.items()
            if boxes[i][4] >= cfg.detect.score_threshold
            and (c := detector.crop(frame.pixels, boxes[i], oid)) is not None
        ]
        crops.sort(key=lambda c: (-c.score, -c.bbox.w * c.bbox.h))
        return replace(frame, crops=tuple(crops[: cfg.detect.max_crops]), started=update.started,
                       ended=update.ended, detect_ms=(time.perf_counter() - t0) * 1000)  # fmt: skip

    return prepare_crops

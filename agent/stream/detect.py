"""Crops: what part of a frame gets embedded, and which object (track, appearance) it shows.

`frame` (default) embeds the whole frame. `person`, `face` and `objects` run the detector of a
manifest (`models/*.toml`: SSDLite people, RetinaFace faces with landmarks, YOLOv3-tiny COCO
objects; `detect.model` names another); when the person or face model's file is missing,
OpenCV's HOG people detector or Haar face cascade stand in, with a warning naming the better
model. `onnx` runs a detector file of the user's own. Faces with landmarks are aligned to the
112x112 template and pass quality gates; person crops widen to the 1:2 shape of re-id models.
Detectors are not thread-safe: one per source thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from agent.config import AgentConfig, DetectConfig, SourceConfig
from agent.errors import ConfigError, ModelError
from agent.events import BBox
from agent.runtime.manifest import DetectorManifest, DetectorSpec, Variant
from agent.runtime.registry import ModelRegistry, ResolvedDetector
from agent.stream import faces
from agent.stream.detectors import Detection, DetectionBatcher, ManifestDetector, nms
from agent.stream.frame import Crop, Frame
from agent.stream.track import AppearanceTracker, ByteTracker, TrackUpdate

log = logging.getLogger(__name__)

DEFAULT_DETECTORS = {
    "person": "ssdlite_mobilenetv2_person",
    "face": "retinaface_mnet025",
    "objects": "yolov3_tiny_coco",
}
FALLBACKS = {"person": "OpenCV HOG people detector", "face": "OpenCV Haar face cascade"}
FALLBACK_THRESHOLD = 0.4
PERSON_ASPECT = 0.5  # width / height of re-id inputs (256 x 128)


@dataclass(frozen=True)
class Rejected:
    """A detection that is not embedded, and why (counted in metrics)."""

    reason: str  # small, turned, unaligned, blurred


class Detector:
    """Detections in frame coordinates; `crop` pads, checks and cuts them out."""

    name = "whole frame"

    def __init__(self, cfg: DetectConfig, threshold: float = FALLBACK_THRESHOLD,
                 nms_iou: float = 0.45):  # fmt: skip
        self.cfg = cfg
        self.threshold = cfg.score_threshold if cfg.score_threshold is not None else threshold
        self.nms_iou = cfg.nms_iou if cfg.nms_iou is not None else nms_iou

    def detections(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        """Detections scoring at least `min_score` (default: the detector's threshold)."""
        raise NotImplementedError

    def crop(self, frame: np.ndarray, det: Detection, object_id: str = "") -> Crop | Rejected:
        """The padded crop of one detection (aligned, for a face with landmarks)."""
        if min(det.w, det.h) < self.cfg.min_size:
            return Rejected("small")
        x, y, w, h = det.box
        if self.cfg.mode == "person":  # the 1:2 shape of re-id inputs, around the same centre
            if w < h * PERSON_ASPECT:
                x, w = x - (h * PERSON_ASPECT - w) / 2, h * PERSON_ASPECT
            else:
                y, h = y - (w / PERSON_ASPECT - h) / 2, w / PERSON_ASPECT
        height, width = frame.shape[:2]
        pad_w, pad_h = w * self.cfg.padding, h * self.cfg.padding
        x0, y0 = max(0, int(x - pad_w)), max(0, int(y - pad_h))
        x1, y1 = min(width, int(x + w + pad_w)), min(height, int(y + h + pad_h))
        if min(x1 - x0, y1 - y0) < self.cfg.min_size:
            return Rejected("small")
        bbox = BBox(x=x0, y=y0, w=x1 - x0, h=y1 - y0)
        if det.landmarks is None:
            return Crop(bbox, det.score, frame[y0:y1, x0:x1], object_id, quality=det.score)
        if abs(faces.yaw(np.asarray(det.landmarks))) > self.cfg.face_max_yaw:
            return Rejected("turned")
        aligned = faces.align(frame, np.asarray(det.landmarks))
        if aligned is None:
            return Rejected("unaligned")
        if faces.sharpness(aligned) < self.cfg.face_min_sharpness:
            return Rejected("blurred")
        return Crop(bbox, det.score, aligned, object_id, quality=det.score,
                    landmarks=det.landmarks)  # fmt: skip

    def crops(self, frame: np.ndarray) -> tuple[list[Crop], list[str]]:
        """The kept crops of a frame, best first, and the reasons the others were dropped."""
        out, rejected = [], []
        for det in self.detections(frame):
            got = self.crop(frame, det)
            if isinstance(got, Rejected):
                rejected.append(got.reason)
            else:
                out.append(got)
        out.sort(key=lambda c: (-c.score, -c.bbox.w * c.bbox.h))
        return out[: self.cfg.max_crops], rejected

    def _resized(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """The frame at `detect_width` (up too: HOG's 64x128 window misses small people)."""
        scale = self.cfg.detect_width / frame.shape[1]
        if abs(scale - 1) < 0.02:
            return frame, 1.0
        method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=method), scale


class WholeFrame(Detector):
    def detections(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        return [Detection(0, 0, frame.shape[1], frame.shape[0], 1.0)]

    def crop(self, frame: np.ndarray, det: Detection, object_id: str = "") -> Crop:
        h, w = frame.shape[:2]
        return Crop(BBox(x=0, y=0, w=w, h=h), 1.0, frame, object_id)


class HogPeople(Detector):
    name = FALLBACKS["person"]

    def __init__(self, cfg: DetectConfig):
        super().__init__(cfg)
        if not hasattr(cv2, "HOGDescriptor"):
            raise ConfigError("detect.mode = person needs OpenCV 4.x (cv2.HOGDescriptor)")
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detections(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        small, scale = self._resized(frame)
        rects, weights = self.hog.detectMultiScale(
            small, winStride=(8, 8), padding=(8, 8), scale=1.05
        )
        floor = self.threshold if min_score is None else min_score
        keep = nms(rects, np.ravel(weights), floor, self.nms_iou)
        return [Detection(*(rects[i] / scale), float(np.ravel(weights)[i])) for i in keep]


class HaarFaces(Detector):
    name = FALLBACKS["face"]

    def __init__(self, cfg: DetectConfig):
        super().__init__(cfg)
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml" if data else None
        if path is None or not path.is_file():
            raise ConfigError("detect.mode = face needs OpenCV 4.x with its Haar cascade files")
        self.cascade = cv2.CascadeClassifier(str(path))

    def detections(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        small, scale = self._resized(frame)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        side = max(8, int(self.cfg.min_size * scale))
        rects = self.cascade.detectMultiScale(grey, 1.1, 5, minSize=(side, side))
        return [Detection(*(np.asarray(r, float) / scale), 1.0) for r in rects]


class ModelDetector(Detector):
    """A manifest detector (or the user's own file in onnx mode), through the same provider
    plan as the extractors: TensorRT/CUDA when present, engine cache, a warning on fallback,
    ModelError for a file onnxruntime cannot load."""

    def __init__(
        self, cfg: AgentConfig, detector: ResolvedDetector, classes: list[int], batched: bool
    ):
        spec = detector.manifest.detector
        super().__init__(cfg.detect, spec.score_threshold, spec.nms_iou)
        self.name = detector.label
        model = ManifestDetector(detector, cfg.models, cfg.trt_cache_path, classes, self.nms_iou)
        self.model: ManifestDetector | DetectionBatcher = (
            DetectionBatcher(model, cfg.detect.max_batch, cfg.detect.max_wait_ms)
            if batched else model
        )  # fmt: skip

    @property
    def batches(self) -> int:
        """Inference calls so far, when shared by the sources (0 otherwise)."""
        return self.model.batches if isinstance(self.model, DetectionBatcher) else 0

    def close(self) -> None:
        if isinstance(self.model, DetectionBatcher):
            self.model.close()

    def detections(self, frame: np.ndarray, min_score: float | None = None) -> list[Detection]:
        return self.model.detect(frame, self.threshold if min_score is None else min_score)


@dataclass(frozen=True)
class DetectorChoice:
    """Which detector a mode uses, and why (`agent doctor`, `agent models info`)."""

    mode: str
    detector: str
    reason: str
    fallback: bool = False


def choose_detector(cfg: AgentConfig) -> tuple[DetectorChoice, ResolvedDetector | None]:
    """The detector the configured mode will use: its manifest model when the file is there,
    else the OpenCV fallback (person, face); objects mode, or a model named in
    `detect.model`, has no fallback (ModelError)."""
    mode = cfg.detect.mode
    if mode == "frame":
        return DetectorChoice(mode, "whole frame", "detect.mode = frame embeds whole frames"), None
    if mode == "onnx":
        if cfg.detect.onnx_model is None or not Path(cfg.detect.onnx_model).is_file():
            raise ConfigError(f"detect.onnx_model not found: {cfg.detect.onnx_model}")
        resolved = _own_detector(cfg.detect)
        return DetectorChoice(mode, str(cfg.detect.onnx_model), "detect.onnx_model"), resolved
    if cfg.detect.model == "opencv" and mode in FALLBACKS:
        return DetectorChoice(mode, FALLBACKS[mode], "detect.model = opencv", fallback=True), None
    name = cfg.detect.model or DEFAULT_DETECTORS[mode]
    registry = ModelRegistry.from_config(cfg)
    try:
        resolved = registry.resolve_detector(name, verify=cfg.models.verify_sha256)
    except ModelError as exc:
        if cfg.detect.model or mode not in FALLBACKS:
            raise
        reason = f"{name} is not available ({exc}); the fallback finds fewer and is slower"
        return DetectorChoice(mode, FALLBACKS[mode], reason, fallback=True), None
    why = "detect.model" if cfg.detect.model else f"the default {mode} detector, file verified"
    return DetectorChoice(mode, resolved.label, why), resolved


def _own_detector(detect: DetectConfig) -> ResolvedDetector:
    """onnx mode: the user's file, described by the onnx_* settings."""
    path = Path(detect.onnx_model or "")
    if detect.onnx_layout == "ssd":
        spec = DetectorSpec(input="", layout="NHWC", dtype="uint8", resize="stretch",
                            height=detect.onnx_input_size, width=detect.onnx_input_size,
                            decoder="ssd")  # fmt: skip
    else:
        decoder = {"v5": "yolo_v5", "v8": "yolo_v8"}.get(detect.onnx_layout, "yolo")
        spec = DetectorSpec(input="", resize="letterbox", height=detect.onnx_input_size,
                            width=detect.onnx_input_size, scale=1 / 255, decoder=decoder,
                            score_threshold=FALLBACK_THRESHOLD)  # fmt: skip
    manifest = DetectorManifest(name=path.stem or "detector", modality="detector",
                                default_variant="own", detector=spec,
                                variants={"own": Variant(file=path.name)})  # fmt: skip
    return ResolvedDetector(manifest, "own", manifest.variants["own"], path, "", ())


def make_detector(cfg: AgentConfig, batched: bool = False, warn: bool = True) -> Detector:
    """The configured mode's detector; `batched`: one for all sources, whose frames share
    inference batches (thread-safe)."""
    choice, resolved = choose_detector(cfg)
    detect = cfg.detect
    if resolved is not None:
        if detect.mode == "onnx":
            classes = list(detect.onnx_classes)
        elif detect.mode == "objects":
            classes = resolved.class_ids(detect.classes)
        elif detect.mode == "person" and "person" in resolved.classes:
            classes = resolved.class_ids(["person"])
        else:
            classes = []
        return ModelDetector(cfg, resolved, classes, batched)
    if choice.fallback and warn and cfg.detect.model != "opencv":
        log.warning("detect.mode = %s: %s; using the %s", detect.mode, choice.reason,
                    choice.detector)  # fmt: skip
    if choice.fallback:
        return HogPeople(detect) if detect.mode == "person" else HaarFaces(detect)
    return WholeFrame(detect)


def source_detectors(cfg: AgentConfig, count: int) -> list[Detector]:
    """A detector for each of `count` sources: one shared, batched model detector, or each its
    own OpenCV or whole-frame detector (those are not thread-safe)."""
    first = make_detector(cfg, batched=True)
    if isinstance(first, ModelDetector):
        return [first] * count
    return [first] + [make_detector(cfg, warn=False) for _ in range(count - 1)]


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


def make_prepare(
    cfg: AgentConfig, source: SourceConfig, detector: Detector | None = None
) -> Callable[[Frame], Frame]:
    """The per-source step run in the source thread: change gate, detector, then the objects
    the crops belong to (appearances in frame mode, tracks in crop modes). With a cool-down of
    0 every crop is judged on its own and no objects are kept."""
    detector = detector or make_detector(cfg)
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
            crop = detector.crop(frame.pixels, Detection(0, 0, 0, 0, 1.0), update.assigned[0])
            return replace(frame, crops=(crop,), started=update.started, ended=update.ended)

        return prepare_frame
    tracker = ByteTracker(cfg.track, prefix)
    floor = min(cfg.track.low_score, detector.threshold)

    def prepare_crops(frame: Frame) -> Frame:
        changed, _ = gate.check(frame.pixels)
        if not changed:
            return replace(frame, reused=True)
        t0 = time.perf_counter()
        if per_frame:
            crops, rejected = detector.crops(frame.pixels)
            return replace(frame, crops=tuple(crops), rejected=tuple(rejected),
                           detect_ms=(time.perf_counter() - t0) * 1000)  # fmt: skip
        found = detector.detections(frame.pixels, floor)
        update = tracker.update([d.box for d in found], [d.score for d in found],
                                frame.media_time, frame.pixels)  # fmt: skip
        crops, rejected = [], []
        for i, oid in update.assigned.items():
            if found[i].score < detector.threshold:
                continue
            got = detector.crop(frame.pixels, found[i], oid)
            if isinstance(got, Rejected):
                rejected.append(got.reason)
            else:
                crops.append(got)
        crops.sort(key=lambda c: (-c.score, -c.bbox.w * c.bbox.h))
        return replace(frame, crops=tuple(crops[: cfg.detect.max_crops]), started=update.started,
                       ended=update.ended, rejected=tuple(rejected),
                       detect_ms=(time.perf_counter() - t0) * 1000)  # fmt: skip

    return prepare_crops

"""Values passed between the stream stages: a frame as read, and the crops cut out of it.

Both are frozen: a stage that adds something (the detector's crops, the change gate's verdict)
returns a new Frame with `dataclasses.replace`, so a frame in a queue never changes under its
reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.events import BBox


@dataclass(frozen=True)
class Crop:
    bbox: BBox
    score: float
    pixels: np.ndarray  # BGR view into the frame
    object_id: str = ""  # the track or appearance it belongs to ("" when judged on its own)
    quality: float = 1.0  # weight of its embedding in the object's evidence
    landmarks: tuple[tuple[float, float], ...] | None = None  # faces: five points, frame pixels


@dataclass(frozen=True)
class Frame:
    source_id: str
    index: int
    pixels: np.ndarray  # BGR uint8 (or grey)
    media_time: float  # seconds: position in a file, time since start for live sources
    captured: float  # time.monotonic() when read
    decode_ms: float
    crops: tuple[Crop, ...] = ()
    detect_ms: float = 0.0
    reused: bool = False  # unchanged since the last extracted frame: reuse its result
    started: tuple[str, ...] = ()  # objects (tracks, appearances) first seen in this frame
    ended: tuple[str, ...] = ()  # objects that ended with this frame
    rejected: tuple[str, ...] = ()  # why detections were not embedded (small, blurred, ...)

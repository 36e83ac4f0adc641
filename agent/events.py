"""Payloads the agent publishes: versioned pydantic models with a published JSON schema.

Consumers dedupe match events by `event_id` (delivery is at least once).
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 1
SourceHealth = Literal["starting", "ok", "reconnecting", "stalled", "ended", "failed"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="Bumped on incompatible changes.")
    device_id: str
    ts: float = Field(default_factory=time.time, description="Unix time the payload was made.")

    def to_json(self) -> bytes:
        """Optional fields that are unset are left out; required ones are always present, null
        included (an unknown's `identity`), so every payload validates against its schema."""
        unset = {
            name
            for name, field in type(self).model_fields.items()
            if not field.is_required() and getattr(self, name) is None
        }
        return self.model_dump_json(exclude=unset).encode()


class BBox(BaseModel):
    """Pixel box in the source frame."""

    x: int
    y: int
    w: int
    h: int

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


class RankedIdentity(BaseModel):
    """One of the identities nearest to a crop, best first."""

    identity: str
    score: float


class MatchEvent(Payload):
    """A decision about one object (a track, an appearance, or with cooldown_s = 0 a single
    frame or crop): matched to an identity, or reported as unknown."""

    type: Literal["match"] = "match"
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Unique id.")
    source_id: str
    frame_index: int = Field(description="Frame number within the source since it started.")
    frame_time_s: float = Field(description="Media time (files) or capture time (live).")
    bbox: BBox
    landmarks: list[tuple[float, float]] | None = Field(
        None,
        description="Faces: the five landmarks in frame pixels (eye on the image's left, eye "
        "on its right, nose tip, left and right mouth corner).",
    )
    identity: str | None = Field(description="Matched identity, null for unknown.")
    score: float = Field(description="Score of the top identity (cosine-based, -1..1).")
    margin: float | None = Field(
        None, description="Lead of the top identity's score over the runner-up's."
    )
    track_id: str | None = Field(
        None,
        description="The object decided on: a track (crop modes) or an appearance (frame "
        "mode); absent when every frame is judged on its own (cooldown_s = 0).",
    )
    unknown_id: str | None = Field(
        None, description="Unknowns: stays the same while the same stranger is seen again."
    )
    evidence_frames: int | None = Field(
        None, description="Frames of the object's evidence behind this decision."
    )
    candidates: list[RankedIdentity]
    model: str = Field(description="Model label (name:variant).")
    gallery_version: int
    latency_ms: dict[str, float] = Field(
        default_factory=dict, description="Per stage: decode, detect, infer, search, e2e."
    )
    embedding_f16: str | None = Field(
        None, description="Base64 of the little-endian float16 embedding (optional)."
    )
    thumbnail_jpeg: str | None = Field(None, description="Base64 JPEG of the crop (optional).")


class TrackEvent(Payload):
    """Track lifecycle on `<prefix>/track` (off by default: mqtt.track_events)."""

    type: Literal["track"] = "track"
    source_id: str
    track_id: str
    phase: Literal["new", "end"]
    frame_index: int
    frame_time_s: float
    bbox: BBox | None = None
    frames: int = Field(0, description="Frames the object was seen in so far.")
    identity: str | None = Field(None, description="Identity decided so far, if any.")


class SourceStatus(BaseModel):
    health: SourceHealth
    uri: str
    reconnects: int = 0
    error: str | None = None


class EngineBuildStatus(BaseModel):
    model: str = Field(description="Model label (name:variant).")
    started_at: float = Field(description="Unix time the build started.")
    cache_dir: str = Field(description="Where the engine is written.")


class FleetStatus(BaseModel):
    """Where this box stands in its group's gallery rollout."""

    group: str
    state: Literal["waiting", "downloading", "serving", "refused", "failed"] = Field(
        description="waiting: nothing served from the fleet yet; refused: the last announcement "
        "failed its signature, hash or group check; failed: it could not be fetched or loaded. "
        "In both of these the previous gallery is still served."
    )
    version: int | None = Field(None, description="Fleet gallery version being served.")
    announced: int | None = Field(None, description="Latest version announced to the group.")
    error: str | None = Field(None, description="Why the last announced version is not served.")
    changed_at: float = Field(default_factory=time.time, description="Unix time of the state.")


class StatusEvent(Payload):
    """Retained on `<prefix>/health`; its `state` alone (a plain word) is retained on
    `<prefix>/status`, where the broker publishes `offline` as the agent's Last Will."""

    type: Literal["status"] = "status"
    state: Literal["starting", "online", "offline", "stopped"]
    version: str | None = None
    provider: str | None = None
    model: str | None = None
    gallery_version: int | None = None
    sources: dict[str, SourceStatus] = Field(default_factory=dict)
    engine_builds: list[EngineBuildStatus] = Field(
        default_factory=list,
        description="TensorRT engines being built now; the first start with a new model, GPU "
        "or TensorRT version builds one, which takes minutes on a Jetson.",
    )
    fleet: FleetStatus | None = Field(None, description="Gallery rollout ([fleet] group).")


class Percentiles(BaseModel):
    p50: float
    p95: float
    p99: float
    n: int


class SourceMetrics(BaseModel):
    health: SourceHealth
    frames_in: int
    frames_processed: int
    frames_reused: int
    frames_dropped: int
    frames_corrupt: int
    reconnects: int
    fps_in: float
    fps_processed: float


class MetricsEvent(Payload):
    """Published on `<prefix>/metrics` every `metrics.interval_s` and kept for `agent status`."""

    type: Literal["metrics"] = "metrics"
    uptime_s: float
    pid: int
    provider: str | None
    model: str
    sources: dict[str, SourceMetrics]
    latency_ms: dict[str, Percentiles] = Field(description="Per stage and end-to-end.")
    inference_calls: int
    crops_embedded: int
    events_produced: int
    events_suppressed: int = Field(description="Matches held back by cool-down or consensus.")
    tracks_linked: int = Field(
        0, description="New tracks found to continue an earlier object (same track_id)."
    )
    detect_batches: int = Field(
        0, description="Detector inference calls shared by the sources' frames (model detectors)."
    )
    crops_rejected: dict[str, int] = Field(
        default_factory=dict,
        description="Detections not embedded, by reason: small, turned (faces), unaligned "
        "(faces), blurred (faces).",
    )
    cache_hit_rate: float | None
    gallery_size: int
    gallery_version: int
    gallery_reloads: int
    outbox_backlog: int
    outbox_dropped: int
    published: int
    broker_connected: bool | None = Field(description="None when printing to stdout.")
    errors: dict[str, int] = Field(default_factory=dict, description="Counts by kind.")
    cpu_percent: float
    rss_mb: float


class CommandResult(BaseModel):
    """Answer on `<prefix>/cmd/<name>/result`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    command: str
    ok: bool
    message: str
    request_id: str | None = None
    ts: float = Field(default_factory=time.time)


PAYLOADS: dict[str, type[BaseModel]] = {
    "match": MatchEvent,
    "status": StatusEvent,
    "metrics": MetricsEvent,
    "command-result": CommandResult,
    "track": TrackEvent,
}


def encode_embedding(vector: np.ndarray) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode()


def decode_embedding(text: str) -> np.ndarray:
    import numpy as np

    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)

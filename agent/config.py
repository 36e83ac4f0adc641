"""Agent configuration: one TOML file validated by pydantic, `AGENT_<SECTION>__<KEY>` overrides.

Precedence (highest first): environment, TOML file, defaults.
Unknown keys are rejected with their dotted name.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_ENV = "AGENT_CONFIG"
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)([^/@:]*):([^/@]*)@", re.I)
_SECRET_PARAM = re.compile(r"([?&;](?:password|passwd|pwd|pass|token|key|secret)=)[^&;]*", re.I)


def redact(uri: str) -> str:
    """A URI safe to log or publish: the password of user:password@ and secret-looking query
    parameters become ***."""
    uri = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", uri)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}***", uri)


Provider = Literal["tensorrt", "cuda", "cpu"]


def default_state_dir() -> Path:
    """systemd's StateDirectory when set, else the XDG data home."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "agent"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelsConfig(Section):
    """Which model extracts embeddings and how onnxruntime runs it."""

    dir: Path | None = Field(
        None,
        title="Models directory",
        description="Where imported, pulled and quantised models are written and looked up "
        "first. Default: <state_dir>/models.",
    )
    default: str = Field("efficientnet_lite0", description="Manifest name of the image model.")
    variant: str | None = Field(
        None, description="Variant of the default model (fp32, int8, ...); None = manifest default."
    )
    text_model: str = Field("minilm_l6", description="Manifest name of the text model.")
    providers: list[Provider] = Field(
        default_factory=lambda: ["tensorrt", "cuda", "cpu"],
        description="Execution providers in order of preference; unavailable ones are skipped "
        "with a warning.",
    )
    intra_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = cores).")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level."
    )
    max_batch: int = Field(16, ge=1, le=1024, description="Largest inference batch.")
    decode_workers: int = Field(
        0, ge=0, description="Threads decoding and preprocessing images (0 = cores)."
    )
    warmup: bool = Field(
        True,
        description="GPU providers: run dummy batches (1 and max_batch) when a session is created, "
        "so CUDA picks its kernels before the first real frame. The CPU provider needs none.",
    )
    trt_fp16: bool = Field(True, description="Let TensorRT build fp16 kernels.")
    trt_int8: bool = Field(
        True,
        description="Build int8 TensorRT engines for QDQ (int8) variants; off = run them as fp16.",
    )
    trt_workspace_mb: int = Field(
        1024, ge=64, description="Largest scratch memory TensorRT may use while building (MiB)."
    )
    trt_builder_level: int = Field(
        3, ge=0, le=5, description="TensorRT builder optimisation level (higher: slower build)."
    )
    cuda_graph: bool = Field(
        False,
        description="Capture CUDA graphs (CUDA/TensorRT providers): batches are padded to "
        "power-of-two sizes so each size replays one graph.",
    )
    verify_sha256: bool = Field(True, description="Check each model file's sha256 when loading.")


class GalleryConfig(Section):
    """The local gallery and the retrieval features measured by `agent eval` (see BENCHMARKS.md)."""

    path: Path | None = Field(None, description="Gallery directory (default: <state_dir>/gallery).")
    dtype: Literal["f32", "f16", "i8"] = Field(
        "f16", description="USearch vector storage type of a new gallery."
    )
    connectivity: int = Field(16, ge=4, le=128, description="HNSW graph degree (M).")
    expansion_add: int = Field(128, ge=8, description="HNSW ef at construction.")
    expansion_search: int = Field(64, ge=8, description="HNSW ef at search.")
    flip: bool = Field(
        True, description="Enroll each image as the mean of it and its mirror (gallery side)."
    )
    flip_queries: bool = Field(
        False, description="Also flip-average queries (2x inference per query for ~+0.01 R@1)."
    )
    whiten_dim: int = Field(
        128,
        ge=0,
        description="PCA-whiten to this many dimensions, fitted on the gallery (0 = off). "
        "Applied only when the gallery has at least 4x as many images.",
    )
    identity_weight: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Blend of an image's score with its identity centroid's score "
        "(0 = images only).",
    )
    candidates: int = Field(
        100, ge=1, description="Images fetched from the index per query before aggregation."
    )


class CacheConfig(Section):
    """Persistent LRU embedding cache keyed by content hash and model fingerprint."""

    enabled: bool = Field(True, description="Keep embeddings of content already seen.")
    path: Path | None = Field(None, description="SQLite file (default: <state_dir>/cache.db).")
    max_entries: int = Field(200_000, ge=1, description="Entries kept before LRU eviction.")
    max_mb: float = Field(1024.0, gt=0, description="Embedding bytes kept before LRU eviction.")


SourceKind = Literal["auto", "device", "stream", "file", "gstreamer", "folder"]


Auto = Literal["auto"]


class MatchPolicyConfig(Section):
    """When an object (track, appearance or frame) becomes a match event (per source,
    overridable in [[sources]]). `auto` thresholds are calibrated on the gallery itself."""

    threshold: float | Auto = Field(
        "auto",
        description="Lowest top-identity score for a match; auto: the calibrated unknown "
        "threshold.",
    )
    min_margin: float | Auto = Field(
        "auto",
        description="Lead of the top identity over the runner-up needed for a match; auto: "
        "the lowest lead that reaches target_precision on the gallery's own images.",
    )
    unknown_threshold: float | Auto = Field(
        "auto",
        description="Top score below which an object is unknown (identity null); auto: the "
        "score that only 1 - target_precision of right matches fall below. Between this and a "
        "match nothing is published.",
    )
    target_precision: float = Field(
        0.95, ge=0.5, le=0.999, description="Precision the auto thresholds are set for."
    )
    unknown_share: float = Field(
        0.2,
        ge=0.0,
        le=0.95,
        description="Expected share of objects whose identity was never enrolled, used by the "
        "auto thresholds; raise it where most of what the camera sees is not in the gallery.",
    )
    report_unknown: bool = Field(True, description="Publish events for unknown objects.")
    top_k: int = Field(3, ge=1, le=100, description="Candidates listed in each event.")
    cooldown_s: float = Field(
        10.0,
        ge=0.0,
        description="Per source and identity: a new object with an identity already reported "
        "within this many seconds of media time gives no new event. 0: every frame (or crop) "
        "is judged and reported on its own, with no tracks or appearances.",
    )
    min_frames: int = Field(
        3,
        ge=1,
        description="Frames of evidence an object needs before its decision is published; "
        "objects seen for fewer frames are decided when they end.",
    )
    unknown_ttl_s: float = Field(
        300.0,
        ge=0.0,
        description="An unknown object seen again within this time, on any source of the box, "
        "keeps its unknown_id.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MatchPolicyConfig:
        t, u = self.threshold, self.unknown_threshold
        if t != "auto" and u != "auto" and u > t:
            raise ValueError(f"unknown_threshold ({u}) is above threshold ({t})")
        for name in ("threshold", "unknown_threshold", "min_margin"):
            value = getattr(self, name)
            if value != "auto" and not -2.0 <= value <= 2.0:
                raise ValueError(f"{name} must be auto or a number in -2..2, not {value}")
        return self


class SourceConfig(Section):
    """One camera, stream, video file, GStreamer pipeline or image folder."""

    id: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Names the source in events."
    )
    uri: str = Field(
        ...,
        description="Device index (0), rtsp://, http(s)://, a video file, a GStreamer pipeline "
        "(contains '!'), or an image folder.",
    )
    kind: SourceKind = Field("auto", description="What `uri` is; auto guesses from its form.")
    fps: float = Field(
        0.0, ge=0.0, description="Process at most this many frames/s (0 = every frame)."
    )
    realtime: bool = Field(
        True,
        description="Files: pace frames at their own rate (drop when behind). False: as fast "
        "as the pipeline takes them, losing none.",
    )
    loop: bool = Field(False, description="Files: start again at the end.")
    watch: bool = Field(False, description="Folders: keep watching for new images.")
    queue_size: int = Field(
        4, ge=1, le=1024, description="Frames buffered; the oldest is dropped when full."
    )
    stall_timeout_s: float = Field(
        10.0, gt=0, description="No frame for this long = stalled; reconnect."
    )
    reconnect_min_s: float = Field(0.5, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    max_retries: int = Field(
        0, ge=0, description="Give up (health 'failed') after this many failed opens (0 = never)."
    )
    rtsp_transport: Literal["auto", "tcp", "udp"] = Field(
        "auto",
        description="RTSP over TCP (cameras behind NAT or lossy links) or UDP; auto: FFmpeg's "
        "default (UDP, then TCP).",
    )
    match: MatchPolicyConfig | None = Field(None, description="Overrides [match] for this source.")

    @property
    def shown_uri(self) -> str:
        """The uri with credentials redacted: what logs, status and events may show."""
        return redact(self.uri)

    @model_validator(mode="after")
    def _backoff_ordered(self) -> SourceConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) is above reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        return self


class DetectConfig(Section):
    """What part of a frame is embedded."""

    mode: Literal["frame", "person", "face", "objects", "onnx"] = Field(
        "frame",
        description="frame: whole frame; person: people (SSDLite, or OpenCV HOG when its file "
        "is missing); face: faces with landmarks, aligned (RetinaFace, or OpenCV's Haar "
        "cascade); objects: COCO objects (YOLOv3-tiny) of the classes in `classes`; onnx: a "
        "detector file of your own (onnx_model).",
    )
    model: str | None = Field(
        None,
        description="Detector manifest to use instead of the mode's default "
        '(ssdlite_mobilenetv2_person, retinaface_mnet025, yolov3_tiny_coco); "opencv": '
        "OpenCV's HOG (person) or Haar cascade (face).",
    )
    classes: list[str] = Field(
        default_factory=list,
        description='objects mode: class names kept (e.g. ["car", "dog"]); empty = all.',
    )
    onnx_model: Path | None = Field(None, description="ONNX detector file (mode = onnx).")
    onnx_input_size: int = Field(640, ge=32, description="Square input size of the detector.")
    onnx_layout: Literal["auto", "v5", "v8", "ssd"] = Field(
        "auto",
        description="Output layout: v5 = (1, N, 5 + C) with objectness, v8 = (1, 4 + C, N); "
        "auto takes the longer axis as the boxes; ssd = TensorFlow Object Detection API "
        "(uint8 NHWC RGB input, post-NMS detection_boxes/detection_scores).",
    )
    onnx_classes: list[int] = Field(
        default_factory=list, description="Class ids kept (empty = all)."
    )
    score_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Detector confidence; unset: the detector manifest's default (0.4 for "
        "HOG, Haar and onnx mode).",
    )
    nms_iou: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Non-maximum suppression IoU; unset: the manifest's default (0.45).",
    )
    max_batch: int = Field(
        8, ge=1, le=64, description="Frames of all sources in one detector inference call."
    )
    max_wait_ms: float = Field(
        5.0,
        ge=0.0,
        description="Longest wait for the other sources' frames before a detector batch runs.",
    )
    face_min_sharpness: float = Field(
        20.0,
        ge=0.0,
        description="face mode: aligned faces blurrier than this (variance of the Laplacian of "
        "the 112x112 crop) are not embedded.",
    )
    face_max_yaw: float = Field(
        0.7,
        gt=0.0,
        description="face mode: faces turned further than this (nose offset from the middle "
        "of the eyes over half the eye distance; 0 frontal, about 1 in profile) are not "
        "embedded.",
    )
    min_size: int = Field(
        32, ge=1, description="Crops smaller than this (either side) are dropped."
    )
    max_crops: int = Field(8, ge=1, description="Largest crops kept per frame.")
    padding: float = Field(0.1, ge=0.0, le=1.0, description="Crop padding, fraction of box size.")
    detect_width: int = Field(
        640, ge=64, description="Frames are resized to this width for HOG/Haar detection."
    )
    change_threshold: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Mean absolute grey change (0-1) on a 32x32 thumbnail below which a frame "
        "reuses the last result instead of being extracted (0 = never reuse).",
    )
    scene_cut: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Frame mode: a mean grey change (0-1, 32x32 thumbnail) from the previous "
        "frame above this ends an appearance and starts the next.",
    )


class TrackConfig(Section):
    """Multi-object tracking of detected crops (ByteTrack-style), per source."""

    high_score: float = Field(
        0.5, ge=0.0, le=1.0, description="Detections at or above this are matched first."
    )
    low_score: float = Field(
        0.1, ge=0.0, le=1.0, description="Weaker detections only keep existing tracks alive."
    )
    new_track_score: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Lowest score of an unmatched detection that starts a track.",
    )
    match_iou: float = Field(
        0.2, ge=0.0, le=1.0, description="Lowest IoU of a detection with a track's predicted box."
    )
    low_match_iou: float = Field(
        0.5, ge=0.0, le=1.0, description="Lowest IoU for the low-score second stage."
    )
    min_hits: int = Field(2, ge=1, description="Frames before a new track is confirmed.")
    max_lost_s: float = Field(
        5.0, gt=0.0, description="A track unseen for this many seconds of media time ends."
    )
    relink_distance: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="A lost track is found again by its colour histogram alone (Hellinger "
        "distance at most this, and clearly nearer than any other lost track).",
    )
    remember_s: float = Field(
        30.0,
        ge=0.0,
        description="An object is remembered this long (media time) after its track was lost: "
        "a new track that looks like it (embeddings, judged by the gallery-calibrated identity "
        "rule) continues it, with its track_id and decisions. 0: off.",
    )
    link_views: int = Field(
        20,
        ge=1,
        description="Whole views (boxes not cut by the frame's edge) of a new track compared "
        "with the remembered objects before it counts as a new object.",
    )


class PipelineConfig(Section):
    """Cross-source batching."""

    max_batch: int = Field(8, ge=1, le=256, description="Crops per inference call.")
    max_wait_ms: float = Field(
        10.0, ge=0.0, description="Longest wait for more crops before running a partial batch."
    )
    cache_frames: bool = Field(
        True, description="Look frame/crop embeddings up in the embedding cache."
    )
    gallery_poll_s: float = Field(
        2.0, gt=0, description="How often the gallery version is checked for changes."
    )
    embed_vectors: bool = Field(
        False, description="Put the embedding (base64 float16) in match events."
    )
    thumbnails: bool = Field(False, description="Put a JPEG thumbnail of the crop in events.")
    thumbnail_size: int = Field(128, ge=16, le=1024, description="Thumbnail longest side.")
    drain_timeout_s: float = Field(
        10.0, ge=0.0, description="On stop: longest wait to flush the outbox to the broker."
    )
    exit_when_done: bool = Field(
        True, description="Exit when every source has ended (files, one-shot folders)."
    )


class MqttConfig(Section):
    """Broker connection; no host = events go to stdout as JSON lines."""

    host: str | None = Field(None, description="Broker host (None: print events to stdout).")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(None, description="Default: agent-<device_id>.")
    username: str | None = Field(None, description="Broker user; the password never lives here.")
    password_env: str | None = Field(
        "AGENT_MQTT_PASSWORD", description="Environment variable holding the password."
    )
    password_file: Path | None = Field(
        None, description="File holding the password (e.g. a systemd credential)."
    )
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: Path | None = Field(None, description="CA bundle for the broker (default: system).")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client certificate key (mutual TLS).")
    tls_insecure: bool = Field(False, description="Skip broker hostname verification.")
    topic_prefix: str | None = Field(
        None,
        pattern=r"^[^+#\x00]+$",
        description="Default: agent/<device_id>. MQTT wildcards (+, #) are not allowed.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval.")
    commands: bool = Field(False, description="Accept commands on <prefix>/cmd/<name>.")
    track_events: bool = Field(
        False, description="Publish track lifecycle (new, end) on <prefix>/track (QoS 0)."
    )
    snapshots: bool = Field(
        False,
        description="Publish the JPEG of each source's last decided crop, raw bytes, retained on "
        "<prefix>/<source>/snapshot (Frigate style).",
    )
    max_inflight: int = Field(64, ge=1, le=65535, description="Unacknowledged publishes.")
    max_packet_bytes: int = Field(
        1 << 20,
        ge=1024,
        le=268_435_455,
        description="Events larger than this (or than the broker's limit from an MQTT 5 "
        "CONNACK) are moved to the outbox's dead letters, never retried forever.",
    )


class OutboxConfig(Section):
    """Durable SQLite outbox in front of the publisher."""

    path: Path | None = Field(None, description="SQLite file (default: <state_dir>/outbox.db).")
    max_events: int = Field(100_000, ge=1, description="Backlog bound (events).")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="Events older than this are dropped.")
    policy: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="What a full outbox drops."
    )


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: one device per agent, entities per source."""

    enabled: bool = Field(False, description="Announce the agent to Home Assistant over MQTT.")
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[^+#\x00]+$",
        description="Home Assistant's discovery prefix (its MQTT integration setting).",
    )


class HttpConfig(Section):
    """A local HTTP endpoint: Prometheus metrics on /metrics and a read-only page on /."""

    enabled: bool = Field(False, description="Serve /metrics and the page (needs the "
                          "prometheus extra: pip install 'agent[prometheus]').")  # fmt: skip
    host: str = Field(
        "127.0.0.1", description="Address to bind; beyond localhost a token is required."
    )
    port: int = Field(9108, ge=0, le=65535, description="Port (0: any free port).")
    token_env: str = Field(
        "AGENT_HTTP_TOKEN",
        description="Environment variable holding the token requests must carry "
        "(Authorization: Bearer, or ?token=); unset variable: no token (localhost only).",
    )
    recent: int = Field(50, ge=1, le=1000, description="Recent decisions the page keeps.")


class FleetConfig(Section):
    """Gallery rollout: follow the signed gallery versions announced for a group of boxes."""

    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Gallery group this box follows (None: galleries are enrolled locally).",
    )
    topic_prefix: str = Field(
        "fleet",
        pattern=r"^[^+#\x00]+$",
        description="Fleet topic prefix: versions are announced on <prefix>/gallery/<group>.",
    )
    public_key: str | None = Field(
        None,
        description="The publisher's Ed25519 public key, base64 (`agent fleet keygen` prints "
        "it); artefacts not signed by its private key are refused.",
    )
    keep_versions: int = Field(
        2, ge=2, le=100, description="Gallery versions kept on disk (the served one included)."
    )
    max_artefact_mb: float = Field(1024.0, gt=0, description="Largest artefact downloaded.")
    download_timeout_s: float = Field(
        60.0, gt=0, description="Network timeout of an artefact download (per read)."
    )
    startup_wait_s: float = Field(
        15.0,
        ge=0,
        description="A box with no fleet gallery yet: how long the start waits for the retained "
        "announcement before it serves the local gallery.",
    )


class MetricsConfig(Section):
    """Periodic metrics on `<prefix>/metrics` and in the status file."""

    interval_s: float = Field(10.0, gt=0, description="Metrics publish and status file period.")


class AgentConfig(BaseSettings):
    """Root of `agent.toml`."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    device_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        pattern=r"^[^/+#\x00-\x1f]{1,253}$",
        description="Names this agent in MQTT topics (no '/', '+', '#' or control characters).",
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Writable directory for models, galleries, cache and outbox.",
    )

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir_given(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty (unset it to use the default)")
        return value

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level of `agent run` (-v/-q change it per command)."
    )
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    sources: list[SourceConfig] = Field(
        default_factory=list, description="Cameras and files `agent run` reads ([[sources]])."
    )
    detect: DetectConfig = Field(default_factory=DetectConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    match: MatchPolicyConfig = Field(default_factory=MatchPolicyConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the TOML file (passed as init kwargs); nested sections are merged.
        return (env_settings, init_settings)

    @property
    def models_dir(self) -> Path:
        return (self.models.dir or self.state_dir / "models").expanduser()

    @property
    def gallery_path(self) -> Path:
        return (self.gallery.path or self.state_dir / "gallery").expanduser()

    @property
    def cache_path(self) -> Path:
        return (self.cache.path or self.state_dir / "cache.db").expanduser()

    @property
    def outbox_path(self) -> Path:
        return (self.outbox.path or self.state_dir / "outbox.db").expanduser()

    @property
    def trt_cache_path(self) -> Path:
        """TensorRT engines and timing caches, one folder per model sha, GPU and TRT version."""
        return self.state_dir / "trt_cache"

    @property
    def status_path(self) -> Path:
        """Where `agent run` leaves its latest metrics for `agent status`."""
        return self.state_dir / "status.json"

    @property
    def topic_prefix(self) -> str:
        return (self.mqtt.topic_prefix or f"agent/{self.device_id}").rstrip("/")


def _format_error(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        hint = _did_you_mean(e["loc"]) if e["type"] == "extra_forbidden" else ""
        parts.append(f"{key}: {e['msg']}{hint}")
    return f"invalid config ({origin}): " + "; ".join(parts)


def _did_you_mean(loc: tuple) -> str:
    """For an unknown key: the nearest known key of its section, if one is close."""
    import difflib

    model: type[BaseModel] = AgentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            if isinstance(part, int):
                continue  # a list index ([[sources]])
            return ""
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,))
                 if isinstance(a, type) and issubclass(a, BaseModel)]  # fmt: skip
        if not inner:
            return ""
        model = inner[0]
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None


def load_config(path: str | Path | None = None) -> AgentConfig:
    """Load `agent.toml` (or $AGENT_CONFIG, or defaults only), apply env overrides, validate."""
    path = path or os.environ.get(CONFIG_ENV)
    data = read_toml(Path(path)) if path else {}
    origin = f"{path} + AGENT_* environment" if path else "AGENT_* environment"
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin)) from None
    except SettingsError as exc:  # an AGENT_* value that is not the JSON its field needs
        raise ConfigError(
            f"invalid config ({origin}): {exc}; lists and sections given in the environment "
            'are JSON, e.g. AGENT_MODELS__PROVIDERS=\'["cuda", "cpu"]\''
        ) from None


_NAMED_SOURCE = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


def source_from_spec(spec: str, n: int, require_id: bool = False) -> SourceConfig:
    """`ID=URI` or just `URI` (id: the file stem, or src<n>), as `--source` takes it."""
    match = _NAMED_SOURCE.match(spec)
    if match and "://" not in match.group(1):
        source_id, uri = match.groups()
    elif require_id:
        raise ConfigError(f"--source {spec!r}: expected ID=URI, e.g. entrance=rtsp://10.0.0.20/s1")
    else:
        uri = spec
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(spec).stem) if "://" not in spec else ""
        source_id = stem[:64] if stem and not spec.isdigit() else f"src{n}"
    return SourceConfig(id=source_id, uri=uri)


def parse_broker(text: str) -> tuple[str, int | None, bool | None]:
    """`HOST`, `HOST:PORT`, `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS, port 8883 by
    default), as `--broker` takes it: host, port (None: the config's) and TLS (None: the
    config's)."""
    tls: bool | None = None
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"--broker {text!r}: the scheme must be mqtt:// or mqtts://")
        tls, text = scheme == "mqtts", rest.rstrip("/")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigError(f"--broker {text!r}: expected HOST or HOST:PORT")
    if port and not port.isdigit():
        raise ConfigError(f"--broker {text!r}: port must be a number ({port!r} is not a number)")
    return host, int(port) if port else (8883 if tls else None), tls

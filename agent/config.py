"""Agent configuration: one TOML file validated by pydantic, `AGENT_<SECTION>__<KEY>` overrides.

Precedence (highest first): environment, TOML file, defaults.
Unknown keys are rejected with their dotted name.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_ENV = "AGENT_CONFIG"
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
    warmup: bool = Field(True, description="Run one dummy batch when a session is created.")
    trt_fp16: bool = Field(True, description="Let TensorRT build fp16 kernels.")
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

    enabled: bool = True
    path: Path | None = Field(None, description="SQLite file (default: <state_dir>/cache.db).")
    max_entries: int = Field(200_000, ge=1, description="Entries kept before LRU eviction.")
    max_mb: float = Field(1024.0, gt=0, description="Embedding bytes kept before LRU eviction.")


class AgentConfig(BaseSettings):
    """Root of `agent.toml`."""

    model_config = SettingsConfigDict(
        env_prefix="AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    device_id: str = Field(
        default_factory=lambda: socket.gethostname(), description="Names this agent in MQTT topics."
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Writable directory for models, galleries, cache and outbox.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

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


def _format_error(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{key}: {e['msg']}")
    return f"invalid config ({origin}): " + "; ".join(parts)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None) -> AgentConfig:
    """Load `agent.toml` (or $AGENT_CONFIG, or defaults only), apply env overrides, validate."""
    path = path or os.environ.get(CONFIG_ENV)
    data = read_toml(Path(path)) if path else {}
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        origin = f"{path} + AGENT_* environment" if path else "AGENT_* environment"
        raise ConfigError(_format_error(exc, origin)) from None

"""Model manifests: one TOML file per model describing its file(s), input spec and preprocessing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import ModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageInput(_Strict):
    """How an image becomes the network's input tensor."""

    name: str = Field(description="Graph input name.")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["short_side_center_crop", "direct", "letterbox"] = Field(
        "short_side_center_crop",
        description="short_side_center_crop: short side to `resize_short`, centre crop; "
        "direct: stretch to the input size; letterbox: keep aspect, pad with `pad_value`.",
    )
    resize_short: int | None = Field(None, gt=0, description="Short side before the crop.")
    interpolation: Literal["auto", "linear", "area", "cubic"] = Field(
        "auto", description="auto: area when shrinking, linear when enlarging."
    )
    pad_value: int = Field(114, ge=0, le=255)
    mean: tuple[float, float, float] = Field(description="Per channel, on the [0,1] scale.")
    std: tuple[float, float, float] = Field(description="Per channel, on the [0,1] scale.")

    @model_validator(mode="after")
    def _short_side(self) -> ImageInput:
        if self.resize == "short_side_center_crop" and self.resize_short is None:
            object.__setattr__(self, "resize_short", max(self.height, self.width))
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self


class TextInput(_Strict):
    """Tokenizer and graph inputs of a text model."""

    tokenizer: str = Field(description="tokenizer.json path, relative to the manifest's folder.")
    max_length: int = Field(256, gt=0)
    input_ids: str = "input_ids"
    attention_mask: str | None = "attention_mask"
    token_type_ids: str | None = None
    pad_to_multiple: int | None = None


class Variant(_Strict):
    file: str = Field(description="ONNX file name, looked up in the model directories.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    url: str | None = Field(None, description="Where `agent models pull` downloads it from.")
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    size_bytes: int | None = None
    notes: str = ""


class _Model(_Strict):
    """What every model manifest has: a name, provenance and its variant files."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    licence: str = "unknown"
    source: str = ""
    default_variant: str
    variants: dict[str, Variant]

    # Set by the loader, not read from TOML.
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _default_exists(self) -> _Model:
        if self.default_variant not in self.variants:
            raise ValueError(f"default_variant {self.default_variant!r} is not among the variants")
        return self

    def variant(self, name: str | None) -> tuple[str, Variant]:
        key = name or self.default_variant
        if key not in self.variants:
            raise ModelError(
                f"model {self.name!r} has no variant {key!r} "
                f"(available: {', '.join(sorted(self.variants))})"
            )
        return key, self.variants[key]


class Manifest(_Model):
    """An embedding model (image or text)."""

    modality: Literal["image", "text"]
    task: str = Field("embedding", description="What the embedding is for (product, re-id, ...).")
    embedding_dim: int = Field(gt=0)
    output: str = Field(description="Graph output holding the embedding.")
    image: ImageInput | None = None
    text: TextInput | None = None
    paired_with: str | None = Field(
        None, description="Name of the other tower of a joint image/text model (CLIP)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.modality == "image" and self.image is None:
            raise ValueError("an image model needs an [image] table")
        if self.modality == "text" and self.text is None:
            raise ValueError("a text model needs a [text] table")
        return self


class DetectorSpec(_Strict):
    """How a frame becomes a detector's input, and how its outputs are read."""

    input: str = Field(description="Graph input name.")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8"] = "float32"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch", "letterbox", "fit"] = Field(
        description="stretch: to height x width; letterbox: keep the aspect ratio, pad to "
        "height x width (image at the top left); fit: keep the aspect ratio, only shrink to fit "
        "height x width (models that take any input size)."
    )
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    pad_value: int = Field(114, ge=0, le=255)
    scale: float = Field(1.0, gt=0, description="float32 input: pixel (0-255) times this ...")
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="... minus this, per channel in channel_order."
    )
    decoder: Literal["ssd", "yolo", "yolo_v5", "yolo_v8", "retinaface"] = Field(
        description="yolo: v5 or v8, told apart by the output's shape."
    )
    classes: list[str] = Field(default_factory=list, description="Class names by class id.")
    classes_file: str | None = Field(None, description="Class names, one per line (a file).")
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Default confidence.")
    nms_iou: float = Field(0.45, ge=0.0, le=1.0, description="Default NMS IoU.")


class DetectorManifest(_Model):
    """A detector: boxes (and landmarks) from frames."""

    modality: Literal["detector"]
    task: str = "detection"
    detector: DetectorSpec


def _validate(data: dict) -> Manifest | DetectorManifest:
    if data.get("modality") == "detector":
        return DetectorManifest.model_validate(data)
    return Manifest.model_validate(data)


def load_any_manifest(path: Path) -> Manifest | DetectorManifest:
    """An embedding model's or a detector's manifest."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        manifest = _validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"invalid manifest {path}: {where}") from None
    return manifest.model_copy(update={"path": path})


def load_manifest(path: Path) -> Manifest:
    """An embedding model's manifest."""
    manifest = load_any_manifest(path)
    if not isinstance(manifest, Manifest):
        raise ModelError(f"{path} describes a detector, not an embedding model")
    return manifest


def dump_manifest(manifest: Manifest | DetectorManifest) -> str:
    """TOML text of a manifest (written when a variant is added by quantisation or import)."""
    import tomli_w

    return tomli_w.dumps(manifest.model_dump(exclude_none=True, mode="json"))

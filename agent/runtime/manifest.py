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


class Manifest(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    modality: Literal["image", "text"]
    task: str = Field("embedding", description="What the embedding is for (product, re-id, ...).")
    embedding_dim: int = Field(gt=0)
    output: str = Field(description="Graph output holding the embedding.")
    licence: str = "unknown"
    source: str = ""
    default_variant: str
    image: ImageInput | None = None
    text: TextInput | None = None
    paired_with: str | None = Field(
        None, description="Name of the other tower of a joint image/text model (CLIP)."
    )
    variants: dict[str, Variant]

    # Set by the loader, not read from TOML.
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.default_variant not in self.variants:
            raise ValueError(f"default_variant {self.default_variant!r} is not among the variants")
        if self.modality == "image" and self.image is None:
            raise ValueError("an image model needs an [image] table")
        if self.modality == "text" and self.text is None:
            raise ValueError("a text model needs a [text] table")
        return self

    def variant(self, name: str | None) -> tuple[str, Variant]:
        key = name or self.default_variant
        if key not in self.variants:
            raise ModelError(
                f"model {self.name!r} has no variant {key!r} "
                f"(available: {', '.join(sorted(self.variants))})"
            )
        return key, self.variants[key]


def load_manifest(path: Path) -> Manifest:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        manifest = Manifest.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"invalid manifest {path}: {where}") from None
    return manifest.model_copy(update={"path": path})


def dump_manifest(manifest: Manifest) -> str:
    """TOML text of a manifest (written when a variant is added by quantisation or import)."""
    import tomli_w

    return tomli_w.dumps(manifest.model_dump(exclude_none=True, mode="json"))

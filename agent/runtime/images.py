"""Image inputs and per-item errors: the values extraction takes and reports.

Nothing here decodes, so code that only passes images along (enrollment triage, sources,
the embedding cache) does not load OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
ColorOrder = Literal["BGR", "RGB", "GRAY"]


@dataclass(frozen=True)
class ArrayImage:
    """A decoded image in memory, with its channel order stated."""

    pixels: np.ndarray
    color: ColorOrder = "BGR"


@dataclass(frozen=True)
class EncodedImage:
    """Encoded file bytes (already read, e.g. to hash them) with the name errors should show."""

    data: bytes
    name: str


ImageLike = Union[str, Path, bytes, "np.ndarray", ArrayImage, EncodedImage]


def describe(item: ImageLike) -> str:
    """Short name for an input, used in per-item errors."""
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, bytes):
        return f"<{len(item)} bytes>"
    if isinstance(item, EncodedImage):
        return item.name
    pixels = item.pixels if isinstance(item, ArrayImage) else item
    return f"<array {'x'.join(map(str, pixels.shape))} {pixels.dtype}>"


@dataclass(frozen=True)
class ItemError:
    index: int
    source: str
    message: str


def list_images(directory: Path, recursive: bool = True) -> list[Path]:
    """Image files under a directory (by suffix), sorted for a stable order."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in directory.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )

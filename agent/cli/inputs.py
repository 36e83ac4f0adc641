"""Turning CLI path arguments into image lists with clear errors."""

from __future__ import annotations

from pathlib import Path

from agent.errors import InputError
from agent.runtime.images import list_images


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given; directories expanded recursively to their image files."""
    images: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise InputError(f"{p}: no images (jpg, jpeg, png, webp, bmp, tif, tiff)")
            images += found
        elif p.exists():
            images.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    if not images:
        raise InputError("no input images given")
    return images

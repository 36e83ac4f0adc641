"""Edge embedding agent.

Python API::

    from agent import load_config, ImageExtractor, open_gallery
    cfg = load_config()                      # agent.toml / AGENT_* / defaults
    with ImageExtractor.from_config(cfg) as ex:
        result = ex.extract(["a.jpg", "b.png"])   # or: await ex.aextract([...])
        result.embeddings, result.ok, result.errors
    with open_gallery("my_gallery", cfg) as gallery:
        gallery.enroll("photos/")            # photos/<identity>/<image>
        gallery.search(["query.jpg"])[0].identities

Names are imported on first use (PEP 562), so `import agent` (and every CLI command that does
not need them) loads neither onnxruntime nor OpenCV.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Decompression bombs: OpenCV refuses, before allocating, any image whose header declares more
# pixels than this (a 2.6 MB PNG can declare 30000 x 30000 = 2.7 GB). It applies to every decode
# of the process (files, folder sources, remote commands); set the variable to change it. An
# empty or non-numeric value would abort OpenCV, so it is replaced by the default.
MAX_IMAGE_PIXELS = 40_000_000
if not os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip().isdigit():
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)
# OpenCV's own `[ WARN:0@...]` lines (a camera that does not open, a stream that drops) would
# go raw to stderr between the agent's log lines; the agent logs those failures itself.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

_EXPORTS = {
    "AgentConfig": "agent.config",
    "load_config": "agent.config",
    "AgentError": "agent.errors",
    "ConfigError": "agent.errors",
    "InputError": "agent.errors",
    "ModelError": "agent.errors",
    "PCAProjection": "agent.gallery.space",
    "from_bytes": "agent.runtime.embeddings",
    "to_bytes": "agent.runtime.embeddings",
    "ExtractResult": "agent.runtime.extract",
    "ImageExtractor": "agent.runtime.extract",
    "ItemError": "agent.runtime.images",
    "TextExtractor": "agent.runtime.extract",
    "Manifest": "agent.runtime.manifest",
    "load_manifest": "agent.runtime.manifest",
    "ArrayImage": "agent.runtime.images",
    "Preprocessor": "agent.runtime.preprocess",
    "ModelRegistry": "agent.runtime.registry",
    "ResolvedModel": "agent.runtime.registry",
    "GalleryClient": "agent.api",
    "open_gallery": "agent.api",
}

__all__ = [
    "AgentConfig",
    "AgentError",
    "ArrayImage",
    "ConfigError",
    "ExtractResult",
    "GalleryClient",
    "ImageExtractor",
    "InputError",
    "ItemError",
    "Manifest",
    "ModelError",
    "ModelRegistry",
    "PCAProjection",
    "Preprocessor",
    "ResolvedModel",
    "TextExtractor",
    "from_bytes",
    "load_config",
    "load_manifest",
    "open_gallery",
    "to_bytes",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from agent.api import GalleryClient, open_gallery
    from agent.config import AgentConfig, load_config
    from agent.errors import AgentError, ConfigError, InputError, ModelError
    from agent.gallery.space import PCAProjection
    from agent.runtime.embeddings import from_bytes, to_bytes
    from agent.runtime.extract import ExtractResult, ImageExtractor, TextExtractor
    from agent.runtime.images import ArrayImage, ItemError
    from agent.runtime.manifest import Manifest, load_manifest
    from agent.runtime.preprocess import Preprocessor
    from agent.runtime.registry import ModelRegistry, ResolvedModel

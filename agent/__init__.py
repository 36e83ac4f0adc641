"""Edge embedding agent.

Python API::

    from agent import load_config, ImageExtractor
    cfg = load_config()                      # agent.toml / AGENT_* / defaults
    with ImageExtractor.from_config(cfg) as ex:
        result = ex.extract(["a.jpg", "b.png"])
        result.embeddings, result.ok, result.errors
"""

from agent.config import AgentConfig, load_config
from agent.embeddings import PCAProjection, from_bytes, to_bytes
from agent.errors import AgentError, ConfigError, InputError, ModelError
from agent.extract import ExtractResult, ImageExtractor, ItemError, TextExtractor
from agent.manifest import Manifest, load_manifest
from agent.preprocess import ArrayImage, Preprocessor
from agent.registry import ModelRegistry, ResolvedModel

__version__ = "0.1.0"

__all__ = [
    "AgentConfig",
    "AgentError",
    "ArrayImage",
    "ConfigError",
    "ExtractResult",
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
    "to_bytes",
]

"""Compact binary embeddings and PCA projection (numpy only, no pickle)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from agent.atomic import atomic_write_bytes
from agent.errors import InputError

MAGIC = b"AEMB"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBHII")  # magic, version, dtype code, reserved, count, dim
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
_CODES = {v: k for k, v in _DTYPES.items()}


def to_bytes(embeddings: np.ndarray, dtype: str = "float32") -> bytes:
    """[count, dim] embeddings as a small header plus little-endian float32/float16 rows."""
    emb = np.atleast_2d(np.asarray(embeddings))
    target = np.dtype(dtype).newbyteorder("<")
    if target not in _CODES:
        raise ValueError(f"unsupported dtype {dtype!r} (float32 or float16)")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, _CODES[target], 0, emb.shape[0], emb.shape[1])
    return header + emb.astype(target, copy=False).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    """Inverse of to_bytes; always returns float32."""
    if len(data) < _HEADER.size:
        raise InputError("embedding blob is shorter than its header")
    magic, version, code, _, count, dim = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION or code not in _DTYPES:
        raise InputError("not an embedding blob of a known format/version")
    dtype = _DTYPES[code]
    expected = _HEADER.size + count * dim * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"embedding blob has {len(data)} bytes, header says {expected}")
    body = np.frombuffer(data, dtype=dtype, offset=_HEADER.size)
    return body.reshape(count, dim).astype(np.float32)


class PCAProjection:
    """Project L2-normalised embeddings to fewer dimensions (optionally whitened), re-normalise."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray):
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)  # [out_dim, in_dim]
        self.scale = scale.astype(np.float32)  # [out_dim]; 1 unless whitened

    @property
    def in_dim(self) -> int:
        return self.components.shape[1]

    @property
    def out_dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, samples: np.ndarray, dim: int, whiten: bool = False, eps: float = 1e-6):
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise InputError("PCA needs at least 2 sample embeddings")
        if not 0 < dim <= min(x.shape):
            raise InputError(f"PCA dim must be in 1..{min(x.shape)} for {x.shape} samples")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        variance = (s[:dim] ** 2) / (len(x) - 1)
        scale = 1.0 / np.sqrt(variance + eps) if whiten else np.ones(dim)
        return cls(mean, vt[:dim], scale)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        y = ((np.asarray(embeddings, np.float32) - self.mean) @ self.components.T) * self.scale
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return y / np.maximum(norms, 1e-12)

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components, scale=self.scale)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> PCAProjection:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["components"], data["scale"])

"""Compact binary embeddings: a 16-byte header, then float32 or float16 rows (no pickle)."""

from __future__ import annotations

import struct

import numpy as np

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

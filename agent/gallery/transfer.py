"""Gallery export files in and out: one portable SQLite file, never pickle."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from agent.gallery.gallery import Gallery
from agent.gallery.store import (
    FORMAT,
    GalleryError,
    GalleryModel,
    GallerySettings,
    NewVector,
    check_identity,
)


def read_export_meta(path: Path) -> dict[str, str]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise GalleryError(f"{path} is not a gallery export: {exc}") from None
    if str(meta.get("format")) != str(FORMAT):
        raise GalleryError(f"{path} is not a gallery export of format {FORMAT}")
    return meta


def _described(meta: dict[str, str], path: Path) -> tuple[GalleryModel, GallerySettings]:
    """The export's model and settings, refused when missing or out of range."""
    try:
        model, settings = GalleryModel.from_meta(meta), GallerySettings.from_meta(meta)
    except (KeyError, ValueError) as exc:
        raise GalleryError(f"{path}: export metadata is missing or malformed ({exc})") from None
    if not 1 <= model.dim <= 65536:
        raise GalleryError(f"{path}: export metadata has dim {model.dim}")
    usable = (
        settings.dtype in ("f32", "f16", "i8")
        and 4 <= settings.connectivity <= 128
        and 1 <= settings.expansion_add <= 4096
        and 1 <= settings.expansion_search <= 4096
        and 0 <= settings.whiten_dim <= 65536
        and 0.0 <= settings.identity_weight <= 1.0
    )
    if not usable:
        raise GalleryError(f"{path}: export metadata has unusable index settings")
    return model, settings


def import_gallery(source: Path, target: Path) -> tuple[Gallery, int, int]:
    """Add an exported gallery's vectors to `target` (created when absent).

    Returns (gallery, added, skipped): vectors already present (same identity and content) are
    skipped. Refused when the models differ.
    """
    model, settings = _described(read_export_meta(source), source)
    rows = _read_vectors(source, settings, model.dim)  # all checked before anything is written
    gallery = Gallery.open_or_create(target, model, settings)
    try:
        present = gallery.store.identity_content()
        new, skipped = [], 0
        for item in rows:
            if (item.identity, item.content_hash) in present:
                skipped += 1
                continue
            present.add((item.identity, item.content_hash))
            new.append(item)
        gallery.apply(add=new, model=model)
        gallery.flush()
    except BaseException:
        gallery.close()
        raise
    return gallery, len(new), skipped


def _read_vectors(source: Path, settings: GallerySettings, dim: int) -> list[NewVector]:
    """Every vector of an export file, refused as a whole if any is not a usable embedding."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            rows = src.execute(
                "SELECT identity, source, content_hash, vector FROM vectors ORDER BY key"
            ).fetchall()
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise GalleryError(f"{source} is not a gallery export: {exc}") from None
    out = []
    for identity, src_path, chash, blob in rows:
        problem = check_identity(str(identity))
        if problem:
            raise GalleryError(f"{source}: {problem}")
        try:
            vec = np.frombuffer(blob, settings.vector_dtype).astype(np.float32)
        except (TypeError, ValueError):
            raise GalleryError(f"{source}: vector of {src_path} is not a vector") from None
        if vec.shape != (dim,) or not np.all(np.isfinite(vec)) or np.linalg.norm(vec) < 1e-6:
            raise GalleryError(
                f"{source}: vector of {src_path} is not a finite, non-zero {dim}-d embedding; "
                "nothing was imported"
            )
        out.append(NewVector(str(identity), str(src_path), str(chash), vec))
    return out

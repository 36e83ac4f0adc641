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
    if int(meta.get("format", -1)) != FORMAT:
        raise GalleryError(f"{path} is not a gallery export of format {FORMAT}")
    return meta


def export_gallery(gallery: Gallery, target: Path) -> None:
    gallery.export(target)


def import_gallery(source: Path, target: Path) -> tuple[Gallery, int, int]:
    """Add an exported gallery's vectors to `target` (created when absent).

    Returns (gallery, added, skipped): vectors already present (same identity and content) are
    skipped. Refused when the models differ.
    """
    meta = read_export_meta(source)
    model = GalleryModel.from_meta(meta)
    settings = GallerySettings.from_meta(meta)
    gallery = Gallery.open_or_create(target, model, settings)
    try:
        present = gallery.store.identity_content()
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        new, skipped = [], 0
        try:
            for identity, src_path, chash, blob in src.execute(
                "SELECT identity, source, content_hash, vector FROM vectors ORDER BY key"
            ):
                if (identity, chash) in present:
                    skipped += 1
                    continue
                present.add((identity, chash))
                vec = np.frombuffer(blob, settings.vector_dtype).astype(np.float32)
                new.append(NewVector(identity, src_path, chash, vec))
        finally:
            src.close()
        gallery.apply(add=new, model=model)
        gallery.flush()
    except BaseException:
        gallery.close()
        raise
    return gallery, len(new), skipped

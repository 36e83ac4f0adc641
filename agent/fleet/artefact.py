"""A gallery artefact: the portable gallery export plus a manifest signed with Ed25519.

The signature covers the manifest, and the manifest names the export's sha256, so one check of
each proves the file is the one the publisher released. The announcement adds where to fetch it
(not signed: the same artefact may be mirrored anywhere).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import UntrustedArtefact
from agent.runtime.registry import sha256_file

ARTEFACT_FILE = "gallery.sqlite"
MANIFEST_FILE = "manifest.json"


class GalleryManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    group: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: int = Field(ge=1, description="Increases with every release of the group.")
    model: str = Field(description="Model label of the gallery (name:variant).")
    fingerprint: str = Field(description="Model fingerprint: embeddings are only comparable "
                             "between equal fingerprints.")  # fmt: skip
    dim: int = Field(ge=1)
    vectors: int = Field(ge=0)
    identities: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=1, description="Bytes of the export file.")
    created: str = Field(description="UTC time of the release, ISO 8601.")

    def signed_bytes(self) -> bytes:
        """What the signature covers: the manifest as canonical JSON."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":")).encode()  # fmt: skip


class Announcement(BaseModel):
    """Retained on `<fleet prefix>/gallery/<group>`: the version to serve and where it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: GalleryManifest
    signature: str = Field(description="Base64 Ed25519 signature of the manifest.")
    url: str = Field(description="Where the export file is: http(s):// or file://.")

    @classmethod
    def parse(cls, payload: bytes) -> Announcement:
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            problem = f"{where}: {first['msg']}"
            raise UntrustedArtefact(f"not a gallery announcement: {problem}") from None


def describe(export: Path, group: str, version: int) -> GalleryManifest:
    """The manifest of an export file just written by `Gallery.export`."""
    from agent.gallery.store import GalleryModel
    from agent.gallery.transfer import read_export_meta

    meta = read_export_meta(export)
    model = GalleryModel.from_meta(meta)
    db = sqlite3.connect(f"file:{export}?mode=ro", uri=True)
    try:
        vectors, identities = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT identity) FROM vectors"
        ).fetchone()
    finally:
        db.close()
    return GalleryManifest(
        group=group,
        version=version,
        model=model.label,
        fingerprint=model.fingerprint,
        dim=model.dim,
        vectors=vectors,
        identities=identities,
        sha256=sha256_file(export),
        size=export.stat().st_size,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def check_file(manifest: GalleryManifest, path: Path) -> None:
    """Raise FleetError unless `path` is exactly the file the manifest describes."""
    size = path.stat().st_size
    if size != manifest.size:
        raise UntrustedArtefact(
            f"artefact is {size} bytes, the signed manifest says {manifest.size}"
        )
    digest = sha256_file(path)
    if digest != manifest.sha256:
        raise UntrustedArtefact(
            f"artefact sha256 {digest[:12]}... differs from the signed manifest's "
            f"{manifest.sha256[:12]}...: tampered or damaged"
        )

"""`agent gallery publish`: export, sign, store and announce a gallery version."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import FleetError
from agent.fleet import channel, keys, remote
from agent.fleet.artefact import ARTEFACT_FILE, MANIFEST_FILE, Announcement, describe


@dataclass(frozen=True)
class Release:
    announcement: Announcement
    previous_version: int | None


def release(
    cfg: AgentConfig,
    gallery_path: Path,
    group: str,
    key_path: Path,
    to: str,
    base_url: str | None = None,
    version: int | None = None,
) -> Release:
    """Publish `gallery_path` as the next version of `group` (or `version`, which must be above
    the announced one): the export and its signed manifest go to `to`, the announcement (with
    the artefact's URL under `base_url`, default `to`) is retained on the group's topic."""
    from agent.gallery.gallery import Gallery

    key = keys.load_private(key_path)  # before any work: a wrong key fails fast
    announced = channel.current(cfg, group)
    previous = Announcement.parse(announced).manifest.version if announced else None
    if version is None:
        version = (previous or 0) + 1
    elif previous is not None and version <= previous:
        raise FleetError(f"version {version} is not above the announced version {previous}; "
                         "boxes would ignore it")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="agent-release-") as tmp:
        export = Path(tmp) / ARTEFACT_FILE
        with Gallery.open(gallery_path) as gallery:
            if gallery.count == 0:
                raise FleetError(f"{gallery_path} is empty; enroll images before publishing")
            gallery.export(export)
        manifest = describe(export, group, version)
        signature = keys.sign(key, manifest.signed_bytes())
        folder = f"{group}/{version}"
        announcement = Announcement(
            manifest=manifest,
            signature=signature,
            url=remote.url_of(base_url or to, f"{folder}/{ARTEFACT_FILE}"),
        )
        manifest_file = Path(tmp) / MANIFEST_FILE
        manifest_file.write_bytes(announcement.model_dump_json(indent=2).encode())
        remote.put(to, f"{folder}/{ARTEFACT_FILE}", export)
        remote.put(to, f"{folder}/{MANIFEST_FILE}", manifest_file)
    channel.announce(cfg, group, announcement.model_dump_json().encode())
    return Release(announcement, previous)

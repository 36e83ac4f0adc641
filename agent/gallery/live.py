"""The gallery as the running agent sees it: a read-only view that follows changes.

`agent enroll` (or a remote command) writes the gallery while the agent runs. The agent polls the
gallery's version and re-opens it once the writer has saved the index for that version, so a
reload never has to rebuild the index itself. SIGHUP or a `reload` command force it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.gallery.gallery import Gallery
from agent.gallery.models import embedder_for
from agent.runtime.embedder import CachedEmbedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedGallery:
    """A gallery opened, calibrated and indexed off the frame loop, ready to be swapped in;
    `embedder` is set when its model differs from the one being served."""

    path: Path
    gallery: Gallery
    embedder: CachedEmbedder | None

    def discard(self) -> None:
        self.gallery.close()
        if self.embedder is not None:
            self.embedder.close()


class LiveGallery:
    def __init__(self, cfg: AgentConfig, path: Path):
        self.cfg = cfg
        self.path = path
        self.reloads = 0  # also names the loaded gallery: it changes with every swap
        self.gallery = Gallery.open(path)
        self.embedder = embedder_for(cfg, self.gallery)
        self.loaded_version = self.gallery.version
        self._next_poll = time.monotonic() + cfg.pipeline.gallery_poll_s

    def poll(self, now: float) -> bool:
        """Reload if the gallery changed and its writer has saved the new index."""
        if now < self._next_poll:
            return False
        self._next_poll = now + self.cfg.pipeline.gallery_poll_s
        try:
            version = self.gallery.version
            saved = self.gallery.index_version
        except Exception as exc:  # the file went away or is being replaced (import)
            log.warning("gallery poll failed: %s", exc)
            return False
        if version == self.loaded_version or saved != version:
            return False  # unchanged, or a writer is still at it
        return self.reload()

    def prepare(self, path: Path) -> PreparedGallery:
        """Open the gallery at `path` with everything a search needs loaded now (and its model,
        if it is not the served one), so that the swap itself is a pointer change. Raises when
        anything is wrong with it; the served gallery is untouched either way."""
        fresh = Gallery.open(path)
        try:
            fresh.calibration  # noqa: B018 (measured now if missing: fail here, not mid-run)
            fresh.index  # noqa: B018 (loaded now, not on the first frame after the swap)
            embedder = None
            if fresh.model.fingerprint != self.gallery.model.fingerprint:
                embedder = embedder_for(self.cfg, fresh)
                embedder.load()
        except BaseException:
            fresh.close()
            raise
        return PreparedGallery(path, fresh, embedder)

    def swap(self, prepared: PreparedGallery) -> None:
        """Serve `prepared` from the next frame on; the old gallery (and model) are closed."""
        old_gallery, old_embedder = self.gallery, self.embedder
        self.gallery, self.path = prepared.gallery, prepared.path
        if prepared.embedder is not None:
            self.embedder = prepared.embedder
            old_embedder.close()
        old_gallery.close()
        self.reloads += 1
        self.loaded_version = self.gallery.version
        log.info("gallery %s: version %d, %d vectors", self.path, self.loaded_version, self.size)

    def reload(self) -> bool:
        """Re-open the gallery (and the model, if the gallery's model changed)."""
        try:
            prepared = self.prepare(self.path)
        except Exception as exc:  # a damaged or foreign gallery must not stop the agent
            log.error("gallery reload failed, keeping the loaded one: %s", exc)
            return False
        self.swap(prepared)
        return True

    @property
    def size(self) -> int:
        return len(self.gallery.index)

    def close(self) -> None:
        self.gallery.close()
        self.embedder.close()

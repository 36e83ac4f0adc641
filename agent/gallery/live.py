"""The gallery as the running agent sees it: a read-only view that follows changes.

`agent enroll` (or a remote command) writes the gallery while the agent runs. The agent polls the
gallery's version and re-opens it once the writer has saved the index for that version, so a
reload never has to rebuild the index itself. SIGHUP or a `reload` command force it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.gallery.gallery import Gallery
from agent.gallery.models import embedder_for

log = logging.getLogger(__name__)


class LiveGallery:
    def __init__(self, cfg: AgentConfig, path: Path):
        self.cfg = cfg
        self.path = path
        self.reloads = 0
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

    def reload(self) -> bool:
        """Re-open the gallery (and the model, if the gallery's model changed)."""
        fresh = None
        try:
            fresh = Gallery.open(self.path)
            fresh.calibration  # noqa: B018 (measured now if missing: fail here, not mid-run)
        except Exception as exc:  # a damaged or foreign gallery must not stop the agent
            if fresh is not None:
                fresh.close()
            log.error("gallery reload failed, keeping the loaded one: %s", exc)
            return False
        if fresh.model.fingerprint != self.gallery.model.fingerprint:
            try:
                embedder = embedder_for(self.cfg, fresh)
            except Exception as exc:
                fresh.close()
                log.error("gallery reload: cannot load its model, keeping the old one: %s", exc)
                return False
            self.embedder.close()
            self.embedder = embedder
        old, self.gallery = self.gallery, fresh
        old.close()
        self.reloads += 1
        self.loaded_version = self.gallery.version
        log.info("gallery reloaded: version %d, %d vectors", self.loaded_version, self.size)
        return True

    @property
    def size(self) -> int:
        return len(self.gallery.index)

    def close(self) -> None:
        self.gallery.close()
        self.embedder.close()

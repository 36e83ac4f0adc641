"""Following a group's gallery on a box: an announcement in; a verified, imported and loaded
gallery version out, which the frame loop swaps in between two frames.

Versions live in `<state_dir>/fleet/<group>/v<N>`; `current` (a symlink, replaced atomically)
names the one served, and older ones are kept (`keep_versions`) to fall back to. Nothing an
announcement holds can stop the agent: a bad one is refused, counted in the status, and the
served gallery stays.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.errors import ConfigError, FleetError, UntrustedArtefact
from agent.events import FleetStatus
from agent.fleet import channel, keys, remote
from agent.fleet.artefact import Announcement, check_file
from agent.gallery.gallery import Gallery
from agent.gallery.live import PreparedGallery

log = logging.getLogger(__name__)
CURRENT = "current"


class GalleryRollout:
    def __init__(self, cfg: AgentConfig):
        fleet = cfg.fleet
        if fleet.group is None:
            raise ConfigError("fleet.group is not set")
        if not fleet.public_key:
            raise ConfigError("fleet.group is set but fleet.public_key is not: a box only serves "
                              "galleries signed by the key it holds")  # fmt: skip
        if not cfg.mqtt.host:
            raise ConfigError("fleet.group needs a broker (mqtt.host): versions are announced "
                              "over MQTT")  # fmt: skip
        self.cfg = cfg
        self.group = fleet.group
        self.root = cfg.state_dir / "fleet" / fleet.group
        self.topic = channel.topic(cfg, fleet.group)
        self.public_key = keys.load_public(fleet.public_key)
        self.status = FleetStatus(group=self.group, state="waiting")
        self._announced: bytes | None = None
        self._wake = threading.Condition()
        self._ready: queue.SimpleQueue[tuple[int, PreparedGallery]] = queue.SimpleQueue()
        self._prepare: Callable[[Path], PreparedGallery] | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)

    # ---- start-up --------------------------------------------------------------------------

    def startup_path(self) -> Path:
        """The gallery to start with: the served fleet version (or an older one that opens),
        else the group's announced version fetched now, else the local gallery."""
        for version, path in self.installed():
            try:
                Gallery.open(path).close()
            except Exception as exc:
                log.error("fleet gallery v%d at %s cannot be opened (%s); trying the one "
                          "before", version, path, exc)  # fmt: skip
                continue
            self._serving(version, path)
            return path
        wait = self.cfg.fleet.startup_wait_s
        if wait > 0:
            try:
                payload = channel.current(self.cfg, self.group, timeout_s=wait)
            except FleetError as exc:
                payload = None
                self._refuse(None, f"cannot read the announcement: {exc}", "failed")
            if payload is not None:
                try:
                    version, path = self.install(payload)
                except Exception as exc:
                    self._refuse(self._version_of(payload), str(exc), _state_for(exc))
                else:
                    self._serving(version, path)
                    return path
        if Gallery.exists(self.cfg.gallery_path):
            log.warning("no fleet gallery for group %s yet; serving the local gallery %s until "
                        "one is announced", self.group, self.cfg.gallery_path)  # fmt: skip
            return self.cfg.gallery_path
        reason = self.status.error or f"no version is announced on {self.topic}"
        raise FleetError(f"no gallery to serve: {reason}, and no local gallery at "
                         f"{self.cfg.gallery_path}")  # fmt: skip

    def installed(self) -> list[tuple[int, Path]]:
        """Installed versions, the current one first, then newest first."""
        found = []
        for path in self.root.glob("v*"):
            if path.name[1:].isdigit() and Gallery.exists(path):
                found.append((int(path.name[1:]), path))
        found.sort(reverse=True)
        link = self.root / CURRENT
        if link.is_symlink():
            current = (self.root / os.readlink(link)).resolve()
            found.sort(key=lambda item: item[1].resolve() != current)  # stable: current first
        return found

    # ---- running ---------------------------------------------------------------------------

    def start(self, prepare: Callable[[Path], PreparedGallery]) -> None:
        """Handle announcements in the background; `prepare` loads a version off the frame
        loop (LiveGallery.prepare)."""
        self._prepare = prepare
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()

    def announced(self, payload: bytes) -> None:
        """From the MQTT network thread: keep the newest announcement, wake the worker."""
        with self._wake:
            self._announced = payload
            self._wake.notify()

    def take_ready(self) -> tuple[int, PreparedGallery] | None:
        """A loaded version waiting to be swapped in, if any (called by the frame loop)."""
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return None

    def activated(self, version: int, path: Path) -> None:
        """The frame loop serves `version` now: point `current` at it, drop the oldest."""
        self._serving(version, path)
        self._prune()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._announced is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                payload, self._announced = self._announced, None
            try:
                self._handle(payload)
            except Exception as exc:  # nothing an announcement holds may stop the worker
                log.exception("gallery rollout failed")
                self._refuse(self._version_of(payload), f"internal error: {exc}", "failed")

    def _handle(self, payload: bytes) -> None:
        if not payload:
            return  # the retained announcement was cleared
        try:
            version = Announcement.parse(payload).manifest.version
        except FleetError as exc:
            self._refuse(None, str(exc), "refused")
            return
        served = self.status.version
        if served is not None and version <= served:
            if version < served:
                log.warning("group %s announces version %d, older than the served %d; ignored "
                            "(republish an old gallery as a new version to roll back)",
                            self.group, version, served)  # fmt: skip
            return
        self.status = self.status.model_copy(update={
            "state": "downloading", "announced": version, "changed_at": time.time()})  # fmt: skip
        log.info("group %s: gallery version %d announced; fetching it", self.group, version)
        try:
            version, path = self.install(payload)
            assert self._prepare is not None
            prepared = self._prepare(path)
        except Exception as exc:
            self._refuse(version, str(exc), _state_for(exc))
            return
        self._ready.put((version, prepared))

    # ---- installing ------------------------------------------------------------------------

    def install(self, payload: bytes) -> tuple[int, Path]:
        """Check, fetch, check again and import an announced version; return (version, path).
        Trust first: the group and the signature before any byte is downloaded."""
        from agent.gallery.transfer import import_gallery

        announcement = Announcement.parse(payload)
        manifest = announcement.manifest
        if manifest.group != self.group:
            raise UntrustedArtefact(
                f"announcement is for group {manifest.group!r}, not {self.group!r}"
            )
        keys.verify(self.public_key, manifest.signed_bytes(), announcement.signature)
        target = self.root / f"v{manifest.version}"
        if Gallery.exists(target):
            return manifest.version, target
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".incoming-") as tmp:
            artefact = Path(tmp) / "gallery.sqlite"
            limit = int(self.cfg.fleet.max_artefact_mb * (1 << 20))
            remote.fetch(announcement.url, artefact, limit, self.cfg.fleet.download_timeout_s)
            check_file(manifest, artefact)
            staged = Path(tmp) / "gallery"
            gallery, _added, _skipped = import_gallery(artefact, staged)
            try:
                if gallery.model.fingerprint != manifest.fingerprint:
                    raise UntrustedArtefact("the artefact's model differs from its signed manifest")
            finally:
                gallery.close()
            os.replace(staged, target)
        log.info("group %s: gallery version %d verified and imported (%d vectors)", self.group,
                 manifest.version, manifest.vectors)  # fmt: skip
        return manifest.version, target

    # ---- state -----------------------------------------------------------------------------

    def _serving(self, version: int, path: Path) -> None:
        link = self.root / CURRENT
        tmp = self.root / f".{CURRENT}.{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(path.name, tmp)
        os.replace(tmp, link)
        newer_failed = (self.status.announced or 0) > version  # its error still stands
        self.status = FleetStatus(
            group=self.group,
            state=self.status.state if newer_failed else "serving",
            version=version,
            announced=max(version, self.status.announced or 0),
            error=self.status.error if newer_failed else None,
        )
        log.info("group %s: serving gallery version %d", self.group, version)

    def _refuse(self, version: int | None, error: str, state: str) -> None:
        log.error("group %s: gallery version %s not served: %s", self.group,
                  version if version is not None else "?", error)  # fmt: skip
        self.status = self.status.model_copy(update={
            "state": state, "error": error, "changed_at": time.time(),
            "announced": version if version is not None else self.status.announced})  # fmt: skip

    def _prune(self) -> None:
        installed = self.installed()  # current first
        for _version, path in installed[self.cfg.fleet.keep_versions :]:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _version_of(payload: bytes) -> int | None:
        try:
            return Announcement.parse(payload).manifest.version
        except FleetError:
            return None


def _state_for(exc: Exception) -> str:
    return "refused" if isinstance(exc, UntrustedArtefact) else "failed"

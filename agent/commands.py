"""Remote commands (`<prefix>/cmd/<name>`, off by default): reload, remove, enroll, status.

Payloads are JSON objects; `request_id` is echoed in the result on `<prefix>/cmd/<name>/result`.
  reload  {}                                       re-open the gallery now
  remove  {"identity": "alice"}                    delete an identity from the gallery
  enroll  {"identity": "alice", "image_jpeg": B64} add one image (kept under state_dir/enrolled)
The agent runs them on its main thread between batches; a malformed payload is answered with
ok=false and counted, never fatal.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging

import cv2
import numpy as np

from agent.atomic import atomic_write_bytes
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.events import CommandResult
from agent.gallery.enroll import ImageFile, enroll
from agent.gallery.gallery import Gallery
from agent.gallery.live import LiveGallery
from agent.gallery.store import check_identity
from agent.metrics import Metrics, NullMetrics
from agent.runtime.cache import content_hash

log = logging.getLogger(__name__)
NAMES = ("reload", "remove", "enroll")


class CommandError(AgentError):
    """A command payload that cannot be carried out; answered with ok=false, never fatal."""


class Commands:
    def __init__(self, cfg: AgentConfig, live: LiveGallery, metrics: Metrics | None = None):
        self.cfg = cfg
        self.live = live
        self.metrics = metrics or NullMetrics()

    def run(self, name: str, payload: bytes) -> CommandResult:
        request_id = None
        try:
            args = _parse(payload)
            request_id = args.pop("request_id", None)
            if name not in NAMES:
                raise CommandError(f"unknown command {name!r} (known: {', '.join(NAMES)})")
            message = getattr(self, f"_{name}")(args)
            ok = True
        except AgentError as exc:
            self.metrics.error("commands")
            ok, message = False, str(exc)
            log.warning("command %s refused: %s", name, message)
        except Exception as exc:  # disk full, a name the filesystem refuses: never fatal
            self.metrics.error("commands")
            ok, message = False, f"{type(exc).__name__}: {exc}"
            log.error("command %s failed: %s", name, message)
        rid = str(request_id) if request_id is not None else None
        return CommandResult(command=name, ok=ok, message=message, request_id=rid)

    def _reload(self, args: dict) -> str:
        self.live.reload()
        return f"gallery version {self.live.loaded_version}, {self.live.size} vectors"

    def _identity(self, args: dict) -> str:
        identity = args.get("identity")
        if not isinstance(identity, str):
            raise CommandError("payload needs a string field 'identity'")
        problem = check_identity(identity)
        if problem:
            raise CommandError(problem)
        return identity

    def _remove(self, args: dict) -> str:
        identity = self._identity(args)
        with Gallery.open(self.live.path, writable=True) as gallery:
            removed = gallery.remove_identity(identity)
            gallery.flush()
        self.live.reload()
        return f"removed {removed} image(s) of {identity!r}"

    def _enroll(self, args: dict) -> str:
        identity = self._identity(args)
        encoded = args.get("image_jpeg")
        if not isinstance(encoded, str):
            raise CommandError("payload needs a base64 string field 'image_jpeg'")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError("image_jpeg is not valid base64") from None
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
            raise CommandError("image_jpeg is not a decodable image")
        folder = self.cfg.state_dir / "enrolled" / identity
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{content_hash(data)[:16]}.jpg"
        atomic_write_bytes(path, data)
        with Gallery.open(self.live.path, writable=True) as gallery:
            report = enroll(gallery, self.live.embedder, [ImageFile(identity, path)])
        if report.failed:
            raise CommandError(report.problems[0].message)
        self.live.reload()
        changed = "added" if report.added else "already enrolled"
        return f"{path.name} as {identity!r}: {changed}"


def _parse(payload: bytes) -> dict:
    if not payload.strip():
        return {}
    try:
        args = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"payload is not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise CommandError("payload must be a JSON object")
    return args

"""Frame sources: cameras, streams, video files, GStreamer pipelines and image folders.

Each source is a thread that reads frames, samples them to its fps cap, asks the change gate and
the detector (`prepare`) what to embed, and puts the result in its own bounded queue. Live
sources drop the oldest queued frame when the pipeline falls behind (counted); files read as fast
as possible (`realtime = false`) and folders wait instead, so they lose nothing. A stream that
fails or stalls is reopened with exponential back-off and jitter.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from agent.config import SourceConfig
from agent.errors import ConfigError, InputError
from agent.events import SourceHealth, SourceStatus
from agent.metrics import SourceCounters
from agent.runtime.images import IMAGE_SUFFIXES
from agent.runtime.preprocess import load_pixels, to_bgr8
from agent.stream.frame import Frame

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264"}


Prepare = Callable[[Frame], Frame]  # adds crops / reused (change gate + detector)


def resolve_kind(cfg: SourceConfig) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    uri = cfg.uri.strip()
    if uri.isdigit():
        return "device"
    if "!" in uri:
        return "gstreamer"
    if _URL.match(uri):
        return "stream"
    if Path(uri).is_dir():
        return "folder"
    return "file"


class FrameQueue:
    """Bounded; `put` drops the oldest item when full unless `wait` is set."""

    def __init__(self, size: int, ready: threading.Event):
        self._items: deque[Frame] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._ready = ready

    def put(self, frame: Frame, wait: bool, stop: threading.Event) -> int:
        """Returns the number of frames dropped to make room."""
        dropped = 0
        with self._cond:
            while len(self._items) >= self._size:
                if wait and not stop.is_set():
                    self._cond.wait(0.1)
                    continue
                self._items.popleft()
                dropped += 1
            self._items.append(frame)
        self._ready.set()
        return dropped

    def get(self) -> Frame | None:
        with self._cond:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify()
            return frame

    def __len__(self) -> int:
        return len(self._items)


class Source:
    """A thread feeding one FrameQueue; subclasses implement `_produce`."""

    def __init__(self, cfg: SourceConfig, prepare: Prepare, ready: threading.Event):
        self.cfg = cfg
        self.id = cfg.id
        self.kind = resolve_kind(cfg)
        self.prepare = prepare
        self.queue = FrameQueue(cfg.queue_size, ready)
        self.counters = SourceCounters()
        self.health: SourceHealth = "starting"
        self.error: str | None = None
        self.last_frame_at = time.monotonic()
        self._stop = threading.Event()
        self._index = 0
        self._last_emit = -1e18
        self._thread = threading.Thread(target=self._main, name=f"source-{cfg.id}", daemon=True)

    @property
    def lossless(self) -> bool:
        return False

    @property
    def done(self) -> bool:
        """Ended or failed, and nothing left in its queue."""
        return self.health in ("ended", "failed") and len(self.queue) == 0

    def status(self) -> SourceStatus:
        return SourceStatus(
            health=self.health, uri=self.cfg.shown_uri, reconnects=self.counters.reconnects,
            error=self.error,
        )  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def check_stall(self, now: float) -> None:
        if self.health == "ok" and now - self.last_frame_at > self.cfg.stall_timeout_s:
            log.warning(
                "source %s: no frame for %.0f s (stalled)", self.id, now - self.last_frame_at
            )
            self.health = "stalled"

    def _main(self) -> None:
        try:
            self._produce()
        except Exception as exc:  # a bug in one source must not take the agent down
            log.exception("source %s crashed", self.id)
            self.error = f"{type(exc).__name__}: {exc}"
            self.health = "failed"

    def _produce(self) -> None:
        raise NotImplementedError

    def _sleep(self, seconds: float) -> bool:
        """Interruptible sleep; False when the source is stopping."""
        return not self._stop.wait(seconds)

    def _sampled(self, clock: float) -> bool:
        """fps cap: keep a frame only if 1/fps has passed on `clock` since the last kept one."""
        if self.cfg.fps <= 0:
            return True
        if clock - self._last_emit < 1.0 / self.cfg.fps - 1e-6:
            return False
        self._last_emit = clock
        return True

    def _emit(self, pixels: np.ndarray, media_time: float, decode_ms: float) -> None:
        now = time.monotonic()
        self.last_frame_at = now
        self.health = "ok"
        frame = Frame(self.id, self._index, pixels, media_time, now, decode_ms)
        self._index += 1
        frame = self.prepare(frame)
        self.counters.frames_dropped += self.queue.put(frame, self.lossless, self._stop)

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)


_FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ffmpeg_options_lock = threading.Lock()


def _open_ffmpeg(uri: str, params: list[int], transport: str) -> cv2.VideoCapture:
    """OpenCV's FFmpeg backend takes its demuxer options from an environment variable read when
    a capture opens; each source's RTSP transport is set there under a lock."""
    import os

    if transport == "auto" or not uri.lower().startswith("rtsp"):
        return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
    with _ffmpeg_options_lock:
        before = os.environ.get(_FFMPEG_OPTIONS)
        os.environ[_FFMPEG_OPTIONS] = f"rtsp_transport;{transport}"
        try:
            return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        finally:
            if before is None:
                os.environ.pop(_FFMPEG_OPTIONS, None)
            else:
                os.environ[_FFMPEG_OPTIONS] = before


class VideoSource(Source):
    """cv2.VideoCapture on a device index, a URL, a file or a GStreamer pipeline."""

    @property
    def lossless(self) -> bool:
        return self.kind == "file" and not self.cfg.realtime

    def open_capture(self) -> cv2.VideoCapture:
        uri, timeout = self.cfg.uri, int(self.cfg.stall_timeout_s * 1000)
        if self.kind == "device":
            cap = cv2.VideoCapture(int(uri))
        elif self.kind == "gstreamer":
            cap = cv2.VideoCapture(uri, cv2.CAP_GSTREAMER)
        elif self.kind == "stream":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                timeout,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                timeout,
            ]
            cap = _open_ffmpeg(uri, params, self.cfg.rtsp_transport)
        else:
            if not Path(uri).is_file():
                raise OSError(f"no such file: {uri}")
            cap = cv2.VideoCapture(uri)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"cannot open {self.kind} source {self.cfg.shown_uri}")
        return cap

    def _produce(self) -> None:
        attempt = 0
        lost = False  # the last read ended in a failure, not at the end of a file
        offset = 0.0  # media time carried across loops of a file
        while not self._stop.is_set():
            try:
                cap = self.open_capture()
            except OSError as exc:
                attempt += 1
                self.error = str(exc)
                if self.cfg.max_retries and attempt >= self.cfg.max_retries:
                    log.error("source %s: giving up after %d attempts: %s", self.id, attempt, exc)
                    self.health = "failed"
                    return
                self.health = "reconnecting"
                delay = self._backoff(attempt)
                log.warning("source %s: %s; retrying in %.1f s", self.id, exc, delay)
                if not self._sleep(delay):
                    return
                continue
            if (attempt and self.counters.frames_in) or lost:
                self.counters.reconnects += 1
                log.info("source %s: reconnected", self.id)
            attempt, lost = 0, False
            self.error = None
            ended, offset = self._read_all(cap, offset)
            cap.release()
            if ended and not self.cfg.loop:
                self.health = "ended"
                return
            if not ended:
                self.health, lost = "reconnecting", True

    def _read_all(self, cap: cv2.VideoCapture, offset: float) -> tuple[bool, float]:
        """Read until failure; (True if a file reached its end, media offset for a loop)."""
        is_file = self.kind == "file"
        started = time.monotonic()
        media = offset
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok = cap.grab()
            grab_s = time.perf_counter() - t0
            if not ok:
                if is_file:
                    return True, media + 1e-3
                self.error = "read failed or timed out"
                log.warning("source %s: read failed; reconnecting", self.id)
                return False, offset
            if not is_file and grab_s >= self.cfg.stall_timeout_s and media > offset:
                # A live frame that took the whole stall timeout is FFmpeg giving up on the
                # stream (it hands back a stale frame), not the camera sending: a stall.
                self.health, self.error = "stalled", f"no frame for {grab_s:.1f} s"
                log.warning("source %s: stalled (%.1f s for one frame); reconnecting", self.id,
                            grab_s)  # fmt: skip
                return False, offset
            self.counters.frames_in += 1
            now = time.monotonic()
            media = offset + cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if is_file else now - started
            if not self._sampled(media if is_file else now):
                continue
            if is_file and self.cfg.realtime:
                ahead = (media - offset) - (now - started)
                if ahead > 0 and not self._sleep(ahead):
                    break
            t1 = time.perf_counter()
            ok, pixels = cap.retrieve()
            if not ok or pixels is None:
                self.counters.frames_corrupt += 1
                continue
            self._emit(pixels, media, (grab_s + time.perf_counter() - t1) * 1000)
        return True, media


class FolderSource(Source):
    """Images in a folder, in name order; with `watch`, new files as they appear."""

    POLL_S = 0.5

    @property
    def lossless(self) -> bool:
        return True

    def _produce(self) -> None:
        folder = Path(self.cfg.uri)
        seen: set[Path] = set()
        started = time.monotonic()
        while not self._stop.is_set():
            if not folder.is_dir():
                self.health, self.error = "reconnecting", f"no such folder: {folder}"
                if not self._sleep(1.0):
                    return
                continue
            settle = time.time() - 0.5  # skip files still being written
            listed = [p for p in folder.iterdir()
                      if p.suffix.lower() in IMAGE_SUFFIXES and p not in seen]  # fmt: skip
            for link in (p for p in listed if p.is_symlink() and not p.exists()):
                seen.add(link)  # dangling or looping: counted once, not retried
                self.counters.frames_in += 1
                self.counters.frames_corrupt += 1
                log.warning("source %s: skipping %s: a link to nothing", self.id, link.name)
            new = sorted(
                p for p in listed
                if p.is_file() and (not self.cfg.watch or p.stat().st_mtime < settle)
            )  # fmt: skip
            for path in new:
                if self._stop.is_set():
                    return
                seen.add(path)
                self._read_one(path, time.monotonic() - started)
            if not self.cfg.watch:
                self.health = "ended"
                return
            if self.health == "starting":
                self.health = "ok"
            self.last_frame_at = time.monotonic()  # an idle folder is not a stalled one
            if not self._sleep(self.POLL_S):
                return

    def _read_one(self, path: Path, media_time: float) -> None:
        t0 = time.perf_counter()
        self.counters.frames_in += 1
        try:  # the reader `agent embed` and `agent enroll` use: 16-bit, float, grey, ...
            pixels = to_bgr8(*load_pixels(path))
        except InputError as exc:  # unreadable, corrupt, or over the pixel limit
            self.counters.frames_corrupt += 1
            self.error = str(exc)
            log.warning("source %s: skipping %s: not a readable image", self.id, path.name)
            log.debug("source %s: %s", self.id, exc)
            return
        self._emit(pixels, media_time, (time.perf_counter() - t0) * 1000)


def check_file_source(cfg: SourceConfig) -> None:
    """A video file that cannot be read now will not become readable by retrying: say so at
    start (ConfigError, exit 2) instead of reconnecting forever."""
    if resolve_kind(cfg) != "file":
        return
    path = Path(cfg.uri)
    if not path.is_file():
        raise ConfigError(f"source {cfg.id}: no such video file: {cfg.shown_uri}")
    cap = cv2.VideoCapture(str(path))
    try:
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not ok:
        raise ConfigError(f"source {cfg.id}: {cfg.shown_uri} is not a readable video file")


def make_source(cfg: SourceConfig, prepare: Prepare, ready: threading.Event) -> Source:
    if resolve_kind(cfg) == "folder":
        return FolderSource(cfg, prepare, ready)
    return VideoSource(cfg, prepare, ready)

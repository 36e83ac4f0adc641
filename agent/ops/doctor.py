"""`agent doctor`: check what `agent run` needs, and say what to fix.

Config, state directory, GPU and TensorRT, model file and execution providers, gallery/model
agreement, the detector the mode will use, OpenCV's video backends, each source (opens and
yields a frame), the broker (MQTT connect), the outbox backlog.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.config import AgentConfig, SourceConfig, redact

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


def _state_dir(cfg: AgentConfig) -> Check:
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cfg.state_dir):
            pass
        return Check("state dir", "ok", str(cfg.state_dir))
    except OSError as exc:
        return Check(
            "state dir",
            "fail",
            f"{cfg.state_dir}: {exc.strerror}",
            "set state_dir to a writable directory (systemd: StateDirectory=agent)",
        )


def _fleet(cfg: AgentConfig) -> tuple[Check, Path | None]:
    """The rollout's key, broker and extra, and the fleet gallery version the agent would serve."""
    from agent.errors import AgentError

    try:
        from agent.fleet.rollout import GalleryRollout

        rollout = GalleryRollout(cfg)
    except AgentError as exc:
        fix = ("`agent fleet keygen` prints the public key the publisher signs with; set [fleet] "
               "public_key and [mqtt] host")  # fmt: skip
        return Check("fleet", "fail", str(exc), fix), None
    installed = rollout.installed()
    if not installed:
        detail = (f"group {rollout.group}: no version installed yet; the agent takes the one "
                  f"announced on {rollout.topic} when it starts")  # fmt: skip
        fix = "agent gallery publish GROUP --key KEY --to DEST"
        return Check("fleet", "warn", detail, fix), None
    version, path = installed[0]
    return Check("fleet", "ok", f"group {rollout.group}: serving version {version} ({path}); "
                 f"{len(installed)} version(s) kept"), path  # fmt: skip


def _model_and_gallery(cfg: AgentConfig, path: Path) -> list[Check]:
    import onnxruntime as ort

    from agent.gallery.gallery import Gallery
    from agent.gallery.models import gallery_model
    from agent.runtime.embedder import CachedEmbedder

    out = [Check("providers", "ok", "available: " + ", ".join(ort.get_available_providers()))]
    if not Gallery.exists(path):
        out.append(
            Check(
                "gallery",
                "fail",
                f"no gallery at {path}",
                "enroll one: agent enroll DIR (or set [gallery] path)",
            )
        )
        return out
    try:
        with Gallery.open(path) as gallery:
            model = gallery.model
            detail = (
                f"{path}: {gallery.count} vectors, {len(gallery.identities())} identities, "
                f"version {gallery.version}, model {model.label}"
            )
            damaged = gallery.store.integrity_problem()
            problem = gallery.repaired or gallery.index_checksum_problem(force=True)
            level: Level = "fail" if damaged else "warn" if problem else "ok"
            fix = "restore a backup or export" if damaged else "agent gallery repair"
            note = damaged or problem
            out.append(
                Check(
                    "gallery", level, detail + (f" ({note})" if note else ""), fix if note else ""
                )
            )
            with CachedEmbedder.from_config(cfg, model.name, model.variant) as embedder:
                gallery.check_model(gallery_model(embedder.model))
                extractor = embedder.load()
                wanted = cfg.models.providers[0]
                level = "ok" if extractor.provider == wanted else "warn"
                out.append(
                    Check(
                        "model",
                        level,
                        f"{embedder.model.path.name} runs on "
                        f"{extractor.provider} (preferred: {wanted})",
                        ""
                        if level == "ok"
                        else "install onnxruntime-gpu / TensorRT for "
                        "GPU providers, or set models.providers",
                    )
                )
    except Exception as exc:
        out.append(Check("model", "fail", str(exc), "agent models list; agent gallery reindex"))
    return out


def _detector(cfg: AgentConfig) -> Check:
    """Which detector detect.mode will use, and why."""
    from agent.errors import AgentError
    from agent.stream.detect import choose_detector

    try:
        choice, _ = choose_detector(cfg)
    except AgentError as exc:
        return Check("detector", "fail", f"detect.mode = {cfg.detect.mode}: {exc}",
                     "agent models list; set detect.model or copy the detector's file")  # fmt: skip
    detail = f"detect.mode = {choice.mode}: {choice.detector} ({choice.reason})"
    if choice.fallback:
        return Check("detector", "warn", detail, "copy the model file into a models directory "
                     "(agent models list shows where it is looked for)")  # fmt: skip
    return Check("detector", "ok", detail)


def _video_backends(cfg: AgentConfig) -> Check:
    import re

    import cv2

    from agent.stream.sources import resolve_kind

    info = cv2.getBuildInformation()
    found = re.search(r"GStreamer:\s*(\S+)", info)
    gstreamer = bool(found) and found.group(1).upper().startswith("YES")
    detail = f"OpenCV {cv2.__version__} from {Path(cv2.__file__).parent}, GStreamer: "
    detail += "yes" if gstreamer else "no"
    pipelines = [s.id for s in cfg.sources if resolve_kind(s) == "gstreamer"]
    if pipelines and not gstreamer:
        return Check("opencv", "fail", f"{detail}; sources {', '.join(pipelines)} need it",
                     "use an OpenCV built with GStreamer (Jetson: NVIDIA's OpenCV, as in "
                     "Dockerfile.jetson) instead of opencv-python-headless")  # fmt: skip
    return Check("opencv", "ok", detail)


def _gpu(cfg: AgentConfig) -> Check:
    from agent.runtime.session import GPU_PROVIDERS, gpu_identity, tensorrt_version

    trt = tensorrt_version()
    cache = cfg.trt_cache_path
    engines = sorted(cache.glob("*/*.engine")) if cache.is_dir() else []
    detail = f"GPU {gpu_identity()}, TensorRT {trt or 'not found'}"
    if engines:
        detail += f", {len(engines)} cached engine(s) in {cache}"
    wants_gpu = bool(GPU_PROVIDERS & set(cfg.models.providers))
    if wants_gpu and gpu_identity() == "nogpu":
        return Check("gpu", "warn", detail, "no NVIDIA GPU seen (nvidia-smi or Jetson "
                     "device tree); inference runs on the CPU")  # fmt: skip
    return Check("gpu", "ok", detail)


def _with_timeout(fn: Callable[[], str], seconds: float) -> str:
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        raise TimeoutError(f"no answer in {seconds:.0f} s")
    return result[0]


def _source(src: SourceConfig) -> Check:
    import cv2

    from agent.runtime.images import IMAGE_SUFFIXES
    from agent.stream.sources import VideoSource, resolve_kind

    kind = resolve_kind(src)
    name = f"source {src.id}"
    if kind == "folder":
        folder = Path(src.uri)
        images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        return Check(
            name,
            "ok" if images or src.watch else "warn",
            f"folder with {len(images)} image(s)",
            "" if images else "folder is empty",
        )

    def probe() -> str:
        probe_source = VideoSource(src, lambda f: None, threading.Event())
        cap = probe_source.open_capture()
        try:
            ok, frame = cap.read()
            if not ok:
                raise OSError("opened but gave no frame")
            fps = cap.get(cv2.CAP_PROP_FPS)
            return f"{kind}: {frame.shape[1]}x{frame.shape[0]} at {fps:.0f} fps"
        finally:
            cap.release()

    try:
        return Check(name, "ok", _with_timeout(probe, src.stall_timeout_s + 5))
    except Exception as exc:  # OSError, TimeoutError, cv2.error: a failed check, not a crash
        hint = {
            "device": "check the camera index and that the user is in group 'video'",
            "stream": "check the URL, credentials and network",
            "gstreamer": "test the pipeline with gst-launch-1.0; OpenCV needs GStreamer",
            "file": "check the path",
        }[kind]
        return Check(name, "fail", redact(f"{src.shown_uri}: {exc}"), hint)


def _broker(cfg: AgentConfig) -> Check:
    m = cfg.mqtt
    if not m.host:
        return Check("broker", "ok", "none configured: match events go to stdout as JSON lines")
    from agent.publish.mqtt import mqtt_client

    done = threading.Event()
    outcome: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome.append(str(reason_code) if reason_code.is_failure else "")
        done.set()

    where = f"{m.host}:{m.port} (MQTT {m.protocol}{', TLS' if m.tls else ''})"
    try:
        client = mqtt_client(cfg, f"agent-doctor-{os.getpid()}")
    except Exception as exc:  # unreadable password file, bad TLS files
        return Check(
            "broker", "fail", f"{where}: {exc}", "check the [mqtt] credentials and TLS files"
        )
    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=10)
        client.loop_start()
        done.wait(5)
    except Exception as exc:
        return Check("broker", "fail", f"{where}: {exc}", "is the broker running and reachable?")
    finally:
        client.loop_stop()
        client.disconnect()
    if not done.is_set():
        return Check("broker", "fail", f"{where}: no CONNACK in 5 s", "check host, port and TLS")
    if outcome[0]:
        return Check(
            "broker",
            "fail",
            f"{where}: refused ({outcome[0]})",
            "check username/password (mqtt.password_env / password_file) and ACLs",
        )
    return Check("broker", "ok", f"{where}: connected")


def _outbox(cfg: AgentConfig) -> Check:
    if not cfg.outbox_path.exists():
        return Check("outbox", "ok", "empty (not created yet)")
    from agent.publish.outbox import Outbox

    box = Outbox.from_config(cfg)
    try:
        backlog, dropped = len(box), box.dropped
    finally:
        box.close()
    level: Level = "warn" if backlog or dropped else "ok"
    return Check(
        "outbox",
        level,
        f"{backlog} event(s) waiting, {dropped} dropped so far",
        "they are sent when the agent runs with the broker reachable" if backlog else "",
    )


def run_checks(cfg: AgentConfig) -> list[Check]:
    fleet, fleet_gallery = _fleet(cfg) if cfg.fleet.group else (None, None)
    gallery = fleet_gallery or cfg.gallery_path  # a box of a fleet serves the fleet's gallery
    checks = [_state_dir(cfg), _gpu(cfg), *([fleet] if fleet else []),
              *_model_and_gallery(cfg, gallery), _detector(cfg), _video_backends(cfg)]  # fmt: skip
    if not cfg.sources:
        checks.append(
            Check("sources", "fail", "none configured", "add [[sources]] to agent.toml (id, uri)")
        )
    checks += [_source(s) for s in cfg.sources]
    checks += [_broker(cfg), _outbox(cfg)]
    return checks

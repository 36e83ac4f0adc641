"""Fuzzing what the outside world sends: mutated real images through embed, enroll and a folder
source; crafted gallery files through import; random payloads on every command topic of a
running agent. Seeded, bounded (about a minute each): every input is either handled or refused
with a clear message; nothing crashes, and the running agent keeps delivering."""

from __future__ import annotations

import base64
import json
import sqlite3
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from agent.gallery.gallery import Gallery
from agent.gallery.store import GalleryError, GallerySettings
from agent.gallery.transfer import import_gallery
from tests.agent_support import EXAMPLES, AgentProcess
from tests.mqtt_support import Broker, Subscriber
from tests.test_cli import run
from tests.test_mqtt import PREFIX, mqtt_config

WRONG_SHAPES = [[], 1, "x", None, {"identity": 5}, {"identity": ["a"]}, {"request_id": {}}]


def real_images() -> list[tuple[str, bytes]]:
    """Real photos of the example set as JPEG, PNG and 16-bit TIFF."""
    out = []
    for i, path in enumerate(sorted((EXAMPLES / "gallery").rglob("*.jpg"))[:4]):
        pixels = cv2.imread(str(path))
        out.append((f"{i}.jpg", path.read_bytes()))
        out.append((f"{i}.png", cv2.imencode(".png", pixels)[1].tobytes()))
        deep = (pixels.astype(np.uint16) * 257)[:, :, 0]
        out.append((f"{i}.tiff", cv2.imencode(".tiff", deep)[1].tobytes()))
    return out


def mutants(rng: np.random.Generator, count: int) -> list[tuple[str, bytes]]:
    """Bit flips, truncations, zeroed blocks and forged size fields of the real images."""
    base = real_images()
    out = []
    for n in range(count):
        name, data = base[n % len(base)]
        buf = bytearray(data)
        kind = n % 4
        if kind == 0:  # random bit flips
            for i in rng.integers(0, len(buf), 20):
                buf[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncated
            buf = buf[: int(rng.integers(1, len(buf)))]
        elif kind == 2:  # a zeroed block
            start = int(rng.integers(0, len(buf)))
            buf[start : start + 512] = bytes(min(512, len(buf) - start))
        else:  # forged header bytes (sizes live in the first bytes of PNG/TIFF, near SOF in JPEG)
            for i in rng.integers(0, min(len(buf), 64), 6):
                buf[i] = int(rng.integers(0, 256))
        out.append((f"m{n:03d}_{name}", bytes(buf)))
    return out


def test_mutated_images_through_embed_enroll_and_a_folder_source(tmp_path, gallery):
    rng = np.random.default_rng(12)
    cases = mutants(rng, 120)
    flat = tmp_path / "flat"
    (tmp_path / "ids" / "x").mkdir(parents=True)
    flat.mkdir()
    for name, data in cases:
        (flat / name).write_bytes(data)
        (tmp_path / "ids" / "x" / name).write_bytes(data)
    (flat / "good.jpg").write_bytes(real_images()[0][1])

    embedded = run("-q", "embed", str(flat), "--json")
    assert embedded.returncode == 0 and "Traceback" not in embedded.stderr, embedded.stderr[-800:]
    report = json.loads(embedded.stdout)
    assert report["count"] == 121 and report["ok"] + len(report["errors"]) == 121
    assert report["ok"] >= 1 and all(e["error"] for e in report["errors"])

    enrolled = run("-q", "enroll", str(tmp_path / "ids"), "-g", str(tmp_path / "g"), "--json")
    assert enrolled.returncode == 0 and "Traceback" not in enrolled.stderr, enrolled.stderr[-800:]
    counts = json.loads(enrolled.stdout)
    assert counts["added"] + counts["failed"] + counts["skipped_duplicates"] == 120

    config = {"device_id": "fuzz", "state_dir": str(tmp_path / "state"),
              "gallery": {"path": str(gallery)}, "metrics": {"interval_s": 0.5},
              "match": {"cooldown_s": 0.0, "threshold": 0.0, "unknown_threshold": 0.0,
                        "min_margin": 0.0},
              "detect": {"change_threshold": 0.0}}  # fmt: skip
    agent = AgentProcess(tmp_path / "run", config, "-s", f"folder={flat}")
    assert agent.wait(120) == 0, agent.log()
    m = agent.status()["metrics"]
    source = m["sources"]["folder"]
    assert source["frames_in"] == 121 and source["health"] == "ended"
    assert source["frames_processed"] + source["frames_corrupt"] == 121
    assert len(agent.events) == source["frames_processed"] >= 1


def test_crafted_gallery_files_through_import(tmp_path):
    """Random damage to a real export: import either succeeds or is one GalleryError, and a
    refused import leaves no gallery behind."""
    rng = np.random.default_rng(7)
    source = tmp_path / "src"
    dim = 8
    with Gallery.create(source, _model(dim), GallerySettings(dtype="f32", whiten_dim=0)) as g:
        from agent.gallery.store import NewVector

        vecs = rng.standard_normal((20, dim)).astype(np.float32)
        g.apply(add=[NewVector(f"id{i % 4}", f"/x/{i}.jpg", f"h{i}", v) for i, v in
                     enumerate(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))])  # fmt: skip
        g.flush()
        g.export(tmp_path / "export.db")
    clean = (tmp_path / "export.db").read_bytes()
    outcomes = {"imported": 0, "refused": 0}
    deadline = time.monotonic() + 45
    for n in range(150):
        if time.monotonic() > deadline:
            break
        crafted = tmp_path / f"c{n}.db"
        crafted.write_bytes(clean)
        _damage(crafted, rng, n % 3)
        target = tmp_path / f"t{n}"
        try:
            gallery, _, _ = import_gallery(crafted, target)
            gallery.close()
            outcomes["imported"] += 1
        except GalleryError:
            outcomes["refused"] += 1
            assert not Gallery.exists(target) or _opens(target)
    assert outcomes["refused"] >= 20 and sum(outcomes.values()) >= 60, outcomes


def _model(dim: int):
    from agent.gallery.store import GalleryModel

    return GalleryModel("m", "fp32", "f" * 16, "0" * 64, dim)


def _damage(path, rng: np.random.Generator, kind: int) -> None:
    if kind == 0:  # bytes of the file
        data = bytearray(path.read_bytes())
        for i in rng.integers(100, len(data), 8):
            data[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        return
    db = sqlite3.connect(path)
    try:
        if kind == 1:  # metadata values
            keys = [r[0] for r in db.execute("SELECT key FROM meta")]
            key = keys[int(rng.integers(0, len(keys)))]
            value = rng.choice(["", "-1", "x", "1e309", "99999999999", "f64", "nan"])
            db.execute("UPDATE meta SET value=? WHERE key=?", (str(value), key))
        else:  # vector blobs and identities
            blob = rng.choice([b"", b"\x00" * 3, np.full(8, np.inf, "<f4").tobytes(), b"text"])
            db.execute("UPDATE vectors SET vector=? WHERE key=?", (bytes(blob), 1))
            db.execute("UPDATE vectors SET identity=? WHERE key=2",
                       (str(rng.choice(["", "../x", "a\nb", "ok"])),))  # fmt: skip
        db.commit()
    except sqlite3.DatabaseError:
        pass
    finally:
        db.close()


def _opens(path) -> bool:
    with Gallery.open(path) as g:
        return g.count >= 0


@pytest.mark.shared
def test_random_payloads_on_every_command_topic_of_a_running_agent(gallery, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    try:
        config = mqtt_config(tmp_path, gallery, broker, "5", mqtt={"commands": True})
        config["match"] = {"cooldown_s": 0.0, "threshold": 0.0, "unknown_threshold": 0.0,
                           "min_margin": 0.0}  # fmt: skip
        events = Subscriber(broker, f"{PREFIX}/match", client_id="fuzz-events")
        agent = AgentProcess(tmp_path, config, "--realtime", "--loop",
                             "-s", f"cam={EXAMPLES / 'camera.mp4'}")  # fmt: skip
        first = agent.wait_status(lambda r: r["metrics"]["broker_connected"]
                                  and r["metrics"]["events_produced"] >= 5)  # fmt: skip
        baseline_rss = first["metrics"]["rss_mb"]
        rng = np.random.default_rng(3)
        jpeg = sorted((EXAMPLES / "gallery" / "Oatly-Oat-Milk").iterdir())[0].read_bytes()
        shapes = [
            lambda: rng.bytes(int(rng.integers(0, 4096))),
            lambda: rng.bytes(10 * 2**20),  # 10 MB of noise
            lambda: json.dumps(WRONG_SHAPES[int(rng.integers(0, len(WRONG_SHAPES)))]).encode(),
            lambda: json.dumps({"identity": "é" * int(rng.integers(1, 300)),
                                "image_jpeg": base64.b64encode(jpeg).decode()}).encode(),
            lambda: json.dumps({"identity": "x", "image_jpeg": base64.b64encode(
                rng.bytes(int(rng.integers(1, 50_000)))).decode()}).encode(),
            lambda: json.dumps({"identity": "x", "image_jpeg": "!!not base64"}).encode(),
        ]  # fmt: skip
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        sent = 0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and sent < 60:
            name = ["reload", "remove", "enroll", "nope", ""][sent % 5]
            client.publish(f"{PREFIX}/cmd/{name}", shapes[sent % len(shapes)](), qos=1)
            sent += 1
            time.sleep(0.3)
        client.loop_stop()
        client.disconnect()
        before = len(events.messages)
        later = agent.wait_status(lambda r: r["metrics"]["errors"].get("commands", 0) >= 10
                                  and r["metrics"]["events_produced"] > first["metrics"][
                                      "events_produced"] + 20, 90)  # fmt: skip
        assert events.wait_for(lambda s: len(s.messages) > before + 10, 30)
        assert later["metrics"]["sources"]["cam"]["health"] == "ok"
        assert later["metrics"]["rss_mb"] < 2 * baseline_rss, (baseline_rss, later["metrics"])
        assert agent.stop() == 0
    finally:
        broker.stop()

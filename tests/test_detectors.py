"""Real detectors from manifests (models/*.toml with the files in ../shared/models): each
decoder against a decode written here from the models' README, the counts the README reports on
vtest.avi, RetinaFace's reference face and landmarks on scikit-image's astronaut (public domain,
copied into tests/data), face alignment and quality gates, and the fallbacks."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from agent.config import AgentConfig
from agent.errors import ModelError
from agent.stream import faces
from agent.stream.detect import HogPeople, Rejected, choose_detector, make_detector
from agent.stream.detectors import Detection
from tests.conftest import shared_file
from tests.test_cli import run

ASTRONAUT = Path(__file__).parent / "data" / "astronaut.png"


@pytest.fixture(scope="module")
def street() -> dict[int, np.ndarray]:
    """vtest.avi frames 100, 400 and 700 (7, 3 and 8 people visible, the README counts)."""
    capture = cv2.VideoCapture(str(shared_file("data/frames/real_video/vtest.avi")))
    frames = {}
    for index in range(701):
        ok, frame = capture.read()
        assert ok
        if index in (100, 400, 700):
            frames[index] = frame
    capture.release()
    return frames


def agent_detector(mode: str, **detect):
    return make_detector(AgentConfig(detect={"mode": mode, **detect}))


def same_detections(ours: list[Detection], boxes: np.ndarray, scores: np.ndarray) -> None:
    """Boxes within 1 px and scores within 1e-3 of the reference, one for one."""
    assert len(ours) == len(boxes), (len(ours), len(boxes))
    order = np.argsort(-scores)
    for det, i in zip(sorted(ours, key=lambda d: -d.score), order, strict=True):
        assert abs(det.score - scores[i]) < 1e-3
        assert np.abs(np.array(det.box) - boxes[i]).max() <= 1.0, (det.box, boxes[i])


def test_detectors_are_listed_and_verified(shared_models):
    out = run("models", "list", "--json")
    rows = {r["model"]: r for r in json.loads(out.stdout) if r["modality"] == "detector"}
    assert set(rows) == {"ssdlite_mobilenetv2_person", "yolov3_tiny_coco", "retinaface_mnet025"}
    assert all(r["state"] == "verified" and r["dim"] is None for r in rows.values())
    info = json.loads(run("models", "info", "yolov3_tiny_coco", "--json").stdout)
    assert info["detector"]["decoder"] == "yolo_v5" and "objects" in info["used_by"]


def test_ssdlite_person_matches_the_readme_decode(shared_models, street):
    """README: stretch to 300x300, BGR->RGB, uint8 NHWC; detection_boxes y1,x1,y2,x2
    normalised; threshold yourself (0.5 is clean). Found 4, 3 and 3 boxes at 0.5."""
    session = ort.InferenceSession(str(shared_models / "ssdlite_mobilenetv2_person.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    detector = agent_detector("person")
    assert detector.name == "ssdlite_mobilenetv2_person:fp32"
    counts = []
    for frame in street.values():
        h, w = frame.shape[:2]
        rgb = cv2.resize(frame, (300, 300))[:, :, ::-1]
        boxes, scores = session.run(["detection_boxes", "detection_scores"],
                                    {"image": np.ascontiguousarray(rgb)[None]})  # fmt: skip
        keep = scores[0] >= 0.5
        y1, x1, y2, x2 = (boxes[0][keep] * [h, w, h, w]).T
        ours = detector.detections(frame)
        same_detections(ours, np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), scores[0][keep])
        counts.append(len(ours))
    assert counts == [4, 3, 3]


def test_yolov3_tiny_matches_the_readme_decode_and_filters_classes(shared_models, street):
    """README: RGB 0..1 NCHW, 416 (letterboxed, as the agent's onnx mode); rows cx,cy,w,h in
    input pixels, objectness, 80 class probabilities, score = obj x cls; NMS yours. The agent's
    mode found 4, 3 and 7 people at 0.4."""
    session = ort.InferenceSession(str(shared_models / "yolov3_tiny_coco.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    people = agent_detector("objects", classes=["person"])
    counts = []
    for frame in street.values():
        h, w = frame.shape[:2]
        scale = 416 / max(h, w)
        canvas = np.full((416, 416, 3), 114, np.uint8)
        resized = cv2.resize(frame, (round(w * scale), round(h * scale)))
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
        rows = session.run(None, {"images": tensor})[0][0]
        score = rows[:, 4] * rows[:, 5]  # person = class 0
        keep = (score >= 0.4) & (rows[:, 5:].argmax(axis=1) == 0)
        cx, cy, bw, bh = (rows[keep, :4] / scale).T
        boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
        chosen = np.ravel(cv2.dnn.NMSBoxes(boxes.tolist(), score[keep].tolist(), 0.4, 0.45))
        ours = people.detections(frame)
        same_detections(ours, boxes[chosen], score[keep][chosen])
        counts.append(len(ours))
    assert counts == [4, 3, 7]
    assert all(d.label == 0 for d in people.detections(street[700]))
    everything = agent_detector("objects").detections(street[700])
    assert len(everything) >= len(people.detections(street[700]))
    with pytest.raises(ModelError, match="no class 'unicorn'"):
        agent_detector("objects", classes=["unicorn"])


def test_retinaface_finds_the_astronaut_with_its_reference_landmarks(shared_models):
    """README check: one face, score 0.9995, box (178,57)-(273,177), landmarks (205,101)
    (247,103) (224,129) (203,138) (244,141)."""
    image = cv2.imread(str(ASTRONAUT))
    (face,) = agent_detector("face").detections(image)
    assert abs(face.score - 0.9995) < 1e-3
    x, y, w, h = face.box
    assert np.abs(np.array([x, y, x + w, y + h]) - [178, 57, 273, 177]).max() <= 1.0
    reference = [(205, 101), (247, 103), (224, 129), (203, 138), (244, 141)]
    assert np.abs(np.array(face.landmarks) - reference).max() <= 1.0


def test_faces_are_aligned_with_the_eyes_on_the_template(shared_models):
    image = cv2.imread(str(ASTRONAUT))
    detector = agent_detector("face")
    (face,) = detector.detections(image)
    crop = detector.crop(image, face, "t1")
    assert crop.pixels.shape == (112, 112, 3) and crop.landmarks == face.landmarks
    matrix = faces.alignment(np.array(face.landmarks))
    placed = np.hstack([np.array(face.landmarks), np.ones((5, 1))]) @ matrix.T
    assert np.abs(placed[:2] - faces.TEMPLATE_112[:2]).max() <= 2.0  # both eyes
    # The warp really moves pixels there: the aligned crop's own detection puts its eyes near
    # the template too (RetinaFace on the upscaled crop).
    big = cv2.resize(crop.pixels, (448, 448), interpolation=cv2.INTER_CUBIC)
    (again,) = detector.detections(big)
    eyes = np.array(again.landmarks[:2]) / 4
    assert np.abs(eyes - faces.TEMPLATE_112[:2]).max() <= 3.0


def test_face_quality_gates(shared_models):
    image = cv2.imread(str(ASTRONAUT))
    detector = agent_detector("face")
    (face,) = detector.detections(image)
    assert abs(faces.yaw(np.array(face.landmarks))) < 0.2  # frontal
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    (soft,) = agent_detector("face", score_threshold=0.3).detections(blurred) or [face]
    assert detector.crop(blurred, soft) == Rejected("blurred")
    marks = np.array(face.landmarks)
    marks[2, 0] += 0.9 * (marks[1, 0] - marks[0, 0])  # nose far off the middle: a turned head
    turned = Detection(*face.box, face.score, landmarks=tuple(map(tuple, marks)))
    assert detector.crop(image, turned) == Rejected("turned")
    tiny = Detection(10, 10, 12, 12, 0.9, landmarks=face.landmarks)
    assert detector.crop(image, tiny) == Rejected("small")


def test_person_crops_keep_the_re_id_shape(shared_models, street):
    detector = agent_detector("person", padding=0.0, min_size=8)
    frame = street[400]
    checked = 0
    height, width = frame.shape[:2]
    for det in detector.detections(frame):
        crop = detector.crop(frame, det)
        x, y, w, h = crop.bbox.xywh
        if x > 0 and y > 0 and x + w < width and y + h < height:  # not cut by the edge
            assert abs(crop.bbox.w / crop.bbox.h - 0.5) < 0.05
            assert crop.bbox.w >= int(det.w) and crop.bbox.h >= int(det.h)  # only widened
            assert abs(crop.bbox.x + crop.bbox.w / 2 - (det.x + det.w / 2)) <= 1  # same centre
            checked += 1
    assert checked >= 2


def test_missing_detector_files_fall_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.delenv("AGENT_MODELS_DIR", raising=False)
    with caplog.at_level(logging.WARNING):
        detector = agent_detector("person")
    assert isinstance(detector, HogPeople)
    assert "ssdlite_mobilenetv2_person" in caplog.text and "HOG" in caplog.text
    choice, _ = choose_detector(AgentConfig(detect={"mode": "face"}))
    assert choice.fallback and "Haar" in choice.detector
    with pytest.raises(ModelError, match="yolov3_tiny_coco"):  # objects mode has no fallback
        agent_detector("objects")
    doctor = run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["detector"]["level"] == "ok"  # frame mode by default


def test_sources_share_one_detector_in_batches_with_the_same_detections(shared_models, street):
    """Four source threads, one session: once every source is known, their frames run as one
    batch, and each thread gets the detections its frame gets alone."""
    cfg = AgentConfig(detect={"mode": "person", "max_wait_ms": 500})
    shared, alone = make_detector(cfg, batched=True), make_detector(cfg)
    frames = [street[100], street[400], street[700], street[400][:, ::-1].copy()]
    results: list[list[Detection]] = [[] for _ in frames]
    barrier = threading.Barrier(len(frames))
    batches_before_round_two = []

    def source(i: int) -> None:
        shared.detections(frames[i])  # first round: the batcher learns the sources
        if barrier.wait() == 0:
            batches_before_round_two.append(shared.batches)
        barrier.wait()
        results[i] = shared.detections(frames[i])

    threads = [threading.Thread(target=source, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert shared.batches - batches_before_round_two[0] == 1  # the second round: one call
    for frame, got in zip(frames, results, strict=True):
        expected = alone.detections(frame)
        assert len(got) == len(expected) >= 1
        for a, b in zip(got, expected, strict=True):
            assert np.abs(np.array(a.box) - b.box).max() < 1e-3 and abs(a.score - b.score) < 1e-4
    shared.close()
    with pytest.raises(RuntimeError, match="closed"):
        shared.detections(frames[0])


def test_person_mode_embeds_with_the_re_id_model_unless_one_is_chosen(shared_models, monkeypatch):
    from agent.runtime.registry import resolve_image_model

    person = AgentConfig(detect={"mode": "person"})
    assert resolve_image_model(person).manifest.name == "osnet_x0_25"
    chosen = AgentConfig(detect={"mode": "person"}, models={"default": "efficientnet_lite0"})
    assert resolve_image_model(chosen).manifest.name == "efficientnet_lite0"
    assert resolve_image_model(AgentConfig()).manifest.name == "efficientnet_lite0"
    monkeypatch.delenv("AGENT_MODELS_DIR")  # OSNet's file not there: the configured default
    assert resolve_image_model(person).manifest.name == "efficientnet_lite0"


def test_face_mode_events_carry_the_landmarks(gallery, tmp_path):
    """`agent run` in face mode on a folder holding the astronaut (and a blurred copy, which
    the sharpness gate drops and the metrics count)."""
    from tests.agent_support import AgentProcess, agent_config

    folder = tmp_path / "faces"
    folder.mkdir()
    image = cv2.imread(str(ASTRONAUT))
    cv2.imwrite(str(folder / "a.png"), image)
    cv2.imwrite(str(folder / "b.png"), cv2.GaussianBlur(image, (0, 0), 6))
    config = agent_config(tmp_path / "state", gallery, detect={"mode": "face"})
    agent = AgentProcess(tmp_path, config, "--fast", "-s", f"cam={folder}")
    assert agent.wait() == 0, agent.log()
    (event,) = [e for e in agent.events if e.get("type") == "match"]
    reference = [(205, 101), (247, 103), (224, 129), (203, 138), (244, 141)]
    assert np.abs(np.array(event["landmarks"]) - reference).max() <= 1.0
    metrics = agent.status()["metrics"]
    assert metrics["crops_rejected"] == {"blurred": 1} and metrics["detect_batches"] == 2

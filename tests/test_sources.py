"""Sources on real files: every frame when fast, fps cap, drop-oldest when live, folders with a
corrupt image, watched folders, a file that disappears and comes back; detectors on real frames."""

from __future__ import annotations

import shutil
import threading
import time

import cv2
import numpy as np

from agent.config import AgentConfig, DetectConfig, SourceConfig
from agent.stream.detect import FrameGate, HaarFaces, HogPeople, make_detector
from agent.stream.frame import Frame
from agent.stream.sources import make_source, resolve_kind
from tests.agent_support import EXAMPLES
from tests.conftest import shared_file, write_image

CLIP = EXAMPLES / "camera.mp4"  # 200 frames at 10 fps


def whole(frame: Frame) -> Frame:
    return frame


def drain(source, until_done: float = 30.0, slow: float = 0.0) -> list[Frame]:
    frames, deadline = [], time.monotonic() + until_done
    while time.monotonic() < deadline:
        frame = source.queue.get()
        if frame is None:
            if source.done:
                break
            time.sleep(0.005)
            continue
        frames.append(frame)
        time.sleep(slow)
    return frames


def start(cfg: SourceConfig):
    source = make_source(cfg, whole, threading.Event())
    source.start()
    return source


def test_kinds_are_guessed_from_the_uri(tmp_path):
    kinds = {"0": "device", "rtsp://cam/1": "stream", "http://x/y.mjpg": "stream",
             "v4l2src ! videoconvert ! appsink": "gstreamer", str(tmp_path): "folder",
             "clip.mp4": "file"}  # fmt: skip
    for uri, kind in kinds.items():
        assert resolve_kind(SourceConfig(id="s", uri=uri)) == kind


def test_file_fast_loses_no_frame_and_media_time_follows_the_clip():
    source = start(SourceConfig(id="f", uri=str(CLIP), realtime=False, queue_size=2))
    frames = drain(source, slow=0.002)
    assert len(frames) == 200 and source.health == "ended"
    assert [f.index for f in frames] == list(range(200))
    assert abs(frames[-1].media_time - 19.9) < 0.05
    assert source.counters.frames_dropped == 0


def test_fps_cap_samples_instead_of_queueing():
    source = start(SourceConfig(id="f", uri=str(CLIP), realtime=False, fps=2.5))
    frames = drain(source)
    assert len(frames) == 50  # 20 s of media at 2.5 fps
    assert source.counters.frames_in == 200


def test_live_pace_drops_oldest_when_the_consumer_is_slow():
    source = start(SourceConfig(id="f", uri=str(CLIP), realtime=True, queue_size=2, fps=0))
    time.sleep(1.5)  # ~15 frames arrive; the queue keeps the newest 2
    source.stop()
    source.join(5)
    frames = drain(source, until_done=1)
    assert 0 < len(frames) <= 2
    assert source.counters.frames_dropped >= 10
    assert frames[-1].index >= source.counters.frames_in - 2  # the newest survived


def test_folder_skips_a_corrupt_image_and_reports_it(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", np.full((40, 50, 3), 60 * i, np.uint8))
    (tmp_path / "img1b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    source = start(SourceConfig(id="d", uri=str(tmp_path)))
    frames = drain(source)
    assert len(frames) == 3 and source.counters.frames_corrupt == 1
    assert "img1b.jpg" in source.error and source.health == "ended"


def test_watched_folder_picks_up_new_files(tmp_path):
    source = start(SourceConfig(id="w", uri=str(tmp_path), watch=True))
    write_image(tmp_path / "a.png", np.zeros((20, 20, 3), np.uint8))
    frames = []
    deadline = time.monotonic() + 10
    while not frames and time.monotonic() < deadline:
        frame = source.queue.get()
        frames += [frame] if frame else []
        time.sleep(0.05)
    source.stop()
    assert len(frames) == 1 and source.health == "ok"


def test_file_that_disappears_and_comes_back_reconnects(tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(CLIP, clip)
    cfg = SourceConfig(id="r", uri=str(clip), realtime=False, loop=True, fps=50,
                       reconnect_min_s=0.1, reconnect_max_s=0.3)  # fmt: skip
    source = start(cfg)
    first = drain(source, until_done=0.3)
    clip.rename(tmp_path / "gone.mp4")
    deadline = time.monotonic() + 20
    while source.health != "reconnecting" and time.monotonic() < deadline:
        source.queue.get()
        time.sleep(0.01)
    assert source.health == "reconnecting" and "no such file" in source.error
    (tmp_path / "gone.mp4").rename(clip)
    while source.counters.reconnects == 0 and time.monotonic() < deadline:
        source.queue.get()
        time.sleep(0.01)
    later = drain(source, until_done=0.5)
    source.stop()
    assert first and later and source.counters.reconnects == 1 and source.health == "ok"


def test_frame_gate_reuses_still_frames_and_sees_scene_cuts():
    gate = FrameGate(0.02, 0.1)
    still = np.full((90, 120, 3), 100, np.uint8)
    assert gate.check(still) == (True, True)  # the first frame starts an appearance
    assert gate.check(still.copy()) == (False, False)
    noisy = still.copy()
    noisy[::7] += 2  # a little sensor noise
    assert gate.check(noisy) == (False, False)
    assert gate.check(np.full((90, 120, 3), 112, np.uint8)) == (True, False)  # change, no cut
    assert gate.check(np.full((90, 120, 3), 160, np.uint8)) == (True, True)  # a new scene
    always = FrameGate(0, 0.1)
    assert always.check(still)[0] and always.check(still)[0]


def test_hog_finds_people_in_a_real_street_video():
    capture = cv2.VideoCapture(str(shared_file("data/frames/real_video/vtest.avi")))
    ok, frame = capture.read()
    capture.release()
    assert ok
    crops, _ = HogPeople(DetectConfig(mode="person", score_threshold=0.3)).crops(frame)
    assert 1 <= len(crops) <= 8
    for crop in crops:
        assert crop.pixels.shape[0] > crop.pixels.shape[1]  # people are upright boxes
        assert crop.bbox.h >= 32
    assert make_detector(AgentConfig()).crops(frame)[0][0].bbox.w == frame.shape[1]


def test_haar_face_cascade_loads_and_finds_no_face_in_a_flat_image():
    faces = HaarFaces(DetectConfig(mode="face"))
    assert faces.crops(np.full((240, 320, 3), 128, np.uint8)) == ([], [])


def test_onnx_detector_decodes_yolo_v5_boxes_back_to_frame_pixels(tmp_path):
    """A real ONNX graph whose output is a fixed YOLOv5-style tensor: letterbox scaling, score
    threshold, class filter and NMS are what is tested, not a detector's accuracy."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # 64x64 input; frame 128x64 (w x h) -> scale 0.5, so input boxes map back times 2.
    rows = np.array([
        [16, 16, 8, 12, 0.9, 0.9, 0.1],  # class 0, score 0.81
        [17, 16, 8, 12, 0.9, 0.8, 0.1],  # overlaps the first: removed by NMS
        [48, 20, 10, 10, 0.9, 0.1, 0.9],  # class 1
        [40, 40, 4, 4, 0.2, 0.9, 0.1],  # below the score threshold
    ], np.float32)[None]  # fmt: skip
    const = helper.make_node("Constant", [], ["boxes"], value=numpy_helper.from_array(rows))
    shape = helper.make_node("Shape", ["images"], ["unused"])
    graph = helper.make_graph(
        [const, shape], "yolo", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                               [1, 3, 64, 64])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4, 7])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "det.onnx")
    cfg = DetectConfig(mode="onnx", onnx_model=tmp_path / "det.onnx", onnx_input_size=64,
                       onnx_layout="v5", score_threshold=0.5, padding=0.0, min_size=1)  # fmt: skip
    frame = np.zeros((64, 128, 3), np.uint8)
    boxes = make_detector(AgentConfig(detect=cfg)).detections(frame)
    assert len(boxes) == 2
    first = max(boxes, key=lambda b: b.score)
    assert np.allclose(first.box, [24, 20, 16, 24]) and abs(first.score - 0.81) < 1e-5
    only_class_1 = make_detector(
        AgentConfig(detect=cfg.model_copy(update={"onnx_classes": [1]}))
    ).detections(frame)
    assert len(only_class_1) == 1 and np.allclose(only_class_1[0].box, [86, 30, 20, 20])
    assert only_class_1[0].label == 1


def test_camera_passwords_never_reach_status_errors_or_logs(caplog):
    from agent.config import redact

    assert redact("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert "hunter2" not in redact("http://cam/stream?user=a&password=hunter2&fps=5")
    assert redact("/videos/lobby.mp4") == "/videos/lobby.mp4"
    cfg = SourceConfig(id="cam", uri="rtsp://admin:s3cret@127.0.0.1:1/live",
                       stall_timeout_s=1.0, reconnect_min_s=0.05, reconnect_max_s=0.1,
                       max_retries=2)  # fmt: skip
    source = make_source(cfg, whole, threading.Event())
    with caplog.at_level("DEBUG"):
        source.start()
        source.join(30)
    status = source.status()
    assert source.health == "failed" and status.error
    shown = status.model_dump_json() + caplog.text
    assert "s3cret" not in shown and "admin:***@" in shown


def test_folder_source_reads_what_embed_reads(tmp_path):
    """One reader: a float32 TIFF and a 16-bit grey PNG (IR) come through as frames (8-bit BGR
    for the detectors and the change gate), a corrupt file is counted, nothing stops."""
    folder = tmp_path / "frames"
    folder.mkdir()
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    assert cv2.imwrite(str(folder / "a_float.tiff"), np.dstack([ramp, ramp, ramp]))
    assert cv2.imwrite(str(folder / "b_ir16.png"), (ramp * 4000 + 1000).astype(np.uint16))
    (folder / "c_broken.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "d_dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    source = start(SourceConfig(id="f", uri=str(folder)))
    frames = drain(source)
    assert len(frames) == 2 and source.counters.frames_corrupt == 2
    for frame in frames:
        assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (48, 64, 3)
        assert frame.pixels.max() > 200 and frame.pixels.min() < 60  # the ramp survived

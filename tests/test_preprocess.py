import cv2
import numpy as np
import pytest

from agent.errors import InputError
from agent.runtime.images import ArrayImage
from agent.runtime.manifest import ImageInput
from agent.runtime.preprocess import Preprocessor, load_pixels, resize_to_input

from .conftest import photo_like, write_image

SPEC = ImageInput(
    name="x",
    height=32,
    width=32,
    resize="short_side_center_crop",
    resize_short=40,
    mean=(0.5, 0.4, 0.3),
    std=(0.2, 0.25, 0.3),
)


def reference(bgr: np.ndarray, spec: ImageInput) -> np.ndarray:
    """Written independently: resize short side, crop, RGB, /255, (x-mean)/std, CHW."""
    h, w = bgr.shape[:2]
    s = spec.resize_short / min(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    r = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=interp)
    top, left = (r.shape[0] - spec.height) // 2, (r.shape[1] - spec.width) // 2
    r = r[top : top + spec.height, left : left + spec.width, ::-1].astype(np.float64) / 255
    return ((r - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)


def test_colour_matches_reference():
    img = photo_like(1, 60, 90)
    out = Preprocessor(SPEC)(img, "BGR")
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(img, SPEC), atol=1e-5)


def test_rgb_array_equals_bgr_array():
    img = photo_like(2)
    pp = Preprocessor(SPEC)
    np.testing.assert_array_equal(pp(img, "BGR"), pp(np.ascontiguousarray(img[:, :, ::-1]), "RGB"))
    pixels, color = load_pixels(ArrayImage(np.ascontiguousarray(img[:, :, ::-1]), "RGB"))
    np.testing.assert_array_equal(pp(pixels, color), pp(img, "BGR"))


def test_grey_becomes_three_equal_channels(tmp_path):
    grey = cv2.cvtColor(photo_like(3), cv2.COLOR_BGR2GRAY)
    path = write_image(tmp_path / "ir.png", grey)
    pixels, color = load_pixels(path)
    assert pixels.ndim == 2 and color == "GRAY"
    spec = SPEC.model_copy(update={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    out = Preprocessor(spec)(pixels, color)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[1], out[2])


def test_16bit_is_scaled_by_percentiles_not_truncated(tmp_path):
    base = cv2.cvtColor(photo_like(4, 64, 64), cv2.COLOR_BGR2GRAY).astype(np.float64)
    # An IR frame using only 1000..1000+40*255 of the 16-bit range.
    ir16 = (1000 + base * 40).astype(np.uint16)
    path = write_image(tmp_path / "ir16.png", ir16)
    pixels, _ = load_pixels(path)
    assert pixels.dtype == np.uint16
    spec = SPEC.model_copy(update={"resize": "direct", "mean": (0, 0, 0), "std": (1, 1, 1)})
    out = Preprocessor(spec)(pixels, "GRAY")
    # Truncating to 8 bits (>> 8) would squash it to a few grey levels; percentiles use the range.
    assert out.min() <= 0.01 and out.max() >= 0.99
    eight = Preprocessor(spec)(base.astype(np.uint8), "GRAY")
    corr = np.corrcoef(out.ravel(), eight.ravel())[0, 1]
    assert corr > 0.99


def test_16bit_colour_tiff(tmp_path):
    img16 = photo_like(5).astype(np.uint16) * 200
    path = write_image(tmp_path / "c16.tiff", img16)
    pixels, color = load_pixels(path)
    assert pixels.dtype == np.uint16 and color == "BGR"
    out = Preprocessor(SPEC)(pixels, color)
    assert np.isfinite(out).all() and out.std() > 0.1


def test_rgba_png_drops_alpha(tmp_path):
    img = photo_like(6)
    rgba = np.dstack([img, np.full(img.shape[:2], 128, np.uint8)])
    path = write_image(tmp_path / "a.png", rgba)
    pixels, _ = load_pixels(path)
    pp = Preprocessor(SPEC)
    np.testing.assert_allclose(pp(pixels, "BGR"), pp(img, "BGR"), atol=1e-6)


@pytest.mark.parametrize("mode", ["direct", "letterbox", "short_side_center_crop"])
def test_resize_modes_shape(mode):
    spec = SPEC.model_copy(update={"resize": mode, "height": 48, "width": 24})
    for h, w in [(100, 30), (30, 100), (48, 24), (7, 9)]:
        assert resize_to_input(photo_like(7, h, w), spec).shape == (48, 24, 3)


def test_letterbox_pads_with_pad_value():
    spec = SPEC.model_copy(update={"resize": "letterbox", "height": 40, "width": 40})
    wide = np.full((10, 40, 3), 255, np.uint8)
    out = resize_to_input(wide, spec)
    assert (out[:10] == spec.pad_value).all() and (out[15:25] == 255).all()


def test_flip_mirrors():
    img = photo_like(8, 32, 32)
    spec = SPEC.model_copy(update={"resize": "direct"})
    pp = Preprocessor(spec)
    np.testing.assert_allclose(pp(img, flip=True), pp(img)[:, :, ::-1], atol=1e-6)


def test_nhwc_layout():
    spec = SPEC.model_copy(update={"layout": "NHWC"})
    img = photo_like(9)
    out = Preprocessor(spec)(img)
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out, Preprocessor(SPEC)(img).transpose(1, 2, 0))


def test_corrupt_empty_missing(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match="cannot decode"):
        load_pixels(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_pixels(empty)
    with pytest.raises(InputError, match="no such file"):
        load_pixels(tmp_path / "absent.jpg")
    with pytest.raises(InputError, match="expected"):
        load_pixels(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tiff"])
def test_formats_decode(tmp_path, suffix):
    img = photo_like(10)
    pixels, color = load_pixels(write_image(tmp_path / f"x{suffix}", img))
    assert pixels.shape == img.shape and color == "BGR"


def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header declaring a huge image, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))  # fmt: skip


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    """30000 x 30000 declared in a 1 kB file: refused by the pixel limit (40 MP), in this
    process and in a CLI run that also embeds a real image; the real one is embedded."""
    import os
    import subprocess
    import sys

    # OpenCV reads the limit once, at its first decode: check it in fresh processes.
    assert int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) == 40_000_000  # set by `import agent`
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_png_declaring(30000, 30000))
    cv2.imwrite(str(folder / "ok.png"), np.full((48, 64, 3), 120, np.uint8))
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    env["OPENCV_IO_MAX_IMAGE_PIXELS"] = ""  # empty would abort OpenCV: the default is used
    code = ("import sys; from agent.cli import main; sys.argv = ['agent', 'embed', "
            f"{str(folder)!r}, '--json']; main()")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert '"ok": 1' in out.stdout, out.stderr[-500:]
    assert "declares more than 40000000 pixels" in out.stdout, out.stdout

"""Static int8 QDQ quantisation calibrated on the user's own images.

Settings that hold up on x86 without VNNI: per-channel s8 weights, u8 activations and
`reduce_range=True` (without it, VPMADDUBSW saturation drops MobileNetV2's cosine to ~0.72).
Activation ranges come from the 99.999th percentile by default, which clips rare outliers:
on ETH-80 it lifted MobileNetV2's fp32/int8 cosine from 0.943 (MinMax) to 0.949 (BENCHMARKS.md).
Dynamic quantisation is slower than fp32 for CNNs on CPU, so it is never used here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import ModelsConfig
from agent.errors import InputError, ModelError
from agent.runtime.extract import ImageExtractor
from agent.runtime.manifest import Variant
from agent.runtime.registry import ModelRegistry, ResolvedModel, sha256_file

log = logging.getLogger(__name__)
REFUSE_BELOW = 0.90
WARN_BELOW = 0.95


@dataclass
class QuantizeReport:
    path: Path
    variant: str
    calibration_images: int
    holdout_images: int
    cosine_mean: float
    cosine_min: float
    accepted: bool


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed images, in small batches."""

    def __init__(self, tensors: np.ndarray, input_name: str, batch: int = 1):
        # Histogram calibrators need equal-sized batches; single images always are.
        self._batches = iter(
            [{input_name: tensors[i : i + batch]} for i in range(0, len(tensors), batch)]
        )

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax
        pass


def _load_tensors(extractor: ImageExtractor, paths: list[Path]) -> np.ndarray:
    tensors, errors = extractor.load_tensors(paths)
    for e in errors:
        log.warning("calibration: skipping %s", e.message)
    if not len(tensors):
        raise InputError("no readable calibration images")
    return tensors


def _ort_quantization():
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ModelError(
            f"quantisation needs the onnx package ({exc}); install with "
            "`pip install 'edge-embedding-agent[quantize]'`"
        ) from None
    return quantization, quant_pre_process


def _split(images: list[Path], samples: int, holdout: int) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out) images: a fixed random split, the held-out ones never seen by
    the calibrator."""
    if len(images) < 2:
        raise InputError("need at least 2 calibration images (some are held out for checking)")
    order = np.random.default_rng(0).permutation(len(images))
    holdout = min(holdout, max(1, len(images) // 5))
    held = [images[i] for i in order[:holdout]]
    return [images[i] for i in order[holdout : holdout + samples]], held


def _write_qdq(source: ResolvedModel, staged: Path, calib: np.ndarray, method: str) -> None:
    """Quantise `source` to a static QDQ graph at `staged`, calibrated on `calib` tensors."""
    q, quant_pre_process = _ort_quantization()
    prepared = staged.with_name("prepared.onnx")
    quant_pre_process(str(source.path), str(prepared), skip_symbolic_shape=True)
    chatter = io.StringIO()  # onnxruntime's calibrators print() progress; keep stdout clean
    with contextlib.redirect_stdout(chatter):
        q.quantize_static(
            str(prepared),
            str(staged),
            _Calibration(calib, source.manifest.image.name),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            calibrate_method={
                "minmax": q.CalibrationMethod.MinMax,
                "percentile": q.CalibrationMethod.Percentile,
            }[method],
        )
    log.debug("quantize_static: %s", chatter.getvalue().strip())


def _embed(model: ResolvedModel, cfg: ModelsConfig, tensors: np.ndarray) -> np.ndarray:
    extractor = ImageExtractor(model, cfg.model_copy(update={"warmup": False}))
    try:
        return extractor.embed_tensors(tensors)
    finally:
        extractor.close()


def quantize_static_int8(
    registry: ModelRegistry,
    source: ResolvedModel,
    cfg: ModelsConfig,
    images: list[Path],
    variant_name: str,
    samples: int,
    holdout: int,
    force: bool = False,
    method: str = "percentile",
) -> QuantizeReport:
    """Write `<model>_<variant>.onnx` and register it, unless its embeddings agree with fp32's
    on held-out images by a mean cosine below REFUSE_BELOW (then nothing is written)."""
    _ort_quantization()
    if source.variant.precision != "fp32":
        raise ModelError(f"quantise from an fp32 variant, not {source.label}")
    calib, held = _split(images, samples, holdout)
    fp32 = ImageExtractor(source, cfg.model_copy(update={"warmup": False}))
    try:
        calib_tensors = _load_tensors(fp32, calib)
        held_tensors = _load_tensors(fp32, held)
        reference = fp32.embed_tensors(held_tensors)
    finally:
        fp32.close()

    registry.write_dir.mkdir(parents=True, exist_ok=True)
    out_name = f"{source.manifest.name}_{variant_name}.onnx"
    target = registry.write_dir / out_name
    with tempfile.TemporaryDirectory(dir=registry.write_dir) as tmp:
        staged = Path(tmp) / out_name
        _write_qdq(source, staged, calib_tensors, method)
        digest = sha256_file(staged)
        variant = Variant(
            file=out_name,
            sha256=digest,
            precision="int8",
            size_bytes=staged.stat().st_size,
            notes=f"static QDQ, {method} calibration on {len(calib_tensors)} images, "
            "per-channel, reduce_range",
        )
        candidate = ResolvedModel(source.manifest, variant_name, variant, staged, digest)
        cosines = np.sum(reference * _embed(candidate, cfg, held_tensors), axis=1)
        report = QuantizeReport(
            target,
            variant_name,
            len(calib_tensors),
            len(held_tensors),
            float(cosines.mean()),
            float(cosines.min()),
            accepted=report_ok(float(cosines.mean()), force),
        )
        if not report.accepted:
            return report
        os.replace(staged, target)
    registry.add_variant(source.manifest, variant_name, variant)
    return report


def report_ok(cosine_mean: float, force: bool) -> bool:
    """Whether an int8 variant whose embeddings agree this well with fp32's is kept."""
    if cosine_mean < REFUSE_BELOW and not force:
        return False
    if cosine_mean < WARN_BELOW:
        log.warning(
            "int8 embeddings agree poorly with fp32 (mean cosine %.3f); check retrieval "
            "quality with `agent eval` before using it",
            cosine_mean,
        )
    return True

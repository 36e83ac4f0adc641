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
from agent.extract import ImageExtractor
from agent.manifest import Variant
from agent.registry import ModelRegistry, ResolvedModel, sha256_file

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
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ModelError(
            f"quantisation needs the onnx package ({exc}); install with "
            "`pip install 'edge-embedding-agent[quantize]'`"
        ) from None
    if source.variant.precision != "fp32":
        raise ModelError(f"quantise from an fp32 variant, not {source.label}")
    if len(images) < 2:
        raise InputError("need at least 2 calibration images (some are held out for checking)")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    holdout = min(holdout, max(1, len(images) // 5))
    held = [images[i] for i in order[:holdout]]
    calib = [images[i] for i in order[holdout : holdout + samples]]
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
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source.path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / out_name
        chatter = io.StringIO()  # onnxruntime's calibrators print() progress; keep stdout clean
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(prepared),
                str(staged),
                _Calibration(calib_tensors, source.manifest.image.name),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "percentile": CalibrationMethod.Percentile,
                }[method],
            )
        log.debug("quantize_static: %s", chatter.getvalue().strip())
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
        int8 = ImageExtractor(candidate, cfg.model_copy(update={"warmup": False}))
        try:
            quantised = int8.embed_tensors(held_tensors)
        finally:
            int8.close()
        cosines = np.sum(reference * quantised, axis=1)
        report = QuantizeReport(
            target,
            variant_name,
            len(calib_tensors),
            len(held_tensors),
            float(cosines.mean()),
            float(cosines.min()),
            accepted=True,
        )
        if report.cosine_mean < REFUSE_BELOW and not force:
            report.accepted = False
            return report
        if report.cosine_mean < WARN_BELOW:
            log.warning(
                "int8 embeddings agree poorly with fp32 (mean cosine %.3f); check retrieval "
                "quality with `agent eval` before using it",
                report.cosine_mean,
            )
        os.replace(staged, target)
    registry.add_variant(source.manifest, variant_name, variant)
    return report

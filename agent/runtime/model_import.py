"""`agent models import`: copy a user's ONNX file in, check it against a manifest, record it."""

from __future__ import annotations

import re
from pathlib import Path

import onnxruntime as ort

from agent.atomic import atomic_copy
from agent.errors import InputError, ModelError
from agent.runtime.manifest import Manifest, Variant
from agent.runtime.registry import ModelRegistry, sha256_file


def _graph_signature(path: Path) -> tuple[dict, dict]:
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(
            f"{path} is not an ONNX model onnxruntime can load: {str(exc).splitlines()[0]}"
        ) from None
    return (
        {i.name: i.shape for i in sess.get_inputs()},
        {o.name: o.shape for o in sess.get_outputs()},
    )


def _check_against(manifest: Manifest, inputs: dict, outputs: dict, path: Path) -> None:
    spec = manifest.image or manifest.text
    expected_input = spec.name if manifest.image else spec.input_ids
    if expected_input not in inputs:
        raise ModelError(
            f"{path}: no input {expected_input!r} as {manifest.name}'s manifest "
            f"expects (inputs: {', '.join(inputs)})"
        )
    if manifest.output not in outputs:
        raise ModelError(
            f"{path}: no output {manifest.output!r} as {manifest.name}'s manifest "
            f"expects (outputs: {', '.join(outputs)})"
        )
    dim = outputs[manifest.output][-1]
    if isinstance(dim, int) and dim != manifest.embedding_dim:
        raise ModelError(
            f"{path}: output dim {dim} but {manifest.name} expects {manifest.embedding_dim}"
        )


def _manifest_like(
    name: str, like: Manifest, inputs: dict, outputs: dict, variant: str, variant_spec: Variant
) -> Manifest:
    if like.image is None:
        raise ModelError("--like must name an image model")
    input_name, shape = next(iter(inputs.items()))
    output = like.output if like.output in outputs else next(iter(outputs))
    dim = outputs[output][-1]
    if not isinstance(dim, int):
        raise ModelError(f"output {output!r} has no fixed embedding dimension")
    image = like.image.model_dump()
    image["name"] = input_name
    if len(shape) == 4 and all(isinstance(s, int) for s in shape[1:]):
        h, w = (shape[2], shape[3]) if like.image.layout == "NCHW" else (shape[1], shape[2])
        image["height"], image["width"] = h, w
    return Manifest.model_validate(
        {
            "name": name,
            "description": f"imported; preprocessing as {like.name}",
            "modality": "image",
            "embedding_dim": dim,
            "output": output,
            "licence": "unknown",
            "source": "agent models import",
            "default_variant": variant,
            "image": image,
            "variants": {variant: variant_spec.model_dump()},
        }
    )


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def import_model(
    registry: ModelRegistry,
    src: Path,
    name: str,
    variant: str | None,
    like: str | None,
    precision: str = "fp32",
) -> tuple[Manifest, str, Path]:
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if not _NAME.fullmatch(name) or (variant is not None and not _NAME.fullmatch(variant)):
        raise InputError(
            f"model name {name!r} / variant {variant!r}: use letters, digits, '_', '-' and '.' "
            "only (they become file names)"
        )
    inputs, outputs = _graph_signature(src)
    digest = sha256_file(src)
    known = registry.manifests()
    registry.write_dir.mkdir(parents=True, exist_ok=True)
    if name in known:
        manifest = known[name]
        variant = variant or manifest.default_variant
        spec = manifest.variants.get(variant)
        if spec is None:
            spec = Variant(file=f"{name}_{variant}.onnx", precision=precision)
        if spec.sha256 and spec.sha256 != digest:
            raise ModelError(
                f"{src} has sha256 {digest[:12]}…, {name}:{variant} expects "
                f"{spec.sha256[:12]}…; not imported"
            )
        _check_against(manifest, inputs, outputs, src)
        spec = spec.model_copy(update={"sha256": digest, "size_bytes": src.stat().st_size})
        atomic_copy(src, registry.write_dir / spec.file)
        registry.add_variant(manifest, variant, spec)
    else:
        if like is None:
            raise ModelError(
                f"no manifest named {name!r}; pass --like MODEL to copy its "
                "preprocessing, or write a manifest (see models/README.md)"
            )
        variant = variant or precision
        spec = Variant(
            file=f"{name}_{variant}.onnx",
            sha256=digest,
            precision=precision,
            size_bytes=src.stat().st_size,
        )
        manifest = _manifest_like(name, registry.get(like), inputs, outputs, variant, spec)
        atomic_copy(src, registry.write_dir / spec.file)
        registry.save_manifest(manifest)
    return registry.get(name), variant, registry.write_dir / spec.file

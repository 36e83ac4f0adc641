"""Finding model manifests and weight files, verifying them, importing and downloading them.

Lookup order (first hit wins): the writable models directory (imports, pulls and quantised
variants land there, so their manifests override), each directory in $AGENT_MODELS_DIR
(path-separated), then the models bundled with the package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.atomic import atomic_write_bytes
from agent.config import AgentConfig
from agent.errors import ModelError
from agent.runtime.manifest import (
    DetectorManifest,
    Manifest,
    Variant,
    dump_manifest,
    load_any_manifest,
)

log = logging.getLogger(__name__)
MODELS_DIR_ENV = "AGENT_MODELS_DIR"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # agent/


def bundled_models_dir() -> Path:
    """`agent/_bundled_models` in a wheel, the repository's `models/` in a checkout."""
    wheel_dir = _PACKAGE_DIR / "_bundled_models"
    return wheel_dir if wheel_dir.is_dir() else _PACKAGE_DIR.parent / "models"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(path)
    return _verified[key]


@dataclass(frozen=True)
class ResolvedModel:
    """A manifest, one of its variants and the verified file on disk."""

    manifest: Manifest
    variant_name: str
    variant: Variant
    path: Path
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.manifest.name}:{self.variant_name}"

    @property
    def fingerprint(self) -> str:
        """Identifies what produced an embedding: model, variant, weights and preprocessing."""
        spec = self.manifest.image or self.manifest.text
        blob = json.dumps(
            [self.manifest.name, self.variant_name, self.sha256, spec.model_dump(mode="json")],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ResolvedDetector:
    """A detector manifest, one of its variants, the verified file and its class names."""

    manifest: DetectorManifest
    variant_name: str
    variant: Variant
    path: Path
    sha256: str
    classes: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.manifest.name}:{self.variant_name}"

    def class_ids(self, names: list[str]) -> list[int]:
        """Class ids of class names (ModelError naming the unknown ones)."""
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            listed = ", ".join(self.classes[:12]) + (", ..." if len(self.classes) > 12 else "")
            raise ModelError(
                f"{self.manifest.name} has no class {', '.join(map(repr, unknown))} "
                f"(its classes: {listed})"
            )
        return [self.classes.index(n) for n in names]


AnyManifest = Manifest | DetectorManifest


@dataclass(frozen=True)
class VariantStatus:
    name: str
    variant: Variant
    path: Path | None
    state: str  # "verified", "missing", "sha256 mismatch", "present (no sha256 in manifest)"


class ModelRegistry:
    def __init__(self, write_dir: Path, extra_dirs: list[Path] | None = None):
        self.write_dir = write_dir
        env_dirs = [Path(p) for p in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep) if p]
        dirs = [write_dir, *(extra_dirs or []), *env_dirs, bundled_models_dir()]
        self.search_dirs: list[Path] = []
        for d in dirs:
            d = d.expanduser()
            if d not in self.search_dirs:
                self.search_dirs.append(d)

    @classmethod
    def from_config(cls, cfg) -> ModelRegistry:
        return cls(write_dir=cfg.models_dir)

    def all_manifests(self) -> dict[str, AnyManifest]:
        """Embedding models and detectors, by name (the first directory to name one wins)."""
        found: dict[str, AnyManifest] = {}
        for d in self.search_dirs:
            if not d.is_dir():
                continue
            for path in sorted(d.glob("*.toml")):
                manifest = load_any_manifest(path)
                found.setdefault(manifest.name, manifest)
        return found

    def manifests(self) -> dict[str, Manifest]:
        """Embedding models."""
        return {k: m for k, m in self.all_manifests().items() if isinstance(m, Manifest)}

    def detectors(self) -> dict[str, DetectorManifest]:
        return {k: m for k, m in self.all_manifests().items() if isinstance(m, DetectorManifest)}

    def any(self, name: str) -> AnyManifest:
        manifests = self.all_manifests()
        if name not in manifests:
            known = ", ".join(sorted(manifests)) or "none"
            raise ModelError(f"unknown model {name!r} (known: {known})")
        return manifests[name]

    def get(self, name: str) -> Manifest:
        """An embedding model's manifest."""
        manifest = self.any(name)
        if not isinstance(manifest, Manifest):
            raise ModelError(f"{name} is a detector, not an embedding model")
        return manifest

    def find_file(self, manifest: AnyManifest, file_name: str) -> Path | None:
        dirs = list(self.search_dirs)
        if manifest.path is not None:
            dirs.insert(0, manifest.path.parent)
        for d in dirs:
            candidate = d.expanduser() / file_name
            if candidate.is_file():
                return candidate
        return None

    def status(self, manifest: AnyManifest) -> list[VariantStatus]:
        rows = []
        for name, variant in manifest.variants.items():
            path = self.find_file(manifest, variant.file)
            if path is None:
                state = "missing"
            elif variant.sha256 is None:
                state = "present (no sha256 in manifest)"
            elif cached_sha256(path) == variant.sha256:
                state = "verified"
            else:
                state = "sha256 mismatch"
            rows.append(VariantStatus(name, variant, path, state))
        return rows

    def resolve(self, name: str, variant: str | None = None, verify: bool = True) -> ResolvedModel:
        manifest = self.get(name)
        variant_name, spec, path, digest = self._locate(manifest, variant, verify)
        return ResolvedModel(manifest, variant_name, spec, path, digest)

    def resolve_detector(
        self, name: str, variant: str | None = None, verify: bool = True
    ) -> ResolvedDetector:
        manifest = self.any(name)
        if not isinstance(manifest, DetectorManifest):
            raise ModelError(f"{name} is an embedding model, not a detector")
        variant_name, spec, path, digest = self._locate(manifest, variant, verify)
        classes = tuple(manifest.detector.classes)
        if manifest.detector.classes_file:
            names = self.find_file(manifest, manifest.detector.classes_file)
            if names is None:
                raise ModelError(
                    f"class names {manifest.detector.classes_file} for {name} not found "
                    f"(searched {', '.join(str(d) for d in self.search_dirs)})"
                )
            classes = tuple(line.strip() for line in names.read_text().splitlines() if line.strip())
        return ResolvedDetector(manifest, variant_name, spec, path, digest, classes)

    def _locate(
        self, manifest: AnyManifest, variant: str | None, verify: bool
    ) -> tuple[str, Variant, Path, str]:
        """A variant's file, found and (when asked) checked against its sha256."""
        name = manifest.name
        variant_name, spec = manifest.variant(variant)
        path = self.find_file(manifest, spec.file)
        if path is None:
            where = ", ".join(str(d) for d in self.search_dirs)
            hint = (
                f"run `agent models pull {name} --variant {variant_name}`"
                if spec.url
                else f"copy it there or run `agent models import FILE --as {name}`"
            )
            raise ModelError(
                f"model file {spec.file} for {name}:{variant_name} not found (searched {where}); "
                + hint
            )
        digest = cached_sha256(path) if (verify or spec.sha256 is None) else spec.sha256 or ""
        if verify and spec.sha256 and digest != spec.sha256:
            raise ModelError(
                f"{path} does not match the sha256 in {name}'s manifest "
                f"(expected {spec.sha256[:12]}…, got {digest[:12]}…); the file is corrupt or "
                "a different model"
            )
        return variant_name, spec, path, digest

    def save_manifest(self, manifest: AnyManifest) -> Path:
        """Write a manifest into the writable models dir, where it takes precedence."""
        self.write_dir.mkdir(parents=True, exist_ok=True)
        target = self.write_dir / f"{manifest.name}.toml"
        atomic_write_bytes(target, dump_manifest(manifest).encode())
        return target

    def add_variant(self, manifest: AnyManifest, name: str, variant: Variant) -> Path:
        variants = dict(manifest.variants)
        variants[name] = variant
        updated = type(manifest).model_validate(
            {**manifest.model_dump(exclude={"path"}), "variants": variants}
        )
        return self.save_manifest(updated)

    def pull(self, name: str, variant: str | None = None, timeout: float = 30.0) -> Path:
        """Download a variant's URL into the models dir, verifying its sha256."""
        manifest = self.any(name)
        variant_name, spec = manifest.variant(variant)
        if not spec.url:
            raise ModelError(
                f"{name}:{variant_name} has no download URL; export it with the tools in tools/ "
                f"and run `agent models import FILE --as {name}`"
            )
        import urllib.error
        import urllib.request

        self.write_dir.mkdir(parents=True, exist_ok=True)
        target = self.write_dir / spec.file
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.write_dir, prefix=f".{spec.file}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(spec.url, timeout=timeout) as resp:
                        while block := resp.read(1 << 20):
                            digest.update(block)
                            out.write(block)
                except (urllib.error.URLError, TimeoutError, OSError) as exc:
                    reason = getattr(exc, "reason", exc)
                    raise ModelError(
                        f"cannot download {spec.url}: {reason} (offline? copy the file and use "
                        f"`agent models import FILE --as {name}`)"
                    ) from None
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if spec.sha256 and got != spec.sha256:
                raise ModelError(
                    f"download of {spec.url} has sha256 {got[:12]}…, expected "
                    f"{spec.sha256[:12]}…; not installed"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if not spec.sha256:
            log.warning("%s has no sha256 in its manifest; recorded %s", name, got)
            self.add_variant(manifest, variant_name, spec.model_copy(update={"sha256": got}))
        return target


PERSON_MODEL = "osnet_x0_25"


def default_image_model(cfg: AgentConfig) -> str:
    """`[models] default`; in person mode, when no model was chosen, the person re-id model
    if its file is present (a generic image model tells people apart poorly)."""
    if "default" in cfg.models.model_fields_set or cfg.detect.mode != "person":
        return cfg.models.default
    registry = ModelRegistry.from_config(cfg)
    manifest = registry.manifests().get(PERSON_MODEL)
    if manifest is None or not any(st.path for st in registry.status(manifest)):
        return cfg.models.default
    log.info("person mode: embedding with %s (person re-id); [models] default picks another",
             PERSON_MODEL)  # fmt: skip
    return PERSON_MODEL


def resolve_image_model(
    cfg: AgentConfig, name: str | None = None, variant: str | None = None
) -> ResolvedModel:
    """The named model (default: the configured one, with its configured variant, or the
    person re-id model in person mode), verified."""
    name = name or default_image_model(cfg)
    if variant is None and name == cfg.models.default:
        variant = cfg.models.variant
    return ModelRegistry.from_config(cfg).resolve(name, variant, verify=cfg.models.verify_sha256)

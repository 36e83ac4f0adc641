"""Enrollment: a folder of identities in, gallery changes out (idempotent and resumable).

`DIR/<identity>/<image>` (the folder name is the identity) or a flat folder whose file names
carry the identity (`--id-from filename`: `alice_003.jpg` -> `alice`). Files are compared with
the gallery by path and content hash, so a re-run adds only new or changed files. Work is
committed in chunks: a run that is killed keeps what it committed and the next run resumes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from agent.errors import InputError
from agent.gallery.gallery import Gallery
from agent.gallery.models import gallery_model
from agent.gallery.store import Entry, NewVector, check_identity
from agent.runtime.cache import content_hash
from agent.runtime.embedder import CachedEmbedder
from agent.runtime.images import IMAGE_SUFFIXES, EncodedImage, list_images

IdFrom = Literal["folder", "filename"]
CHUNK = 256
_TRAILING_NUMBER = re.compile(r"^(.*?)[\s_\-.]*\d+$")


@dataclass(frozen=True)
class ImageFile:
    """An image file to enroll under an identity."""

    identity: str
    path: Path


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # corrupt, unreadable, empty-folder, bad-identity, duplicate, same-as-other-identity
    message: str


@dataclass
class EnrollReport:
    gallery: str
    model: str
    dry_run: bool
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    skipped_duplicates: int = 0
    inferences: int = 0
    cache_hits: int = 0
    identities: int = 0
    gallery_vectors: int = 0
    gallery_version: int = 0
    seconds: float = 0.0
    provider: str | None = None
    problems: list[Problem] = field(default_factory=list)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # dry run: (action,
    # identity, file) for each file that would be added, updated or removed

    def as_dict(self) -> dict:
        return asdict(self)


def identity_from_filename(stem: str) -> str:
    """`alice_003` -> `alice`, `bob-2` -> `bob`, `carol` -> `carol`."""
    match = _TRAILING_NUMBER.match(stem)
    return match.group(1) if match and match.group(1) else stem


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def scan(
    directory: Path, id_from: IdFrom = "folder", recursive: bool = False
) -> tuple[list[ImageFile], list[Problem]]:
    """The images to enroll and the problems found; layout errors raise InputError."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory")
    problems: list[Problem] = []
    found: list[ImageFile] = []
    if id_from == "filename":
        images = list_images(directory, recursive=recursive)
        if not recursive:
            nested = [d for d in directory.iterdir() if d.is_dir() and list_images(d)]
            if nested:
                raise InputError(
                    f"{nested[0]}: nested folder with images; use --recursive to include it"
                )
        for path in images:
            identity = identity_from_filename(path.stem)
            problem = check_identity(identity)
            if problem:
                problems.append(Problem(str(path), "bad-identity", problem))
            else:
                found.append(ImageFile(identity, path))
        if not found and not problems:
            raise InputError(f"{directory}: no images (jpg, jpeg, png, webp, bmp, tif, tiff)")
        return found, problems

    loose = sorted(p for p in directory.iterdir() if _is_image(p))
    if loose:
        raise InputError(
            f"{directory} has images directly inside (e.g. {loose[0].name}); expected "
            "DIR/<identity>/<image>, or use --id-from filename"
        )
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{directory}: no identity folders (expected DIR/<identity>/<image>)")
    for folder in folders:
        problem = check_identity(folder.name)
        if problem:
            problems.append(Problem(str(folder), "bad-identity", problem))
            continue
        try:
            if recursive:
                images = list_images(folder, recursive=True)
            else:
                images = sorted(p for p in folder.iterdir() if _is_image(p))
                nested = [d for d in sorted(folder.iterdir()) if d.is_dir() and list_images(d)]
                if nested:
                    raise InputError(
                        f"{nested[0]}: nested folder with images inside identity "
                        f"{folder.name!r}; use --recursive to enroll it under that identity"
                    )
        except OSError as exc:  # no permission, or it vanished while scanning
            problems.append(Problem(str(folder), "unreadable", f"{folder}: {exc.strerror}"))
            continue
        problems += _broken_links(folder, recursive)
        if not images:
            problems.append(Problem(str(folder), "empty-folder", "no images in this folder"))
        found += [ImageFile(folder.name, p) for p in images]
    return found, problems


def _broken_links(folder: Path, recursive: bool) -> list[Problem]:
    """Image names that are dangling or looping symlinks: listed, not silently skipped."""
    try:
        names = folder.rglob("*") if recursive else folder.iterdir()
        return [
            Problem(str(p), "broken-link", f"{p}: symbolic link to nothing (or a loop)")
            for p in names
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_symlink() and not p.exists()
        ]
    except OSError:
        return []


def read_image_file(path: Path) -> EncodedImage | Problem:
    """A file's bytes for decoding later, or the problem that stops it being read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Problem(str(path), "unreadable", f"{path}: cannot read ({exc.strerror})")
    if not data:
        return Problem(str(path), "corrupt", f"{path}: empty file")
    return EncodedImage(data, str(path))


@dataclass(frozen=True)
class _Pending:
    """A file that needs an embedding: new, or replacing the vector `old_key`."""

    identity: str
    source: str
    digest: str
    image: EncodedImage
    old_key: int | None


class _Triage:
    """Sorts files into unchanged, duplicate, unreadable or pending, against the gallery."""

    def __init__(self, entries: list[Entry], report: EnrollReport):
        self.report = report
        self.by_source = {e.source: e for e in entries}
        self.owners: dict[str, set[str]] = {}
        self.sources_of: dict[tuple[str, str], str] = {}
        for e in entries:
            self.owners.setdefault(e.content_hash, set()).add(e.identity)
            self.sources_of.setdefault((e.identity, e.content_hash), e.source)
        self.seen_sources: set[str] = set()

    def __call__(self, cand: ImageFile) -> _Pending | None:
        report = self.report
        source = str(cand.path.resolve())
        self.seen_sources.add(source)
        image = read_image_file(cand.path)
        if isinstance(image, Problem):
            report.problems.append(image)
            report.failed += 1
            return None
        digest = content_hash(image.data)
        old = self.by_source.get(source)
        if old is not None and old.content_hash == digest and old.identity == cand.identity:
            report.unchanged += 1
            return None
        twin = self.sources_of.get((cand.identity, digest))
        if twin is not None and twin != source:
            report.problems.append(
                Problem(str(cand.path), "duplicate", f"same image as {twin}; skipped")
            )
            report.skipped_duplicates += 1
            return None
        others = self.owners.get(digest, set()) - {cand.identity}
        if others:
            report.problems.append(
                Problem(
                    str(cand.path),
                    "same-as-other-identity",
                    f"same image is enrolled as {', '.join(sorted(others))}",
                )
            )
        self.owners.setdefault(digest, set()).add(cand.identity)
        self.sources_of[(cand.identity, digest)] = source
        return _Pending(cand.identity, source, digest, image, old.key if old else None)


def enroll(
    gallery: Gallery,
    embedder: CachedEmbedder,
    candidates: list[ImageFile],
    replace: bool = False,
    prune: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
) -> EnrollReport:
    """Bring the gallery in line with the candidates (see module docstring). `prune` removes
    vectors whose file is gone, only among those under `root` (the folder being enrolled), so
    imported vectors or other folders' are kept."""
    started = time.perf_counter()
    report = EnrollReport(str(gallery.path), gallery.model.label, dry_run)
    report.scanned = len(candidates)
    triage = _Triage(gallery.entries(), report)
    hits_before = embedder.cache.stats.hits if embedder.cache else 0

    for start in range(0, len(candidates), CHUNK):
        chunk = candidates[start : start + CHUNK]
        todo = [p for p in map(triage, chunk) if p is not None]
        if progress is not None and len(chunk) > len(todo):
            progress(len(chunk) - len(todo))
        if dry_run:
            report.added += sum(1 for p in todo if p.old_key is None)
            report.updated += sum(1 for p in todo if p.old_key is not None)
            report.changes += [("update" if p.old_key is not None else "add", p.identity,
                                p.source) for p in todo]  # fmt: skip
            if progress is not None and todo:
                progress(len(todo))
        elif todo:
            _embed_and_commit(gallery, embedder, todo, report, progress)

    by_source = triage.by_source
    stale: list[int] = []
    if replace:
        identities = {c.identity for c in candidates}
        stale += [
            e.key
            for e in by_source.values()
            if e.identity in identities and e.source not in triage.seen_sources
        ]
    if prune:
        under = root.resolve() if root is not None else None
        stale += [
            e.key
            for e in by_source.values()
            if (under is None or Path(e.source).is_relative_to(under))
            and not Path(e.source).exists()
        ]
    stale = sorted(set(stale))
    report.removed = len(stale)
    if dry_run:
        by_key = {e.key: e for e in by_source.values()}
        report.changes += [("remove", by_key[k].identity, by_key[k].source) for k in stale]
    if stale and not dry_run:
        gallery.apply(remove=stale)
    if not dry_run:
        gallery.flush()
    report.inferences = embedder.inferences
    report.cache_hits = (embedder.cache.stats.hits - hits_before) if embedder.cache else 0
    return finish_report(report, gallery, embedder.provider, started)


def finish_report(
    report: EnrollReport, gallery: Gallery, provider: str | None, started: float
) -> EnrollReport:
    """The gallery's state after an enrollment (images or captions), and how long it took."""
    report.provider = provider
    report.gallery_vectors = gallery.count
    report.identities = len(gallery.identities())
    report.gallery_version = gallery.version
    report.seconds = time.perf_counter() - started
    return report


def _embed_and_commit(
    gallery: Gallery,
    embedder: CachedEmbedder,
    todo: list[_Pending],
    report: EnrollReport,
    progress: Callable[[int], None] | None,
) -> None:
    """Embed one chunk (cache first) and commit it to the gallery in one transaction."""
    embedded = embedder.embed(
        [p.image for p in todo], [p.digest for p in todo], gallery.settings.flip, progress
    )
    for err in embedded.errors:
        report.problems.append(Problem(err.source, "corrupt", err.message))
    report.failed += len(embedded.errors)
    add, remove = [], []
    for pending, ok, vector in zip(todo, embedded.ok, embedded.vectors, strict=True):
        if not ok:
            continue
        add.append(NewVector(pending.identity, pending.source, pending.digest, vector))
        if pending.old_key is None:
            report.added += 1
        else:
            remove.append(pending.old_key)
            report.updated += 1
    gallery.apply(add=add, remove=remove)


def reindex(
    gallery: Gallery,
    embedder: CachedEmbedder,
    drop_missing: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> tuple[int, int]:
    """Re-embed every vector from its source file with `embedder`'s model and switch the gallery
    to it in one transaction. Sources are read a chunk at a time and must be regular files (not
    a device or a pipe). Returns (vectors kept, vectors dropped)."""
    import numpy as np

    entries = gallery.entries()
    advance = progress("re-embedding", len(entries)) if progress else None
    vectors: dict[int, np.ndarray] = {}
    missing, failed = [], []
    for start in range(0, len(entries), CHUNK):
        items, keys = [], []
        for e in entries[start : start + CHUNK]:
            image = read_image_file(Path(e.source)) if Path(e.source).is_file() else None
            if isinstance(image, EncodedImage):
                items.append(image)
                keys.append(e.key)
            else:
                missing.append(e)
        embedded = embedder.embed(items, flip=gallery.settings.flip, progress=advance)
        failed += [keys[i] for i in np.flatnonzero(~embedded.ok)]
        vectors |= {keys[i]: embedded.vectors[i] for i in np.flatnonzero(embedded.ok)}
        if (missing or failed) and not drop_missing:
            what = missing[0].source if missing else embedded.errors[0].message
            raise InputError(
                f"{len(missing) + len(failed)} source file(s) are gone, not regular files or "
                f"no longer decode (e.g. {what}); restore them or pass --drop-missing"
            )
    gallery.replace_model(gallery_model(embedder.model), vectors,
                          [e.key for e in missing] + failed)  # fmt: skip
    return len(vectors), len(missing) + len(failed)

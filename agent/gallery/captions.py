"""Captions as a gallery: `DIR/<identity>/*.txt`, one caption per line, each line one vector of a
text model (MiniLM), searched with `agent search --text`. Re-runs add only new or changed lines
(by the line's text); lines gone from a file are removed from the gallery."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import InputError
from agent.gallery.enroll import EnrollReport, Problem, finish_report
from agent.gallery.gallery import Gallery
from agent.gallery.store import NewVector, check_identity
from agent.runtime.cache import content_hash

if TYPE_CHECKING:
    from agent.runtime.extract import TextExtractor

CHUNK = 256


@dataclass(frozen=True)
class Caption:
    identity: str
    source: str  # FILE#LINE
    text: str


def scan_captions(directory: Path) -> tuple[list[Caption], list[Problem]]:
    """The captions under `directory` and the problems found; layout errors raise InputError."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory")
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{directory}: no identity folders (expected DIR/<identity>/*.txt)")
    found: list[Caption] = []
    problems: list[Problem] = []
    for folder in folders:
        if problem := check_identity(folder.name):
            problems.append(Problem(str(folder), "bad-identity", problem))
            continue
        files = sorted(folder.glob("*.txt"))
        if not files:
            problems.append(Problem(str(folder), "empty-folder", "no .txt captions here"))
        for path in files:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(str(path), "unreadable", f"{path}: {exc}"))
                continue
            found += [Caption(folder.name, f"{path.resolve()}#{n}", line.strip())
                      for n, line in enumerate(lines, 1) if line.strip()]  # fmt: skip
    if not found:
        raise InputError(f"{directory}: no captions (DIR/<identity>/*.txt, one per line)")
    return found, problems


def enroll_captions(
    gallery: Gallery,
    encoder: TextExtractor,
    captions: list[Caption],
    root: Path,
    dry_run: bool = False,
) -> EnrollReport:
    """Bring the gallery's captions from under `root` in line with `captions`."""
    started = time.perf_counter()
    report = EnrollReport(str(gallery.path), gallery.model.label, dry_run)
    report.scanned = len(captions)
    under = str(root.resolve())
    existing = {e.source: e for e in gallery.entries() if e.source.startswith(under)}
    todo: list[tuple[Caption, str, int | None]] = []
    for caption in captions:
        digest = content_hash(caption.text.encode())
        old = existing.pop(caption.source, None)
        if old is not None and old.content_hash == digest and old.identity == caption.identity:
            report.unchanged += 1
            continue
        todo.append((caption, digest, old.key if old else None))
    stale = [e.key for e in existing.values()]  # lines (or files) that are gone
    report.removed = len(stale)
    report.added = sum(1 for _, _, key in todo if key is None)
    report.updated = len(todo) - report.added
    if dry_run:
        report.changes = [("update" if key is not None else "add", c.identity, c.source)
                          for c, _, key in todo]  # fmt: skip
        report.changes += [("remove", e.identity, e.source) for e in existing.values()]
    else:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            vectors = encoder.encode([c.text for c, _, _ in chunk])
            report.inferences += 1
            gallery.apply(
                add=[NewVector(c.identity, c.source, d, v)
                     for (c, d, _), v in zip(chunk, vectors, strict=True)],
                remove=[key for _, _, key in chunk if key is not None],
            )  # fmt: skip
        if stale:
            gallery.apply(remove=stale)
        gallery.flush()
    return finish_report(report, gallery, encoder.provider, started)

"""The gallery as a library: what `agent enroll`, `agent search` and `agent eval` do, and what
`agent run` would decide about an image, from Python.

    from agent import open_gallery
    with open_gallery("my_gallery") as gallery:          # created on the first enroll
        gallery.enroll("examples/gallery")               # DIR/<identity>/<image>
        gallery.search(["query.jpg"], k=3)[0].identities
        gallery.decide(["query.jpg"])[0].identity        # the calibrated match policy
        await gallery.asearch(["query.jpg"])             # from asyncio, without blocking it

Images are file paths, encoded bytes, BGR arrays or `ArrayImage`s. Not thread-safe: one
gallery object per thread (the async methods run one call at a time in a worker thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.config import AgentConfig, load_config
from agent.errors import InputError
from agent.runtime.images import ArrayImage, EncodedImage

if TYPE_CHECKING:
    from agent.decide.policy import Label
    from agent.gallery.enroll import EnrollReport
    from agent.gallery.gallery import Gallery
    from agent.gallery.scoring import SearchResult
    from agent.runtime.embedder import CachedEmbedder

Image = str | Path | bytes | np.ndarray | ArrayImage | EncodedImage


class GalleryClient:
    def __init__(self, path: Path, cfg: AgentConfig, model: str | None = None):
        self.path = Path(path)
        self.cfg = cfg
        self.model = model
        self._gallery: Gallery | None = None
        self._embedder: CachedEmbedder | None = None
        self._lock = threading.Lock()

    # ---- enrollment ----------------------------------------------------------------------------

    def enroll(
        self,
        folder: str | Path,
        id_from: str = "folder",
        replace: bool = False,
        prune: bool = False,
        recursive: bool = False,
    ) -> EnrollReport:
        """Add a folder of identities (`DIR/<identity>/<image>`, or `alice_01.jpg` with
        id_from="filename"); re-runs add only new or changed files."""
        from agent.gallery.enroll import enroll, scan
        from agent.gallery.gallery import Gallery
        from agent.gallery.models import gallery_model
        from agent.gallery.store import GallerySettings

        if id_from not in ("folder", "filename"):
            raise InputError(f"id_from must be folder or filename, not {id_from!r}")
        candidates, problems = scan(Path(folder), id_from, recursive)  # type: ignore[arg-type]
        if self._gallery is None and not Gallery.exists(self.path):
            embedder = self._embedder_for(None)
            settings = GallerySettings.from_config(self.cfg.gallery)
            self._gallery = Gallery.create(self.path, gallery_model(embedder.model), settings)
        gallery = self._open(writable=True)
        report = enroll(gallery, self._embedder_for(gallery), candidates, replace=replace,
                        prune=prune, root=Path(folder))  # fmt: skip
        report.problems = problems + report.problems
        return report

    # ---- queries -------------------------------------------------------------------------------

    def embed(self, images: Sequence[Image]) -> np.ndarray:
        """Embeddings of the images with the gallery's model (rows of failed images: zero)."""
        gallery = self._open()
        items = [_item(i) for i in images]
        flip = gallery.settings.flip and self.cfg.gallery.flip_queries
        embedded = self._embedder_for(gallery).embed(items, flip=flip)
        if embedded.errors:
            raise InputError("; ".join(e.message for e in embedded.errors))
        return embedded.vectors

    def search(self, images: Sequence[Image], k: int = 5) -> list[SearchResult]:
        """Nearest identities (and images) of each image, best first."""
        gallery = self._open()
        return gallery.search(self.embed(images), k=k, candidates=self.cfg.gallery.candidates)

    def decide(self, images: Sequence[Image]) -> list[Label]:
        """What the running agent's match policy says about each image on its own: an
        identity, "" for unknown, or None (undecided), with score and margin."""
        from agent.decide.policy import decision_rule, label

        gallery = self._open()
        rule = decision_rule(self.cfg.match, gallery.calibration)
        top_k = max(self.cfg.match.top_k, 2)
        return [label(r, rule) for r in self.search(images, k=top_k)]

    def evaluate(self, queries: str | Path, ks: Sequence[int] = (1, 5)) -> dict:
        """This gallery, as it is, against query images (`DIR/<identity>/<image>`): identity
        recall at each k, and the match policy's operating point (how many queries it decides
        and how many of those rightly)."""
        from agent.gallery.enroll import scan

        files, problems = scan(Path(queries), "folder", False)
        if not files:
            raise InputError(f"no query images under {queries}")
        results = self.search([f.path for f in files], k=max(max(ks), self.cfg.match.top_k, 2))
        truth = [f.identity for f in files]
        ranked = [[m.identity for m in r.identities] for r in results]
        labels = self.decide([f.path for f in files])
        decided = [(lab.identity, t) for lab, t in zip(labels, truth, strict=True)
                   if lab.identity]  # fmt: skip
        right = sum(identity == t for identity, t in decided)
        return {
            "queries": len(files),
            "skipped": len(problems),
            **{f"identity_recall@{k}": round(float(np.mean([t in r[:k] for t, r in
                                                            zip(truth, ranked, strict=True)])), 4)
               for k in ks},
            "decided": len(decided),
            "decided_right": right,
            "precision": round(right / len(decided), 4) if decided else None,
        }  # fmt: skip

    def identities(self) -> list[tuple[str, int, float]]:
        """(identity, image count, last enrolled time), sorted by name."""
        return self._open().identities()

    # ---- asyncio -------------------------------------------------------------------------------

    async def asearch(self, images: Sequence[Image], k: int = 5) -> list[SearchResult]:
        return await asyncio.to_thread(self._serial, self.search, images, k)

    async def adecide(self, images: Sequence[Image]) -> list[Label]:
        return await asyncio.to_thread(self._serial, self.decide, images)

    async def aembed(self, images: Sequence[Image]) -> np.ndarray:
        return await asyncio.to_thread(self._serial, self.embed, images)

    def _serial(self, fn, *args):
        with self._lock:
            return fn(*args)

    # ---- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._gallery is not None:
            self._gallery.close()
            self._gallery = None

    def __enter__(self) -> GalleryClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, writable: bool = False) -> Gallery:
        from agent.gallery.gallery import Gallery

        if self._gallery is not None and writable and not self._gallery.writable:
            self._gallery.close()
            self._gallery = None
        if self._gallery is None:
            if not Gallery.exists(self.path):
                raise InputError(f"no gallery at {self.path}: enroll a folder first")
            self._gallery = Gallery.open(self.path, writable=writable)
        return self._gallery

    def _embedder_for(self, gallery: Gallery | None) -> CachedEmbedder:
        from agent.gallery.models import embedder_for

        if self._embedder is None:
            self._embedder = embedder_for(self.cfg, gallery, self.model)
        return self._embedder


def open_gallery(
    path: str | Path, cfg: AgentConfig | None = None, model: str | None = None
) -> GalleryClient:
    """A gallery directory (created by the first `enroll`), with `cfg` (default: agent.toml,
    AGENT_* variables and defaults) and, for a new gallery, `model` (default: the config's)."""
    return GalleryClient(Path(path), cfg or load_config(), model)


def _item(image: Image) -> EncodedImage | ArrayImage:
    from agent.gallery.enroll import Problem, read_image_file

    if isinstance(image, EncodedImage | ArrayImage):
        return image
    if isinstance(image, bytes):
        return EncodedImage(image, "<bytes>")
    if isinstance(image, np.ndarray):
        return ArrayImage(image, "BGR")
    read = read_image_file(Path(image))
    if isinstance(read, Problem):
        raise InputError(read.message)
    return read

"""Sightings: the match events of every box in Qdrant, searchable by image or by identity.

Qdrant, because the same `qdrant-client` API talks to its embedded mode (a folder, for tests and
small sites) and to a sharded, replicated cluster; points are upserted by id, so writing an event
twice stores it once; and payload filters (device, source, identity, model) run inside the
vector search. One point per event: its id derives from `event_id`, its vector is the event's
embedding (when the agent sends embeddings: `pipeline.embed_vectors`), its payload the rest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.errors import FleetError
from agent.events import MatchEvent, decode_embedding

VECTOR = "embedding"
ID_NAMESPACE = uuid.UUID("5b0f7a52-6c1e-4c55-9d0e-1f0c2f8a9e41")
API_KEY_ENV = "QDRANT_API_KEY"
PAYLOAD_KEYS = ("device_id", "source_id", "identity", "track_id", "unknown_id", "model")


@dataclass(frozen=True)
class Sighting:
    event_id: str
    device_id: str
    source_id: str
    identity: str | None
    score: float
    track_id: str | None
    ts: float
    frame_time_s: float
    model: str
    similarity: float | None = None  # to the query image, for searches by image


def point_id(event_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, event_id))


class Sightings:
    def __init__(self, location: str, dim: int, collection: str = "agent_sightings"):
        """`location`: http(s)://host:6333 (a Qdrant server or cluster; API key from
        $QDRANT_API_KEY) or a folder (embedded mode: one process at a time). `dim`: the fleet
        model's embedding size, for a collection that does not exist yet; an existing one keeps
        its own."""
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise FleetError(
                "the sink and fleet search need the sink extra: "
                "pip install 'edge-embedding-agent[sink]'"
            ) from None

        self.collection = collection
        remote = location.startswith(("http://", "https://"))
        try:
            if remote:
                self.client = QdrantClient(url=location, api_key=os.environ.get(API_KEY_ENV))
            else:
                self.client = QdrantClient(path=location)
        except RuntimeError as exc:  # embedded mode: the folder is locked by another process
            raise FleetError(f"cannot open the Qdrant folder {location}: {exc}") from None
        if not self.client.collection_exists(collection):
            self.client.create_collection(
                collection,
                vectors_config={VECTOR: models.VectorParams(size=dim,
                                                            distance=models.Distance.COSINE)},
            )  # fmt: skip
            if remote:  # embedded mode has no payload indexes (and needs none)
                for key in PAYLOAD_KEYS:
                    self.client.create_payload_index(collection, key, "keyword")
        self.dim = self.client.get_collection(collection).config.params.vectors[VECTOR].size

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Sightings:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, events: Sequence[MatchEvent]) -> int:
        """Upsert events (idempotent by event_id). An event without an embedding, or with one
        of another size, is stored without a vector: found by identity, not by image. Returns
        how many were stored so."""
        from qdrant_client import models

        points, without = [], 0
        for event in events:
            vector = decode_embedding(event.embedding_f16) if event.embedding_f16 else None
            vectors: dict[str, list[float]] = {}
            if vector is not None and vector.size == self.dim:
                vectors[VECTOR] = vector.astype(np.float32).tolist()
            else:
                without += 1
            points.append(models.PointStruct(id=point_id(event.event_id), vector=vectors,
                                             payload=_payload(event)))  # fmt: skip
        if points:
            self.client.upsert(self.collection, points=points, wait=True)
        return without

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def by_image(self, vector: np.ndarray, model: str, limit: int = 10,
                 **where: str | None) -> list[Sighting]:  # fmt: skip
        """Events most like `vector` (same model only), best first."""
        hits = self.client.query_points(
            self.collection,
            query=np.asarray(vector, np.float32).tolist(),
            using=VECTOR,
            limit=limit,
            query_filter=_filter(model=model, **where),
            with_payload=True,
        ).points
        return [_sighting(h.payload, h.score) for h in hits]

    def by_identity(self, identity: str, limit: int = 10, **where: str | None) -> list[Sighting]:
        """Events decided as `identity`, newest first."""
        found: list[Sighting] = []
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, scroll_filter=_filter(identity=identity, **where), limit=1000,
                offset=offset, with_payload=True, with_vectors=False,
            )  # fmt: skip
            found += [_sighting(r.payload, None) for r in records]
            if offset is None:
                break
        return sorted(found, key=lambda s: s.ts, reverse=True)[:limit]


def _payload(event: MatchEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "device_id": event.device_id,
        "source_id": event.source_id,
        "identity": event.identity,
        "score": event.score,
        "track_id": event.track_id,
        "unknown_id": event.unknown_id,
        "ts": event.ts,
        "frame_time_s": event.frame_time_s,
        "model": event.model,
        "gallery_version": event.gallery_version,
        "bbox": event.bbox.model_dump(),
    }


def _filter(**where: str | None):
    from qdrant_client import models

    must = [models.FieldCondition(key=k, match=models.MatchValue(value=v))
            for k, v in where.items() if v is not None]  # fmt: skip
    return models.Filter(must=must) if must else None


def _sighting(payload: dict[str, Any] | None, similarity: float | None) -> Sighting:
    p = payload or {}
    return Sighting(
        event_id=p["event_id"],
        device_id=p["device_id"],
        source_id=p["source_id"],
        identity=p.get("identity"),
        score=p["score"],
        track_id=p.get("track_id"),
        ts=p["ts"],
        frame_time_s=p["frame_time_s"],
        model=p["model"],
        similarity=round(similarity, 4) if similarity is not None else None,
    )

"""The persistent LRU embedding cache: exact round trip, LRU order, bounds, restart."""

import numpy as np

from agent.runtime.cache import EmbeddingCache, cache_key, content_hash


def vec(seed: int, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def test_round_trip_is_exact_and_counts_hits(tmp_path):
    with EmbeddingCache(tmp_path / "c.db") as cache:
        cache.put_many({"a": vec(1), "b": vec(2)})
        got = cache.get_many(["a", "b", "zzz"])
        assert set(got) == {"a", "b"}
        np.testing.assert_array_equal(got["a"], vec(1))
        assert (cache.stats.hits, cache.stats.misses) == (2, 1)
        assert cache.stats.entries == 2


def test_least_recently_used_is_evicted_first(tmp_path):
    with EmbeddingCache(tmp_path / "c.db", max_entries=3) as cache:
        for i, key in enumerate("abc"):
            cache.put_many({key: vec(i)})
        assert cache.get("a") is not None  # a is now the most recently used
        cache.put_many({"d": vec(9)})
        assert cache.stats.evictions == 1
        assert cache.get("b") is None
        assert cache.get("a") is not None and cache.get("c") is not None
        assert cache.stats.entries == 3


def test_byte_bound_evicts(tmp_path):
    per_entry = 64 * 4
    with EmbeddingCache(tmp_path / "c.db", max_bytes=per_entry * 2) as cache:
        for i in range(5):
            cache.put_many({f"k{i}": vec(i, 64)})
        assert cache.stats.entries == 2 and cache.stats.bytes <= per_entry * 2
        assert cache.get("k4") is not None and cache.get("k0") is None


def test_survives_restart(tmp_path):
    with EmbeddingCache(tmp_path / "c.db") as cache:
        cache.put_many({"x": vec(3)})
    with EmbeddingCache(tmp_path / "c.db") as cache:
        assert cache.stats.entries == 1
        np.testing.assert_array_equal(cache.get("x"), vec(3))


def test_keys_separate_content_model_and_flip():
    pixels = np.zeros((4, 6), np.uint8)
    assert content_hash(pixels) != content_hash(pixels.reshape(6, 4))
    assert content_hash(b"abc") == content_hash(b"abc") != content_hash(b"abd")
    h = content_hash(b"abc")
    keys = {cache_key(h, "m1"), cache_key(h, "m2"), cache_key(h, "m1", flip=True)}
    assert len(keys) == 3


def test_state_databases_are_private_to_their_owner(tmp_path):
    """Events, the cache and galleries may hold embeddings and thumbnails of people: 0600."""
    import stat

    from agent.gallery.store import GalleryModel, GallerySettings, GalleryStore
    from agent.publish.outbox import Outbox
    from agent.runtime.cache import EmbeddingCache

    Outbox(tmp_path / "outbox.db").close()
    EmbeddingCache(tmp_path / "cache.db").close()
    GalleryStore.create(tmp_path / "g", GalleryModel("m", "fp32", "f", "0", 4),
                        GallerySettings()).close()  # fmt: skip
    for path in [tmp_path / "outbox.db", tmp_path / "cache.db", tmp_path / "g" / "gallery.db",
                 *tmp_path.glob("*.db-wal")]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

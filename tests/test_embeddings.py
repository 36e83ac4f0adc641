import numpy as np
import pytest

from agent.errors import InputError
from agent.gallery.space import PCAProjection
from agent.runtime.embeddings import from_bytes, to_bytes


def unit_rows(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype, tol", [("float32", 0.0), ("float16", 1e-3)])
def test_binary_roundtrip(dtype, tol):
    emb = unit_rows(5, 12)
    blob = to_bytes(emb, dtype)
    assert len(blob) == 16 + 5 * 12 * np.dtype(dtype).itemsize
    np.testing.assert_allclose(from_bytes(blob), emb, atol=tol)


def test_binary_rejects_bad_blobs():
    blob = to_bytes(unit_rows(2, 4))
    with pytest.raises(InputError):
        from_bytes(blob[:-1])
    with pytest.raises(InputError):
        from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(InputError):
        from_bytes(b"AE")


def test_pca_projection_roundtrip_and_whitening():
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((4, 32))
    x = rng.standard_normal((200, 4)) @ basis + 0.01 * rng.standard_normal((200, 32))
    pca = PCAProjection.fit(x.astype(np.float32), dim=4, whiten=True)
    y = pca.transform(x)
    assert y.shape == (200, 4)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    again = PCAProjection.from_stored(pca.stored())  # what the gallery stores and reads back
    np.testing.assert_allclose(again.transform(x), y, atol=1e-6)
    # Neighbours are preserved through a projection that keeps the signal subspace.
    raw = x / np.linalg.norm(x, axis=1, keepdims=True)
    plain = PCAProjection.fit(raw, dim=4)
    before = np.argsort(-(raw @ raw[0]))[1:6]
    after = np.argsort(-(plain.transform(raw) @ plain.transform(raw[:1])[0]))[1:6]
    assert len(set(before) & set(after)) >= 4
    with pytest.raises(InputError):
        PCAProjection.fit(x, dim=64)

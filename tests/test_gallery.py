"""The gallery: USearch index + SQLite metadata, crash repair, locking, model checks."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agent.gallery.gallery import Gallery
from agent.gallery.store import INDEX_FILE, GalleryError, GalleryModel, GallerySettings, NewVector
from agent.gallery.transfer import import_gallery

DIM = 16
MODEL = GalleryModel("tiny", "fp32", "fp-aaaa", "sha-aaaa", DIM)
PLAIN = GallerySettings(dtype="f32").as_plain()


def clusters(n_ids: int = 6, per_id: int = 5, seed: int = 0, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, DIM))
    items = []
    for i in range(n_ids):
        for j in range(per_id):
            v = centres[i] + noise * rng.standard_normal(DIM)
            items.append(NewVector(f"id{i}", f"/img/id{i}/{j}.jpg", f"h{i}-{j}", unit(v)))
    return centres, items


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def make(path, settings=PLAIN, n_ids=6, per_id=5) -> np.ndarray:
    centres, items = clusters(n_ids, per_id)
    with Gallery.create(path, MODEL, settings) as g:
        g.apply(add=items)
    return centres


def test_search_finds_identity_and_aggregates(tmp_path):
    centres = make(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        assert g.count == 30 and g.version == 1
        results = g.search(np.stack([unit(c) for c in centres]), k=3)
    for i, r in enumerate(results):
        assert r.identities[0].identity == f"id{i}"
        assert r.hits[0].identity == f"id{i}"
        assert r.hits[0].score >= r.hits[1].score >= r.hits[2].score
        assert len({m.identity for m in r.identities}) == len(r.identities)


def test_threshold_filters(tmp_path):
    centres = make(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        r = g.search(unit(centres[0])[None], k=10, threshold=0.9)[0]
    assert r.hits and all(h.score >= 0.9 for h in r.hits)
    assert {h.identity for h in r.hits} == {"id0"}


def test_index_search_agrees_with_exact_scores(tmp_path):
    centres = make(tmp_path / "g", n_ids=20, per_id=10)
    rng = np.random.default_rng(5)
    q = np.stack([unit(c + 0.15 * rng.standard_normal(DIM)) for c in centres for _ in range(2)])
    with Gallery.open(tmp_path / "g") as g:
        scores, ids = g.score_matrix(q, plain=True)
        results = g.search(q, k=1)
    for r, row in zip(results, scores, strict=True):  # approximate, but not by much
        assert r.hits[0].identity == ids[int(row.argmax())]
        assert row.max() - 0.01 <= r.hits[0].score <= row.max() + 1e-5
        assert r.hits[0].score == pytest.approx(row[r.hits[0].key - 1], abs=1e-5)


def test_identity_weight_blends_centroid_score(tmp_path):
    settings = GallerySettings(dtype="f32", flip=False, whiten_dim=0, identity_weight=0.5)
    centres = make(tmp_path / "g", settings)
    with Gallery.open(tmp_path / "g") as g:
        q = unit(centres[2])[None]
        blended = g.search(q, k=1)[0].identities[0]
        raw = g.search(q, k=1, identity_weight=0.0)[0].identities[0]
    assert blended.score == pytest.approx(
        0.5 * blended.best_image_score + 0.5 * blended.centroid_score, abs=1e-5
    )
    assert raw.score == pytest.approx(raw.best_image_score)


def test_reader_uses_memory_mapped_view_and_sees_versions(tmp_path):
    make(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.memory_mapped
        assert reader.repaired is None and reader.version == 1
        with pytest.raises(GalleryError, match="read-only"):
            reader.apply(remove=[1])


def test_second_writer_is_refused_with_pid(tmp_path):
    make(tmp_path / "g")
    with Gallery.open(tmp_path / "g", writable=True):
        with pytest.raises(GalleryError, match=f"pid {os.getpid()}"):
            Gallery.open(tmp_path / "g", writable=True)
        with Gallery.open(tmp_path / "g") as reader:  # readers are fine meanwhile
            assert reader.count == 30


def test_crash_between_metadata_and_index_is_repaired(tmp_path):
    """A process that commits vectors and dies before saving the index (kill -9)."""
    make(tmp_path / "g")
    script = textwrap.dedent(f"""
        import os, numpy as np
        from agent.gallery.gallery import Gallery
        from agent.gallery.store import NewVector
        g = Gallery.open({str(tmp_path / "g")!r}, writable=True)
        v = np.ones({DIM}, np.float32) / {DIM} ** 0.5
        g.apply(add=[NewVector("late", "/img/late.jpg", "h-late", v)])
        os._exit(9)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 9, out.stderr
    q = np.ones((1, DIM), np.float32) / DIM**0.5
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.repaired and "older" in reader.repaired
        assert reader.count == 31
        assert reader.search(q, k=1)[0].identities[0].identity == "late"
    with Gallery.open(tmp_path / "g", writable=True) as writer:
        assert writer.repaired and not writer.memory_mapped  # the writer saves the repair
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.repaired is None
        assert len(reader.index) == 31


def test_calibration_saved_by_an_older_method_is_measured_again(tmp_path, caplog):
    make(tmp_path / "g")
    with Gallery.open(tmp_path / "g", writable=True) as g:
        stale = g.calibration.to_json()
        del stale["method"]
        stale["genuine"] = [[0.99, 0.9, 1.0]] * 12  # what an older method measured
        with g.store.transaction():
            g.store.set_meta(calibration=json.dumps(stale))
    with Gallery.open(tmp_path / "g") as reader:  # a reader measures it for itself
        assert reader.calibration.genuine.shape == (30, 3)
    assert "older agent" in caplog.text and "agent gallery repair" in caplog.text
    with Gallery.open(tmp_path / "g", writable=True) as writer:  # a writer saves it
        assert writer.repaired and "older" in writer.repaired
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.repaired is None
        assert len(json.loads(reader.store.meta_value("calibration"))["genuine"]) == 30


def test_corrupt_index_file_is_rebuilt_not_served(tmp_path):
    centres = make(tmp_path / "g")
    (tmp_path / "g" / INDEX_FILE).write_bytes(b"garbage")
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.repaired
        assert reader.search(unit(centres[1])[None], k=1)[0].identities[0].identity == "id1"


def test_other_model_is_refused_with_reindex_hint(tmp_path):
    make(tmp_path / "g")
    other = GalleryModel("other", "int8", "fp-bbbb", "sha-bbbb", DIM)
    with pytest.raises(GalleryError, match="reindex"):
        Gallery.open_or_create(tmp_path / "g", other, PLAIN)
    with Gallery.open(tmp_path / "g") as g, pytest.raises(GalleryError, match="dimensions"):
        g.search(np.ones((1, DIM + 1), np.float32))


def test_remove_identity_updates_index_and_centroids(tmp_path):
    centres = make(tmp_path / "g")
    with Gallery.open(tmp_path / "g", writable=True) as g:
        assert g.remove_identity("id3") == 5
        with pytest.raises(GalleryError, match="not in gallery"):
            g.remove_identity("id3")
    with Gallery.open(tmp_path / "g") as g:
        assert g.count == 25 and "id3" not in g.space.centroid_ids
        r = g.search(unit(centres[3])[None], k=5)[0]
        assert all(m.identity != "id3" for m in r.identities)


def test_export_import_round_trip(tmp_path):
    centres = make(tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        g.export(tmp_path / "export.db")
        before = g.search(unit(centres[4])[None], k=3)[0]
    g2, added, skipped = import_gallery(tmp_path / "export.db", tmp_path / "g2")
    with g2:
        assert (added, skipped) == (30, 0)
        after = g2.search(unit(centres[4])[None], k=3)[0]
    assert [h.source for h in after.hits] == [h.source for h in before.hits]
    g3, added, skipped = import_gallery(tmp_path / "export.db", tmp_path / "g2")
    with g3:
        assert (added, skipped) == (0, 30)


def test_import_of_a_non_gallery_file_is_refused(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GalleryError, match="not a gallery export"):
        import_gallery(bad, tmp_path / "g")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE meta(key TEXT, value TEXT)").connection.commit()
    with pytest.raises(GalleryError, match="not a gallery export"):
        import_gallery(other, tmp_path / "g")


def test_whitening_applies_only_with_enough_images_and_persists(tmp_path):
    settings = GallerySettings(dtype="f32", flip=False, whiten_dim=4, identity_weight=0.0)
    centres = make(tmp_path / "small", settings, n_ids=3, per_id=5)  # 15 < 4 x 4
    with Gallery.open(tmp_path / "small") as g:
        assert g.projection is None and g.search_dim == DIM
    centres = make(tmp_path / "big", settings, n_ids=6, per_id=5)  # 30 >= 16
    with Gallery.open(tmp_path / "big") as g:
        assert g.projection is not None and g.search_dim == 4 and g.index.ndim == 4
        r = g.search(np.stack([unit(c) for c in centres]), k=1)
    assert [x.identities[0].identity for x in r] == [f"id{i}" for i in range(6)]


def test_invalid_identity_is_refused(tmp_path):
    with Gallery.create(tmp_path / "g", MODEL, PLAIN) as g:
        for name in ("", "a/b", "x\ny", ".."):
            with pytest.raises(GalleryError):
                g.apply(add=[NewVector(name, "/s", "h", unit(np.ones(DIM)))])


def _crafted(export: Path, target: Path, sql: str, *params) -> Path:
    target.write_bytes(export.read_bytes())
    db = sqlite3.connect(target)
    db.execute(sql, params)
    db.commit()
    db.close()
    return target


@pytest.mark.parametrize(
    ("sql", "params", "why"),
    [
        ("UPDATE vectors SET vector=? WHERE key=1", (np.full(DIM, np.nan, "<f4").tobytes(),),
         "not a finite"),
        ("UPDATE vectors SET vector=? WHERE key=2", (np.zeros(DIM, "<f4").tobytes(),), "non-zero"),
        ("UPDATE vectors SET vector=? WHERE key=3", (b"text",), "not a finite"),
        ("UPDATE meta SET value='x' WHERE key='format'", (), "not a gallery export"),
        ("UPDATE meta SET value='-3' WHERE key='dim'", (), "dim -3"),
        ("DELETE FROM meta WHERE key='dim'", (), "missing or malformed"),
        ("UPDATE meta SET value='100000' WHERE key='connectivity'", (), "index settings"),
        ("DROP TABLE vectors", (), "not a gallery export"),
    ],
)  # fmt: skip
def test_crafted_imports_are_refused_whole_and_leave_no_gallery(tmp_path, sql, params, why):
    make(tmp_path / "g", GallerySettings(dtype="f32", flip=False, whiten_dim=0))
    with Gallery.open(tmp_path / "g") as g:
        g.export(tmp_path / "export.db")
    bad = _crafted(tmp_path / "export.db", tmp_path / "bad.db", sql, *params)
    with pytest.raises(GalleryError, match=why):
        import_gallery(bad, tmp_path / "new")
    assert not Gallery.exists(tmp_path / "new")  # nothing half-written
    with Gallery.open(tmp_path / "g", writable=True) as g:  # an existing gallery is untouched
        before = g.count
    with pytest.raises(GalleryError):
        import_gallery(bad, tmp_path / "g")
    with Gallery.open(tmp_path / "g") as g:
        assert g.count == before and np.isfinite(g.search(np.ones((1, DIM)), k=1)[0].hits[0].score)


def test_garbage_inside_the_index_file_is_caught_by_its_checksum(tmp_path):
    """4 kB of garbage over the index (the file still loads) is caught by the checksum saved with
    it: readers serve a rebuilt index, and `gallery repair` saves the repair."""
    centres = make(tmp_path / "g", n_ids=6, per_id=5)
    index = tmp_path / "g" / INDEX_FILE
    data = bytearray(index.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = np.random.default_rng(0).bytes(4096)[
        : len(data) - len(data) // 2
    ]
    index.write_bytes(bytes(data))
    with Gallery.open(tmp_path / "g") as reader:
        assert reader.repaired and "checksum" in reader.repaired
        assert reader.search(unit(centres[2])[None], k=1)[0].identities[0].identity == "id2"
    with Gallery.open(tmp_path / "g", writable=True) as writer:
        assert writer.repaired and "checksum" in writer.repaired
    with Gallery.open(tmp_path / "g") as reader:
        assert not reader.repaired  # saved


def test_damaged_database_pages_are_reported_not_a_traceback(tmp_path):
    from tests.test_cli import one_error_line, run

    make(tmp_path / "g", n_ids=40, per_id=10)
    db = tmp_path / "g" / "gallery.db"
    data = bytearray(db.read_bytes())
    page = 4096 * 3  # past the header and schema pages
    data[page : page + 4096] = b"\xab" * 4096
    db.write_bytes(bytes(data))
    for wal in (tmp_path / "g").glob("gallery.db-*"):
        wal.unlink()
    line = one_error_line(run("gallery", "repair", "-g", str(tmp_path / "g")))
    assert "damaged" in line or "database" in line

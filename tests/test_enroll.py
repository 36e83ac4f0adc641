"""`agent enroll`, `search` and `gallery` as a user runs them (real ONNX model, real files)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent.gallery.gallery import Gallery

from .conftest import photo_like, write_image
from .test_cli import one_error_line, run


def make_dir(root, ids=("alice", "bob", "carol"), per_id=3, seed=0):
    for i, name in enumerate(ids):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_id):
            write_image(root / name / f"{j}.png", photo_like(seed + 100 * i + j))
    return root


def enroll(*args):
    out = run("enroll", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_enroll_is_idempotent_and_restart_needs_no_inference(tmp_path, tiny_model):
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    first = enroll(str(images), "-g", g, "-m", "tiny")
    assert (first["added"], first["failed"], first["identities"]) == (9, 0, 3)
    assert first["inferences"] == 9
    again = enroll(str(images), "-g", g, "-m", "tiny")  # a new process: nothing to do
    assert (again["added"], again["unchanged"], again["inferences"]) == (0, 9, 0)
    assert again["gallery_version"] == first["gallery_version"]
    # A fresh gallery from the same files is served by the persistent cache.
    other = enroll(str(images), "-g", str(tmp_path / "g2"), "-m", "tiny")
    assert (other["added"], other["inferences"], other["cache_hits"]) == (9, 0, 9)


def test_changed_new_corrupt_and_duplicate_files(tmp_path, tiny_model):
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    enroll(str(images), "-g", g, "-m", "tiny")
    write_image(images / "alice" / "0.png", photo_like(99))  # changed content
    write_image(images / "bob" / "9.png", photo_like(98))  # new
    (images / "carol" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (images / "bob" / "copy.png").write_bytes((images / "bob" / "1.png").read_bytes())
    (images / "alice" / "bobs.png").write_bytes((images / "bob" / "2.png").read_bytes())
    (images / "dave").mkdir()
    report = enroll(str(images), "-g", g, "-m", "tiny")
    kinds = {p["kind"] for p in report["problems"]}
    assert report["updated"] == 1 and report["added"] == 2  # bob/9 and alice/bobs
    assert report["failed"] == 1 and report["skipped_duplicates"] == 1
    assert {"corrupt", "duplicate", "same-as-other-identity", "empty-folder"} <= kinds
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.count == 11 and len(gallery.index) == 11


def test_dry_run_prune_and_replace(tmp_path, tiny_model):
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    base = enroll(str(images), "-g", g, "-m", "tiny")
    (images / "alice" / "2.png").unlink()
    write_image(images / "alice" / "7.png", photo_like(77))
    dry = enroll(str(images), "-g", g, "-m", "tiny", "--dry-run", "--prune")
    assert (dry["added"], dry["removed"], dry["gallery_version"]) == (1, 1, base["gallery_version"])
    changes = {(action, identity, Path(path).name) for action, identity, path in dry["changes"]}
    assert changes == {("add", "alice", "7.png"), ("remove", "alice", "2.png")}
    shown = run("enroll", str(images), "-g", g, "-m", "tiny", "--dry-run", "--prune").stdout
    assert "would add: alice" in shown and "7.png" in shown and "would remove: alice" in shown
    pruned = enroll(str(images), "-g", g, "-m", "tiny", "--prune")
    assert (pruned["added"], pruned["removed"], pruned["gallery_vectors"]) == (1, 1, 9)
    # --replace: an identity keeps exactly what its folder holds now, even from elsewhere.
    alt = make_dir(tmp_path / "alt", ids=("alice",), per_id=2, seed=500)
    replaced = enroll(str(alt), "-g", g, "-m", "tiny", "--replace")
    assert (replaced["added"], replaced["removed"]) == (2, 3)
    with Gallery.open(tmp_path / "g") as gallery:
        sources = [e.source for e in gallery.entries("alice")]
    assert len(sources) == 2 and all("/alt/alice/" in s for s in sources)


def test_layout_errors_are_one_line(tmp_path, tiny_model):
    flat = tmp_path / "flat"
    flat.mkdir()
    write_image(flat / "alice_001.png", photo_like(1))
    write_image(flat / "alice_002.png", photo_like(2))
    write_image(flat / "bob-1.png", photo_like(3))
    assert "--id-from filename" in one_error_line(run("enroll", str(flat), "-m", "tiny"))
    report = enroll(str(flat), "-g", str(tmp_path / "g"), "-m", "tiny", "--id-from", "filename")
    assert (report["added"], report["identities"]) == (3, 2)
    nested = make_dir(tmp_path / "nested")
    (nested / "alice" / "more").mkdir()
    write_image(nested / "alice" / "more" / "x.png", photo_like(5))
    assert "--recursive" in one_error_line(run("enroll", str(nested), "-m", "tiny"))
    deep = enroll(str(nested), "-g", str(tmp_path / "g3"), "-m", "tiny", "--recursive")
    assert deep["added"] == 10
    assert "not a directory" in one_error_line(run("enroll", str(tmp_path / "nope")))


def test_other_model_is_refused_and_reindex_switches(tmp_path, tiny_model):
    from agent.runtime.registry import sha256_file

    from .conftest import build_tiny_image_model, tiny_manifest_text

    onnx = build_tiny_image_model(tiny_model / "tiny2.onnx", seed=7)
    (tiny_model / "tiny2.toml").write_text(
        tiny_manifest_text("tiny2", "tiny2.onnx", sha=sha256_file(onnx))
    )
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    enroll(str(images), "-g", g, "-m", "tiny")
    line = one_error_line(run("enroll", str(images), "-g", g, "-m", "tiny2"))
    assert "tiny:fp32" in line and "reindex" in line
    out = run("gallery", "reindex", "-g", g, "-m", "tiny2")
    assert out.returncode == 0, out.stderr
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.model.name == "tiny2" and gallery.count == 9
    again = enroll(str(images), "-g", g)  # the gallery's own model is the default
    assert (again["unchanged"], again["model"]) == (9, "tiny2:fp32")


def test_search_and_gallery_commands(tmp_path, tiny_model):
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    enroll(str(images), "-g", g, "-m", "tiny")
    out = run("search", str(images / "bob" / "1.png"), "-g", g, "-k", "2", "--json")
    assert out.returncode == 0, out.stderr
    query = json.loads(out.stdout)["queries"][0]
    assert query["identities"][0]["identity"] == "bob"
    assert query["hits"][0]["source"].endswith("bob/1.png")
    listed = json.loads(run("gallery", "list", "-g", g, "--json").stdout)
    assert [r["identity"] for r in listed] == ["alice", "bob", "carol"]
    assert run("gallery", "remove", "bob", "-g", g).returncode == 0
    stats = json.loads(run("gallery", "stats", "-g", g, "--json").stdout)
    assert (stats["vectors"], stats["identities"]) == (6, 2)
    assert run("gallery", "export", str(tmp_path / "x.db"), "-g", g).returncode == 0
    assert (
        run("gallery", "import", str(tmp_path / "x.db"), "-g", str(tmp_path / "h")).returncode == 0
    )
    copy = json.loads(run("gallery", "stats", "-g", str(tmp_path / "h"), "--json").stdout)
    assert copy["vectors"] == 6
    assert "no gallery" in one_error_line(
        run("search", str(images / "bob" / "1.png"), "-g", str(tmp_path / "none"))
    )
    assert "not both" in one_error_line(run("search", "-g", g))


def test_kill_9_during_enrollment_then_rerun_is_consistent(tmp_path):
    """Real bundled model, 320 images: SIGKILL after the first committed chunk."""
    images = make_dir(tmp_path / "imgs", ids=[f"p{i:02d}" for i in range(16)], per_id=20)
    g = tmp_path / "g"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "enroll", str(images), "-g", str(g), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            db = sqlite3.connect(f"file:{g / 'gallery.db'}?mode=ro", uri=True)
            committed = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
            db.close()
        except sqlite3.Error:
            committed = 0
        if committed:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "enrollment finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Gallery.open(g) as gallery:  # a reader after the crash: repaired in memory
        count = gallery.count
        assert 0 < count < 320 and gallery.repaired
        assert len(gallery.index) == count
    report = enroll(str(images), "-g", str(g))
    assert report["unchanged"] == count and report["added"] == 320 - count
    with Gallery.open(g) as gallery:
        assert gallery.repaired is None and gallery.count == 320
        keys, _, raw = gallery.raw_vectors()
        assert len(gallery.index) == 320 and all(gallery.index.contains(int(k)) for k in keys)
        r = gallery.search(raw[:5], k=1, identity_weight=0.0)
    assert [x.hits[0].key for x in r] == [int(k) for k in keys[:5]]


def test_prune_keeps_vectors_from_elsewhere_and_broken_links_are_listed(tmp_path, tiny_model):
    images = make_dir(tmp_path / "imgs")
    other = make_dir(tmp_path / "other", ids=("dave",), per_id=2, seed=300)
    g = str(tmp_path / "g")
    enroll(str(images), "-g", g, "-m", "tiny")
    enroll(str(other), "-g", g, "-m", "tiny")
    (other / "dave" / "0.png").unlink()  # gone, but not under the folder being pruned
    (images / "bob" / "1.png").unlink()
    (images / "bob" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (images / "carol" / "loop.png").symlink_to(images / "carol" / "loop.png")
    report = enroll(str(images), "-g", g, "-m", "tiny", "--prune")
    assert report["removed"] == 1 and report["gallery_vectors"] == 10
    kinds = [p["kind"] for p in report["problems"]]
    assert kinds.count("broken-link") == 2
    with Gallery.open(tmp_path / "g") as gallery:
        assert len(gallery.entries("dave")) == 2


def test_reindex_refuses_sources_that_are_not_regular_files(tmp_path, tiny_model):
    """A source replaced by a device (/dev/zero: endless bytes) is not read: refused, or dropped
    with --drop-missing; the rest is re-embedded."""
    images = make_dir(tmp_path / "imgs")
    g = str(tmp_path / "g")
    enroll(str(images), "-g", g, "-m", "tiny")
    victim = images / "bob" / "0.png"
    victim.unlink()
    victim.symlink_to("/dev/zero")
    line = one_error_line(run("gallery", "reindex", "-g", g))
    assert "not regular files" in line
    out = run("gallery", "reindex", "-g", g, "--drop-missing")
    assert out.returncode == 0 and "dropped 1" in out.stdout, out.stderr
    with Gallery.open(tmp_path / "g") as gallery:
        assert gallery.count == 8

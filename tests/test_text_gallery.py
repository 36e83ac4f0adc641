"""Text search end to end: captions (DIR/<identity>/*.txt) enrolled with the real MiniLM-L6,
found by `agent search --text`, kept in line with the files on re-runs."""

from __future__ import annotations

import json
import shutil

from tests.agent_support import EXAMPLES
from tests.test_cli import one_error_line, run


def search(gallery, *texts: str) -> list[list[str]]:
    args = [a for t in texts for a in ("--text", t)]
    out = run("search", *args, "-g", str(gallery), "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    return [[m["identity"] for m in q["identities"]] for q in json.loads(out.stdout)["queries"]]


def enroll(folder, gallery, *args: str) -> dict:
    out = run("enroll", str(folder), "-g", str(gallery), *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_captions_enroll_and_text_queries_find_identities(tmp_path, shared_models):
    captions = tmp_path / "captions"
    shutil.copytree(EXAMPLES / "captions", captions)
    gallery = tmp_path / "g"
    first = enroll(captions, gallery, "--model", "minilm_l6")
    assert (first["added"], first["identities"], first["model"]) == (24, 8, "minilm_l6:int8")
    found = search(gallery, "oat milk", "orange juice for breakfast", "soya drink")
    assert [f[0] for f in found] == ["Oatly-Oat-Milk", "God-Morgon-Orange-Juice",
                                     "Alpro-Fresh-Soy-Milk"]  # fmt: skip
    assert enroll(captions, gallery)["unchanged"] == 24  # the gallery's own model, no changes
    caption = captions / "Oatly-Oat-Milk" / "captions.txt"
    lines = caption.read_text().splitlines()
    caption.write_text("\n".join([lines[0], "barista oat drink for coffee", lines[2]]) + "\n")
    (captions / "Arla-Sour-Cream" / "captions.txt").unlink()
    (captions / "Arla-Sour-Cream" / "more.txt").write_text("thick cream for baking\n")
    again = enroll(captions, gallery)
    assert (again["added"], again["updated"], again["removed"]) == (1, 1, 3)
    assert search(gallery, "something for my coffee")[0][0] == "Oatly-Oat-Milk"


def test_a_text_model_on_a_folder_without_captions_leaves_nothing(tmp_path, shared_models):
    gallery = tmp_path / "g"
    line = one_error_line(run("enroll", str(EXAMPLES / "gallery"), "-g", str(gallery),
                              "--model", "minilm_l6"))  # fmt: skip
    assert "no captions" in line and not gallery.exists()


def test_fusion_follows_each_modality_at_the_extremes_and_combines_between():
    from agent.gallery.scoring import IdentityMatch, SearchResult, fuse

    def result(**scores: float) -> SearchResult:
        return SearchResult([], [IdentityMatch(k, v, v, v) for k, v in scores.items()])

    image = result(a=0.9, b=0.85, c=0.2)
    text = result(b=0.6, c=0.5, d=0.1)  # `a` not returned: it gets the text's lowest score
    assert [m.identity for m in fuse(image, text, 1.0)][:3] == ["a", "b", "c"]
    assert fuse(image, text, 0.0)[0].identity == "b"
    assert fuse(image, text, 0.5)[0].identity == "b"  # close on the image, clear on the text
    assert {m.identity for m in fuse(image, text, 0.5)} == {"a", "b", "c", "d"}


def test_an_image_and_a_text_query_together(tmp_path, shared_models, gallery):
    captions = tmp_path / "captions_gallery"
    enroll(EXAMPLES / "captions", captions, "--model", "minilm_l6")
    photo = EXAMPLES / "gallery" / "Valio-Vanilla-Yoghurt" / "Valio-Vanilla-Yoghurt_001.jpg"
    out = run("search", str(photo), "--text", "a yoghurt", "--captions", str(captions),
              "-g", str(gallery), "-k", "3", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (query,) = json.loads(out.stdout)["queries"]
    ranked = [m["identity"] for m in query["identities"]]
    assert ranked[0] == "Valio-Vanilla-Yoghurt" and ranked[1] == "Yoggi-Strawberry-Yoghurt"
    both = one_error_line(run("search", str(photo), "--text", "x", "-g", str(gallery)))
    assert "--captions" in both

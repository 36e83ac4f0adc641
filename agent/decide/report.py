"""`agent eval --report FILE.html`: the evaluation as pictures, in one self-contained HTML file
(inline SVG, no scripts, no external assets): each query's best same-identity score against its
best other-identity score as two histograms, the precision-recall curve of the top identity's
score with the configured match threshold marked, and a per-identity table."""

from __future__ import annotations

import html
from collections import defaultdict

import numpy as np

W, H, PAD = 560, 240, 36


def query_scores(scores: np.ndarray, gallery_ids, truth) -> dict:
    """Per query: the best score of its own identity's images (genuine) and of any other's
    (impostor), and the top identity with its score."""
    gallery_ids = np.asarray(gallery_ids)
    genuine, impostor, top, top_id = [], [], [], []
    for row, t in zip(scores, truth, strict=True):
        same = gallery_ids == t
        genuine.append(float(row[same].max()) if same.any() else float("nan"))
        impostor.append(float(row[~same].max()) if (~same).any() else float("nan"))
        best = int(np.argmax(row))
        top.append(float(row[best]))
        top_id.append(str(gallery_ids[best]))
    return {"genuine": genuine, "impostor": impostor, "top": top, "top_identity": top_id,
            "truth": list(truth)}  # fmt: skip


def _histograms(genuine: list[float], impostor: list[float], marks: dict[str, float]) -> str:
    g = np.array([x for x in genuine if np.isfinite(x)])
    i = np.array([x for x in impostor if np.isfinite(x)])
    values = np.concatenate([g, i, list(marks.values())])
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi + 1e-9, 41)
    hg, _ = np.histogram(g, edges)
    hi_, _ = np.histogram(i, edges)
    peak = max(int(hg.max(initial=0)), int(hi_.max(initial=0)), 1)
    bw = (W - 2 * PAD) / 40

    def x(v: float) -> float:
        return PAD + (v - lo) / (hi - lo + 1e-12) * (W - 2 * PAD)

    parts = [f'<svg width="{W}" height="{H}" role="img" aria-label="score histograms">']
    for counts, colour in ((hi_, "#d9534f"), (hg, "#2e7d32")):
        for k, n in enumerate(counts):
            h = (H - 2 * PAD) * n / peak
            parts.append(f'<rect x="{PAD + k * bw:.1f}" y="{H - PAD - h:.1f}" width="{bw:.1f}" '
                         f'height="{h:.1f}" fill="{colour}" fill-opacity="0.55"/>')  # fmt: skip
    for name, v in marks.items():
        label = f"{html.escape(name)} {v:.3f}"
        parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{PAD - 10}" y2="{H - PAD}" '
                     f'stroke="#1a237e" stroke-dasharray="4 3"/><text x="{x(v) + 3:.1f}" '
                     f'y="{PAD - 12}" font-size="11">{label}</text>')  # fmt: skip
    parts += _axes(lo, hi, "score", peak, "queries")
    parts.append(f'<text x="{PAD}" y="16" font-size="12"><tspan fill="#2e7d32">&#9632; best '
                 'same-identity score</tspan> <tspan fill="#d9534f">&#9632; best other-identity '
                 "score</tspan></text></svg>")  # fmt: skip
    return "".join(parts)


def _pr_curve(top: list[float], right: list[bool], policy: dict) -> str:
    """The curve of a threshold on the top identity's score alone, and the configured policy's
    own operating point (threshold and margin) on it."""
    order = np.argsort(-np.array(top), kind="stable")
    hits = np.cumsum(np.array(right)[order])
    n = np.arange(1, len(order) + 1)
    precision, recall = hits / n, hits / max(len(order), 1)
    pts = " ".join(f"{PAD + r * (W - 2 * PAD):.1f},{H - PAD - p * (H - 2 * PAD):.1f}"
                   for p, r in zip(precision, recall, strict=True))  # fmt: skip
    rule = policy["rule"]
    mx = PAD + policy["recall"] * (W - 2 * PAD)
    my = H - PAD - policy["precision"] * (H - 2 * PAD)
    anchor, dx = ("end", -8) if mx > W / 2 else ("start", 8)
    label = (f"match policy (score {rule['match_score']:.3f}, margin {rule['min_margin']:.3f}): "
             f"P {policy['precision']:.3f}, R {policy['recall']:.3f}")  # fmt: skip
    return (f'<svg width="{W}" height="{H}" role="img" aria-label="precision-recall curve">'
            f'<polyline points="{pts}" fill="none" stroke="#1565c0" stroke-width="2"/>'
            f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="5" fill="#1a237e"/>'
            f'<text x="{mx + dx:.1f}" y="{my + 18:.1f}" font-size="11" text-anchor="{anchor}">'
            f"{label}</text>"
            + "".join(_axes(0, 1, "recall (top identity right, at or above a threshold)", 1,
                            "precision", fractions=True)) + "</svg>")  # fmt: skip


def _axes(lo, hi, xlabel, ymax, ylabel, fractions: bool = False) -> list[str]:
    out = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#555"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#555"/>',
           f'<text x="{W / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{xlabel}</text>',
           f'<text x="10" y="{H / 2}" font-size="11" transform="rotate(-90 10 {H / 2})" '
           f'text-anchor="middle">{ylabel}</text>']  # fmt: skip
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        xx = PAD + (W - 2 * PAD) * k / 4
        out.append(f'<text x="{xx:.1f}" y="{H - PAD + 13}" font-size="10" '
                   f'text-anchor="middle">{v:.2f}</text>')  # fmt: skip
    top = "1.0" if fractions else str(ymax)
    out.append(f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="10" text-anchor="end">{top}</text>')
    return out


def render(metrics: dict, data: dict) -> str:
    """The HTML page of one `agent eval` run."""
    rule = metrics["policy"]["rule"]
    marks = {"match": rule["match_score"]}
    if rule["unknown_below"] != rule["match_score"]:
        marks["unknown below"] = rule["unknown_below"]
    right = [t == p for t, p in zip(data["truth"], data["top_identity"], strict=True)]
    rows = defaultdict(list)
    for t, ok, s in zip(data["truth"], right, data["top"], strict=True):
        rows[t].append((ok, s))
    table = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{len(v)}</td>"
        f"<td>{np.mean([ok for ok, _ in v]):.2f}</td><td>{np.mean([s for _, s in v]):.3f}</td></tr>"
        for name, v in sorted(rows.items(), key=lambda kv: np.mean([ok for ok, _ in kv[1]]))
    )
    summary = " · ".join(f"{k} {metrics[k]}" for k in metrics if k.startswith("recall@"))
    policy = metrics["policy"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>agent eval: {html.escape(metrics["model"])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:.25em .8em;border-bottom:1px solid #ddd;
text-align:left}}h2{{font-size:1.05em;margin-top:1.6em}}</style></head><body>
<h1>agent eval</h1>
<p>{html.escape(metrics["model"])}: {metrics["queries"]} queries against
{metrics["gallery_images"]} gallery images. {summary} · mAP {metrics["mAP"]}.
Match policy (as <code>agent run</code>): precision {policy["precision"]}, recall
{policy["recall"]} (best possible at the target precision: {policy["oracle_recall"]}).</p>
<h2>Scores: each query's best same-identity vs best other-identity image</h2>
{_histograms(data["genuine"], data["impostor"], marks)}
<h2>Precision and recall of the top identity, by threshold</h2>
{_pr_curve(data["top"], right, policy)}
<h2>Per identity (hardest first)</h2>
<table><thead><tr><th>identity</th><th>queries</th><th>top-1 right</th><th>mean top score</th>
</tr></thead><tbody>{table}</tbody></table></body></html>
"""

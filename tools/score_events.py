"""Score `agent run` match events (JSON lines) against a per-frame ground truth CSV.

Usage: python tools/score_events.py EVENTS.jsonl GROUND_TRUTH.csv [--source ID] [--every N]
Prints every Nth event as a table (frame, identity, score, truth) and the per-frame accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=Path)
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("--source", help="Only events of this source_id.")
    parser.add_argument("--every", type=int, default=10, help="Show every Nth event.")
    args = parser.parse_args()

    with open(args.ground_truth, newline="") as fh:
        truth = {int(r["frame"]): r["identity"] for r in csv.DictReader(fh)}
    events = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
    events = [e for e in events if e.get("type") == "match"]
    if args.source:
        events = [e for e in events if e["source_id"] == args.source]

    table = Table(title=f"{len(events)} match events from {args.events.name}")
    for col in ("frame", "identity", "score", "truth", "", "e2e ms"):
        table.add_column(col)
    correct = wrong = unknown = 0
    frames = set()
    for n, event in enumerate(events):
        frame, predicted = event["frame_index"], event["identity"]
        true = truth.get(frame, "?")
        hit = predicted == true
        if frame not in frames:
            frames.add(frame)
            correct += hit
            unknown += predicted is None
            wrong += predicted is not None and not hit
        if n % args.every == 0:
            table.add_row(
                str(frame),
                predicted or "(unknown)",
                f"{event['score']:.3f}",
                true,
                "[green]ok[/]" if hit else "[red]miss[/]",
                f"{event['latency_ms'].get('e2e', float('nan')):.0f}",
            )
    console = Console()
    console.print(table)
    if frames:
        decided = correct + wrong
        console.print(
            f"{len(frames)} of {len(truth)} frames got an event: {correct} right, {wrong} wrong "
            f"identity, {unknown} unknown; precision {correct / max(decided, 1):.1%} (frames "
            "without an event were ambiguous under the calibrated thresholds)"
        )


if __name__ == "__main__":
    main()

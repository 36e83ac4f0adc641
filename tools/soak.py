"""Memory soak: the agent on a looped clip for N minutes, RSS sampled from its status file.

Usage: python tools/soak.py [--clip ../shared/data/frames/real_video/vtest.avi]
           [--minutes 10] [--warmup 1] [--model mobilenetv2 --variant int8] [--sources 1]

Prints RSS after warm-up, at the end, the growth in percent (target < 5%), and frames done.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from agent_workspace import DEFAULT_CLIP, enroll_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0, help="Minutes before the baseline.")
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--sources", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env, gallery = enroll_examples(work, args.model, args.variant)
        state = work / "state"
        cfg = {
            "state_dir": str(state),
            "device_id": "soak",
            "gallery": {"path": str(gallery)},
            "metrics": {"interval_s": 5.0},
            "match": {"cooldown_s": 5.0},
            "sources": [
                {"id": f"cam{i}", "uri": str(args.clip), "loop": True, "realtime": True}
                for i in range(args.sources)
            ],
        }
        (work / "soak.toml").write_text(tomli_w.dumps(cfg))
        with open(work / "events.jsonl", "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "-q", "-c", str(work / "soak.toml"), "run"],
                env=env,
                stdout=sink,
            )
            samples: list[tuple[float, float, int]] = []
            started = time.monotonic()
            try:
                while time.monotonic() - started < args.minutes * 60:
                    time.sleep(5)
                    if proc.poll() is not None:
                        raise SystemExit(f"agent exited with {proc.returncode}")
                    try:
                        m = json.loads((state / "status.json").read_text())["metrics"]
                    except (OSError, json.JSONDecodeError):
                        continue
                    done = sum(
                        s["frames_processed"] + s["frames_reused"] for s in m["sources"].values()
                    )
                    samples.append((time.monotonic() - started, m["rss_mb"], done))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    base = next(s for s in samples if s[0] >= args.warmup * 60)
    end = samples[-1]
    peak = max(s[1] for s in samples if s[0] >= args.warmup * 60)
    growth = 100 * (end[1] - base[1]) / base[1]
    print(
        f"{args.minutes:.0f} min, {args.sources} x {args.clip.name} looped at its frame rate, "
        f"{args.model}:{args.variant}"
    )
    print(
        f"RSS after {args.warmup:.0f} min warm-up: {base[1]:.1f} MB; end: {end[1]:.1f} MB; "
        f"peak {peak:.1f} MB; growth {growth:+.2f}% (target < 5%)"
    )
    print(f"frames done: {end[2]} ({end[2] / end[0]:.1f} fps)")
    for t, rss, done in samples[:: max(1, len(samples) // 10)]:
        print(f"  t={t:6.0f}s rss={rss:7.1f} MB frames={done}")


if __name__ == "__main__":
    main()

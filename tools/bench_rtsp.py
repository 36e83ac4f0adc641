"""Several RTSP cameras at once: N sources reading one real RTSP server (tools/rtsp_server.py,
GstRtspServer, run by the system python3), the agent with its default config otherwise.

    python tools/bench_rtsp.py [--sources 4] [--seconds 30] [--fps 10] [--size 640x480]
                               [--mode frame|person] [--gallery DIR]

Reported from the agent's last report: frames in and processed per second per source, frames
dropped, reconnects, and the end-to-end latency p50/p95 (capture to event, ms) and the
embedding p50 per batch.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--mode", default="frame", choices=["frame", "person"])
    ap.add_argument("--gallery", type=Path, help="Enrolled gallery (default: examples/gallery).")
    ap.add_argument(
        "--every-frame",
        action="store_true",
        help="Embed and judge every frame (change_threshold = 0, cooldown_s = 0): the full load.",
    )
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(["/usr/bin/python3", str(REPO / "tools" / "rtsp_server.py"),
                               str(port), "--fps", str(args.fps), "--size", args.size],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            gallery = args.gallery or work / "gallery"
            if args.gallery is None:
                subprocess.run([sys.executable, "-m", "agent", "-q", "enroll",
                                str(REPO / "examples" / "gallery"), "-g", str(gallery)],
                               check=True, capture_output=True)  # fmt: skip
            url = f"rtsp://127.0.0.1:{port}/cam"
            cams = [{"id": f"cam{i}", "uri": url} for i in range(args.sources)]
            detect: dict = {"mode": args.mode}
            config = {"state_dir": str(work / "state"), "gallery": {"path": str(gallery)},
                      "detect": detect, "metrics": {"interval_s": 1.0},
                      "sources": cams}  # fmt: skip
            if args.every_frame:
                detect["change_threshold"] = 0.0
                config["match"] = {"cooldown_s": 0.0}
            path = work / "agent.toml"
            path.write_text(tomli_w.dumps(config))
            agent = subprocess.Popen([sys.executable, "-m", "agent", "-q", "-c", str(path),
                                      "run", "--duration", str(args.seconds)],
                                     stdout=subprocess.DEVNULL)  # fmt: skip
            agent.wait(args.seconds + 60)
            record = json.loads((work / "state" / "status.json").read_text())
    finally:
        server.kill()
    m = record["metrics"]
    sources = {sid: {"fps_in": s["fps_in"], "fps_processed": s["fps_processed"],
                     "frames_in": s["frames_in"], "dropped": s["frames_dropped"],
                     "reconnects": s["reconnects"], "health": s["health"]}
               for sid, s in m["sources"].items()}  # fmt: skip
    latency = m["latency_ms"]
    print(json.dumps({
        "sources": sources,
        "fps_processed_total": round(sum(s["fps_processed"] for s in sources.values()), 1),
        "dropped_total": sum(s["dropped"] for s in sources.values()),
        "e2e_ms": latency.get("e2e"), "embed_ms_per_batch": latency.get("embed"),
        "events": m["events_produced"], "detect_calls": m["detect_batches"],
        "mode": args.mode, "every_frame": args.every_frame, "seconds": args.seconds,
        "camera_fps": args.fps, "size": args.size,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

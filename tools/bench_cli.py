"""How fast the CLI answers, as a user times it: process wall clock, medians of N runs.

    python tools/bench_cli.py [--runs 5] [--gallery-dir ../shared/data/retrieval/gallery]

Measures, in one run on one machine:
  * the floor: importing pydantic + pydantic-settings, then typer and rich, then the config;
  * start-up: `agent --version`, `agent --help`, `agent status` (reading the status file a short
    real `agent run` left), `agent gallery list` (720-image gallery); `python -c pass` for scale;
  * enrollment as processes: first enrollment of the folder vs the same command again
    (unchanged files: hashed and compared, no inference), their ratio, and the re-run's own
    work as the command reports it (without interpreter start-up and imports);
  * `agent enroll --plain` images/s vs a plain onnxruntime loop over the same files (read,
    decode, the manifest's preprocessing, session.run in batches of models.max_batch), same
    model file and thread count, interleaved so both see the same load.
Prints a JSON report (and a markdown table with --markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AGENT = [sys.executable, "-m", "agent"]
FLOOR = {
    "import pydantic, pydantic_settings": "import pydantic, pydantic_settings",
    "+ typer, rich.table": "import pydantic, pydantic_settings, typer, rich.table",
    "agent.config + load_config": "from agent.config import load_config; load_config(None)",
}


def wall(cmd: list[str], env: dict, ok=(0,)) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr[-2000:]}")
    return seconds


def median_wall(cmd: list[str], env: dict, runs: int, ok=(0,)) -> dict:
    times = [wall(cmd, env, ok) for _ in range(runs)]
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "runs": runs}  # fmt: skip


def plain_onnxruntime_loop(files: list[Path], model: str, variant: str, env: dict) -> float:
    """images/s of the loop a user would write, as a whole process (like `agent enroll`)."""
    code = f"""
import os, sys
import numpy as np, onnxruntime as ort, cv2
from agent.config import load_config
from agent.runtime.registry import ModelRegistry
from agent.runtime.preprocess import Preprocessor
cfg = load_config(None)
m = ModelRegistry.from_config(cfg).resolve({model!r}, {variant!r})
pre = Preprocessor(m.manifest.image)
opts = ort.SessionOptions()
opts.intra_op_num_threads = cfg.models.intra_threads or (os.cpu_count() or 1)
sess = ort.InferenceSession(str(m.path), opts, providers=["CPUExecutionProvider"])
files = sys.stdin.read().split("\\n")
batch = cfg.models.max_batch
out = []
for i in range(0, len(files), batch):
    tensors = []
    for f in files[i:i + batch]:
        data = np.fromfile(f, np.uint8)
        pixels = cv2.imdecode(data, cv2.IMREAD_COLOR)
        tensors.append(pre(pixels, "BGR"))
    out.append(sess.run([m.manifest.output], {{m.manifest.image.name: np.stack(tensors)}})[0])
"""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], input="\n".join(map(str, files)),
                   env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return len(files) / (time.perf_counter() - t0)


def enroll_rate(folder: Path, gallery: Path, model: str, variant: str, env: dict) -> float:
    """images/s of a whole `agent enroll --plain` process (start-up included)."""
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    seconds = wall([*AGENT, "-q", "enroll", str(folder), "-g", str(gallery), "-m", model,
                    "--variant", variant, "--plain", "--json"], env)  # fmt: skip
    return files / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gallery-dir", type=Path, default=SHARED / "data/retrieval/gallery")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    folder = args.gallery_dir.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    report: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "runs": args.runs,
                    "gallery_dir": str(folder), "images": len(files)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        state = Path(tmp)
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(state / "xdg"),
            "AGENT_STATE_DIR": str(state / "state"),
            "AGENT_MODELS_DIR": os.environ.get("AGENT_MODELS_DIR", str(SHARED / "models")),
            "AGENT_MODELS__DEFAULT": args.model,
            "AGENT_MODELS__VARIANT": args.variant,
        }
        gallery = state / "gallery"
        report["python_pass"] = median_wall([sys.executable, "-c", "pass"], env, args.runs)
        # The floor under every command: the libraries the CLI is built on, imported alone.
        report["floor"] = {
            name: median_wall([sys.executable, "-c", code], env, args.runs)
            for name, code in FLOOR.items()
        }

        # Enrollment: first run, then the unchanged re-run (a new process each time).
        first = wall([*AGENT, "-q", "enroll", str(folder), "-g", str(gallery), "--json"], env)
        rerun = median_wall([*AGENT, "-q", "enroll", str(folder), "-g", str(gallery), "--json"],
                            env, args.runs)  # fmt: skip
        report["enroll_first_s"] = round(first, 3)
        report["enroll_unchanged_rerun"] = rerun
        report["enroll_rerun_speedup"] = round(first / rerun["median_s"], 1)
        again = subprocess.run([*AGENT, "-q", "enroll", str(folder), "-g", str(gallery), "--json"],
                               env=env, capture_output=True, text=True, check=True)  # fmt: skip
        report["enroll_rerun_work_s"] = round(json.loads(again.stdout)["seconds"], 3)  # in-process

        # A status file from a real (short) run, for `agent status` to read.
        clip = REPO / "examples/camera.mp4"
        wall([*AGENT, "-q", "run", "-g", str(gallery), "-s", f"cam={clip}", "--fast",
              "--duration", "3"], env)  # fmt: skip
        env_g = {**env, "AGENT_GALLERY__PATH": str(gallery)}
        report["startup"] = {
            "agent --version": median_wall([*AGENT, "--version"], env, args.runs),
            "agent --help": median_wall([*AGENT, "--help"], env, args.runs),
            "agent status": median_wall([*AGENT, "status"], env_g, args.runs, ok=(0, 3)),
            "agent gallery list": median_wall([*AGENT, "gallery", "list"], env_g, args.runs),
        }

        # enroll --plain vs a plain onnxruntime loop, interleaved, fresh gallery and cache each.
        agent_rates, loop_rates = [], []
        for i in range(args.runs):
            run_env = {**env, "XDG_DATA_HOME": str(state / f"xdg{i}"),
                       "AGENT_STATE_DIR": str(state / f"state{i}")}  # fmt: skip
            loop_rates.append(plain_onnxruntime_loop(files, args.model, args.variant, run_env))
            agent_rates.append(enroll_rate(folder, state / f"plain{i}", args.model,
                                           args.variant, run_env))  # fmt: skip
        report["enroll_plain_images_per_s"] = round(statistics.median(agent_rates), 1)
        report["onnxruntime_loop_images_per_s"] = round(statistics.median(loop_rates), 1)
        report["enroll_vs_loop"] = round(
            statistics.median(a / b for a, b in zip(agent_rates, loop_rates, strict=True)), 3
        )
    print(json.dumps(report, indent=2))
    if args.markdown:
        print("\n| command | median s | min s |\n|---|---|---|")
        rows = {"python -c pass": report["python_pass"], **report["floor"], **report["startup"],
                "enroll, unchanged re-run": report["enroll_unchanged_rerun"]}  # fmt: skip
        for name, r in rows.items():
            print(f"| `{name}` | {r['median_s']} | {r['min_s']} |")


if __name__ == "__main__":
    main()

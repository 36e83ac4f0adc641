"""Time of the decision calibration a gallery runs at every save, on a large synthetic gallery.

    python tools/bench_calibration.py [--vectors 20000] [--dim 1280] [--identities 2000]

Clustered unit vectors (one cluster per identity) stand in for the gallery; `measure` samples
at most 2000 of them as queries against all. Printed: seconds for the whole calibration and
for its near-copy bar (the similarity above which two images are one capture), best of 3.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from agent.gallery.calibration import BLOCK, MAX_SAMPLES, _duplicate_bar, measure


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--identities", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    owner = rng.integers(0, args.identities, args.vectors)
    centres = rng.standard_normal((args.identities, args.dim))
    vectors = centres[owner] + 1.2 * rng.standard_normal((args.vectors, args.dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"id{i}" for i in owner]
    rows = np.sort(rng.choice(args.vectors, min(MAX_SAMPLES, args.vectors), replace=False))
    blocks = [rows[s : s + BLOCK] for s in range(0, len(rows), BLOCK)]
    total = best_of(3, lambda: measure(vectors, ids, identity_weight=0.9))
    bar = best_of(3, lambda: _duplicate_bar(vectors, owner, blocks))
    row = vars(args) | {"calibration_s": round(total, 3), "near_copy_bar_s": round(bar, 3)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()

"""Time of the decision calibration a gallery runs at every save, on a large synthetic gallery.

    python tools/bench_calibration.py [--vectors 20000] [--dim 1280] [--identities 2000]

Clustered unit vectors (one cluster per identity) stand in for the gallery; `measure` samples
at most 2000 of them as queries against all. Printed: seconds for the whole calibration,
best of 3.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from agent.gallery.calibration import measure


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
    total = best_of(3, lambda: measure(vectors, ids, identity_weight=0.9))
    row = vars(args) | {"calibration_s": round(total, 3)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()

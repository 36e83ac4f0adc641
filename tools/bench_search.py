"""Search benchmark: USearch (the gallery's index) vs FAISS HNSW on clustered random vectors.

Usage: python tools/bench_search.py [--sizes 100000,1000000] [--dim 512] [--dtypes f32,f16,i8]
       [--faiss-max 1000000] [--queries 1000] [--json OUT]

Vectors are random but clustered (Gaussian blobs around random centres, L2-normalised), queries
are fresh points of the same blobs. For each size and dtype it reports: build time, single-query
p50/p99 latency (1 thread), batch QPS (all threads), recall@10 against exact search, index
memory, and open time of the saved file with `restore` (load into RAM) vs `view` (mmap).
FAISS HNSW (IndexHNSWFlat, inner product, same M/efConstruction/efSearch) runs in the same
process on the same data; ratios are USearch / FAISS. faiss-cpu is a dev-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from usearch.index import Index

M, EF_ADD, EF_SEARCH, K = 16, 128, 64, 10
NOISE = 0.35  # per-dimension spread around a unit-variance centre: clusters overlap a little


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator, centres=None):
    if centres is None:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        labels = rng.integers(0, len(centres), m)
        x = centres[labels] + NOISE * rng.standard_normal((m, dim)).astype(np.float32)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centres


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 100):
        scores = queries[s : s + 100] @ base.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        best[s : s + 100] = np.take_along_axis(part, order, 1)
    return best


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def latencies(search_one, queries: np.ndarray, n: int = 1000) -> tuple[float, float]:
    times = []
    for q in queries[:n]:
        t = time.perf_counter()
        search_one(q)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_usearch(base, queries, truth, dtype: str, tmp: Path, ef: int, metric: str) -> dict:
    index = Index(
        ndim=base.shape[1],
        metric=metric,
        dtype=dtype,
        connectivity=M,
        expansion_add=EF_ADD,
        expansion_search=ef,
    )
    t = time.perf_counter()
    index.add(np.arange(len(base), dtype=np.uint64), base)
    build = time.perf_counter() - t
    p50, p99 = latencies(lambda q: index.search(q, K, threads=1), queries)
    t = time.perf_counter()
    found = index.search(queries, K).keys
    qps = len(queries) / (time.perf_counter() - t)
    path = tmp / f"u_{dtype}.usearch"
    index.save(str(path))
    memory = index.memory_usage / 2**20
    index.reset()
    t = time.perf_counter()
    loaded = Index.restore(str(path))
    load_s = time.perf_counter() - t
    del loaded
    t = time.perf_counter()
    viewed = Index.restore(str(path), view=True)
    view_s = time.perf_counter() - t
    first = viewed.search(queries[0], K)  # a viewed index must answer
    assert len(first.keys) == K
    del viewed
    path.unlink()
    return {
        "engine": f"usearch-{metric}", "ef": ef, "dtype": dtype, "build_s": build,
        "p50_ms": p50, "p99_ms": p99,
        "batch_qps": qps, "recall@10": recall(found, truth), "memory_mb": memory,
        "load_s": load_s, "view_s": view_s,
    }  # fmt: skip


def bench_faiss(base, queries, truth, ef: int) -> dict:
    import faiss

    index = faiss.IndexHNSWFlat(base.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_ADD
    index.hnsw.efSearch = ef
    before = rss_mb()
    t = time.perf_counter()
    index.add(base)
    build = time.perf_counter() - t
    memory = rss_mb() - before
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    p50, p99 = latencies(lambda q: index.search(q[None], K), queries)
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    _, found = index.search(queries, K)
    qps = len(queries) / (time.perf_counter() - t)
    return {
        "engine": "faiss", "ef": ef, "dtype": "f32", "build_s": build,
        "p50_ms": p50, "p99_ms": p99,
        "batch_qps": qps, "recall@10": recall(found, truth), "memory_mb": memory,
        "load_s": None, "view_s": None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dtypes", default="f32,f16,i8")
    parser.add_argument("--faiss-max", type=int, default=1_000_000, help="Skip FAISS above this.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", type=int, default=EF_SEARCH, help="HNSW expansion at search.")
    parser.add_argument(
        "--metrics",
        default="ip,cos",
        help="USearch metrics to compare "
        "(ip equals cos on unit vectors, which is all the gallery holds).",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=160)
    rng = np.random.default_rng(0)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        base, centres = clustered(n, args.dim, max(10, n // 1000), rng)
        queries, _ = clustered(args.queries, args.dim, 0, rng, centres)
        truth = exact_top(base, queries, K)
        with tempfile.TemporaryDirectory() as tmp:
            for metric in args.metrics.split(","):
                for dtype in args.dtypes.split(","):
                    row = bench_usearch(base, queries, truth, dtype, Path(tmp), args.ef,
                                        metric) | {"n": n}  # fmt: skip
                    rows.append(row)
                    console.print(row)
        if n <= args.faiss_max:
            row = bench_faiss(base, queries, truth, args.ef) | {"n": n}
            rows.append(row)
            console.print(row)
        del base
    table = Table(title=f"search, dim {args.dim}, M={M} efC={EF_ADD}, "
                  f"{platform.node()} ({os.cpu_count()} cores)")  # fmt: skip
    cols = ("n", "engine", "ef", "dtype", "build_s", "p50_ms", "p99_ms", "batch_qps", "recall@10",
            "memory_mb", "load_s", "view_s")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    console.print(table)
    console.print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

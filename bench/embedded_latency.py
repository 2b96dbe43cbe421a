"""Embedded Qdrant hybrid query latency at scale, with a tenant filter.

Synthetic data (the engine's cost does not depend on what the vectors mean): N chunks with
384-d unit vectors drawn around a few hundred topic centres, Zipf-distributed BM25-like sparse
vectors, spread over 10 tenants. After `optimize()` (HNSW built), it times hybrid (RRF),
dense-only and sparse-only queries filtered to one tenant, as the agent issues them.

    python bench/embedded_latency.py --points 100000 --queries 300
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from eval.metrics import percentile
from retrievers.qdrant_embedded import EmbeddedQdrantStore
from retrievers.store import (
    CollectionSpec,
    PayloadFilter,
    QueryOptions,
    SparseVector,
    StoredPoint,
    point_id,
)

DIM = 384
VOCAB = 30_000
TENANTS = 10


def synthetic_points(n: int, rng: np.random.Generator, start: int) -> list[StoredPoint]:
    centres = rng.standard_normal((256, DIM)).astype(np.float32)
    topic = rng.integers(0, len(centres), n)
    dense = centres[topic] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = []
    for i in range(n):
        terms = np.unique(rng.zipf(1.3, 60) % VOCAB)
        weights = rng.uniform(0.5, 2.0, len(terms))
        idx = start + i
        points.append(
            StoredPoint(
                point_id("bench", str(idx)),
                dense[i].tolist(),
                SparseVector([int(t) for t in terms], [float(w) for w in weights]),
                {
                    "tenant": f"tenant-{idx % TENANTS}",
                    "doc_id": f"doc-{idx // 4}",
                    "source": f"synthetic/{idx // 4}.md",
                    "chunk_index": idx % 4,
                    "text": f"synthetic chunk {idx}",
                },
            )
        )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    root = Path(tempfile.mkdtemp(prefix="agentrag-bench-"))
    store = EmbeddedQdrantStore(root)
    try:
        store.create_collection("bench", CollectionSpec(dense_dim=DIM, embedding_model="synthetic"))
        started = time.perf_counter()
        batch = 2_000
        for start in range(0, args.points, batch):
            store.upsert("bench", synthetic_points(min(batch, args.points - start), rng, start))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        store.optimize("bench")
        optimize_s = time.perf_counter() - started
        assert store.count("bench") == args.points

        options = QueryOptions(prefetch_limit=50)
        results: dict[str, dict[str, float]] = {}
        queries = []
        for _ in range(args.queries):
            q = rng.standard_normal(DIM).astype(np.float32)
            q /= np.linalg.norm(q)
            terms = np.unique(rng.zipf(1.3, 6) % VOCAB)
            queries.append(
                (
                    q.tolist(),
                    SparseVector([int(t) for t in terms], [1.0] * len(terms)),
                    f"tenant-{rng.integers(0, TENANTS)}",
                )
            )
        for mode in ("hybrid", "dense", "sparse"):
            latencies = []
            for i, (dense, sparse, tenant) in enumerate(queries):
                where = PayloadFilter(must={"tenant": tenant})
                t0 = time.perf_counter()
                hits = store.query(
                    "bench",
                    dense=dense if mode != "sparse" else None,
                    sparse=sparse if mode != "dense" else None,
                    limit=args.k,
                    where=where,
                    options=options,
                )
                elapsed = (time.perf_counter() - t0) * 1000
                if i >= 10:  # first queries warm caches
                    latencies.append(elapsed)
                assert all(h.payload["tenant"] == tenant for h in hits)
            results[mode] = {
                "p50_ms": round(percentile(latencies, 50), 3),
                "p95_ms": round(percentile(latencies, 95), 3),
                "mean_ms": round(sum(latencies) / len(latencies), 3),
            }
        report = {
            "points": args.points,
            "queries": args.queries,
            "k": args.k,
            "tenants": TENANTS,
            "load_seconds": round(load_s, 1),
            "optimize_seconds": round(optimize_s, 1),
            "latency": results,
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "machine": f"{platform.machine()}, {platform.python_version()}",
        }
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "embedded-latency.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Embedded hybrid query latency: {args.points:,} chunks, tenant filter, k={args.k}",
        "",
        "| mode | p50 (ms) | p95 (ms) | mean (ms) |",
        "|---|---|---|---|",
        *[f"| {m} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} |" for m, r in results.items()],
        "",
        f"Load {report['load_seconds']}s, optimize (HNSW) {report['optimize_seconds']}s, "
        f"max RSS {report['max_rss_mb']} MB, {report['machine']}.",
    ]
    (args.out / "embedded-latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

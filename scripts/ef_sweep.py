"""Recall@100 and NDCG@10 of dense and hybrid retrieval against the HNSW beam width (ef).

    python scripts/ef_sweep.py BENCHMARK_DIR INDEX_DIR [EF ...]

Runs the benchmark's test queries through the index at each ef (2000 is close to exact search)
and prints the metrics, the time of the whole batch, and a paired test of dense against BM25.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import retrieval.store as store  # noqa: E402
from evaluation.data import load_benchmark  # noqa: E402
from evaluation.metrics import evaluate, mean_scores  # noqa: E402
from evaluation.stats import paired_test  # noqa: E402
from retrieval.retriever import Retriever  # noqa: E402


def main() -> None:
    data = load_benchmark(sys.argv[1])
    efs = [int(x) for x in sys.argv[3:]] or [128, 256, 400, 2000]
    frame, qrels = data.split("test")
    scored = {q for q, j in qrels.items() if any(g >= data.threshold for g in j.values())}
    queries = [
        (q, t) for q, t in zip(frame["query_id"], frame["query"], strict=True) if q in scored
    ]
    with Retriever.open(sys.argv[2]) as r:

        def run(mode: str) -> tuple[dict, float]:
            t0, out = time.perf_counter(), {}
            for i in range(0, len(queries), 64):
                chunk = queries[i : i + 64]
                for (q, _), hits in zip(
                    chunk, r.search_batch([t for _, t in chunk], k=100, mode=mode), strict=True
                ):
                    out[q] = {h.product_id: float(100 - j) for j, h in enumerate(hits)}
            return evaluate(
                qrels, out, metrics=("recall@100", "ndcg@10"), threshold=data.threshold
            ), time.perf_counter() - t0

        bm25, _ = run("bm25")
        for ef in efs:
            store.HNSW_EF_SEARCH = ef
            for mode in ("dense", "hybrid"):
                per, secs = run(mode)
                m = mean_scores(per)
                line = f"ef {ef:5d} {mode:6s} recall@100 {m['recall@100']:.4f} ndcg@10 {m['ndcg@10']:.4f} ({len(queries)} queries in {secs:.1f} s)"
                if mode == "dense":
                    t = paired_test(bm25["recall@100"], per["recall@100"])
                    line += f"; vs BM25 recall@100 {t.relative_delta:+.1%}, p={t.p_value:.4f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()

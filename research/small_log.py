"""A small shop log with a known examination curve, for ``train personal`` as a new shop tries it
(issue 25's "honest on a small log").

``python -m research.small_log INDEX OUT`` writes two event logs (JSON Lines) over INDEX:

* ``OUT/today.jsonl``: each search shows the relevance-only pipeline's top 10 (what this index
  serves today);
* ``OUT/previous.jsonl``: the same shoppers, queries and click model, but the lists a previous
  search engine showed: 8 products from the query's BM25 ranks that are not among today's
  ``--depth`` relevance-only candidates, then today's top 2 (the usual log when a shop adopts
  shopsearch).

Shoppers (``--users``) search once a day for ``--days`` days from ``--queries`` queries of the
Home Depot training split; each examines rank r with probability ``1 / r`` and clicks an examined
product with probability ``0.05 + 0.25 * likes`` where ``likes`` is 1 for a third of the
title's brand words (:func:`research.simulate.brand_proxy`), per shopper (seeded): about 480
searches and 180 clicks by default. ``OUT/truth.json`` keeps the true curve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from research.simulate import brand_proxy

T0 = 1_793_491_200.0  # 2026-11-01T00:00:00Z (a log from the past: events ahead of the clock are rejected)


def _likes(user: int, brand: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{user}:{brand}".encode()).digest()
    return digest[0] % 3 == 0


def write_logs(
    index: str,
    out: Path,
    queries_path: str = "runs/hd/queries.parquet",
    users: int = 40,
    days: int = 12,
    n_queries: int = 30,
    depth: int = 50,
    seed: int = 0,
) -> dict:
    """Writes ``today.jsonl``, ``previous.jsonl`` and ``truth.json`` in ``out``; returns the
    counts (searches, clicks per log)."""
    from rerank.pipeline import SearchPipeline

    rng = np.random.default_rng(seed)
    frame = pl.read_parquet(queries_path).filter(pl.col("split") == "train").sort("query_id")
    picked = rng.choice(frame.height, size=n_queries, replace=False)
    queries = [frame["query"][int(i)] for i in picked]
    with SearchPipeline.open(index) as pipeline:
        cands = pipeline.relevance_fn(depth)(queries)
        bm25 = pipeline.retriever.search_batch(queries, k=400, mode="bm25")
        shown: dict[str, dict[str, list[str]]] = {"today": {}, "previous": {}}
        for q, hits, lexical in zip(queries, cands, bm25, strict=True):
            today = [h.product_id for h in hits[:10]]
            inside = {h.product_id for h in hits}
            other = [h.product_id for h in lexical if h.product_id not in inside][:8]
            shown["today"][q] = today
            shown["previous"][q] = other + today[: 10 - len(other)]
        ids = sorted({p for lists in shown.values() for ids in lists.values() for p in ids})
        titles = {p: v.get("title", "") for p, v in pipeline.retriever.payloads(ids).items()}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, lists in shown.items():
        draw = np.random.default_rng(seed + 1)  # the same shoppers and searches in both logs
        rows, clicks, n = [], 0, 0
        for u in range(users):
            for d in range(days):
                q = queries[int(draw.integers(len(queries)))]
                ts, sid = T0 + d * 86400 + u * 97, f"s{n}"
                n += 1
                user, session = f"shopper{u}", f"{u}-{d}"
                rows.append(
                    {
                        "user_id": user,
                        "timestamp": ts,
                        "session_id": session,
                        "event": "search",
                        "query": q,
                        "search_id": sid,
                        "results": lists[q],
                    }
                )
                seen = draw.random(len(lists[q]))
                liked = draw.random(len(lists[q]))
                for r, pid in enumerate(lists[q], start=1):
                    like = _likes(u, brand_proxy(titles.get(pid, "")), seed)
                    if seen[r - 1] < 1 / r and liked[r - 1] < 0.05 + 0.25 * like:
                        clicks += 1
                        rows.append(
                            {
                                "user_id": user,
                                "timestamp": ts + r,
                                "session_id": session,
                                "event": "click",
                                "product_id": pid,
                                "search_id": sid,
                                "position": r,
                            }
                        )
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        counts[name] = {"searches": n, "clicks": clicks}
    truth = {"examination": [1 / r for r in range(1, 11)], "counts": counts, "seed": seed}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index")
    parser.add_argument("out", type=Path)
    parser.add_argument("--queries-file", default="runs/hd/queries.parquet")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = write_logs(
        args.index, args.out, args.queries_file, args.users, args.days, args.queries, seed=args.seed
    )
    for name, c in counts.items():
        print(f"{args.out / (name + '.jsonl')}: {c['searches']} searches, {c['clicks']} clicks")


if __name__ == "__main__":
    main()

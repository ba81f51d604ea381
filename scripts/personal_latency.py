"""Query-time cost of personalization, measured on a store that ``shopsearch bench-personal`` built.

    python scripts/personal_latency.py INDEX PROFILES_SQLITE PERSONAL_MODEL SIM_DIR SEED [N]

Times, per search, what personalization adds on top of the relevance-only pipeline: the
point-in-time profile lookup, the taste vector, fetching the candidates' vectors, popularity,
the features, the fused score and its explanation, for the top 50 hybrid candidates. Neither
the first-stage search nor the cross-encoder is in the figure (both run with or without a user).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from personalization.personalizer import Personalizer, taste_vector  # noqa: E402
from personalization.privacy import Pseudonymizer  # noqa: E402
from personalization.profiles import ProfileStore  # noqa: E402
from personalization.ranker import PersonalRanker
from rerank.pipeline import SearchPipeline  # noqa: E402
from retrieval.retriever import Retriever  # noqa: E402


def main() -> None:
    index, profiles, model, sim_dir, seed = sys.argv[1:6]
    n = int(sys.argv[6]) if len(sys.argv) > 6 else 500
    events = pl.read_parquet(Path(sim_dir) / "events.parquet").filter(pl.col("event") == "search")
    rows = (
        events.sample(n=min(n, events.height), seed=0)
        .select("user_id", "query", "timestamp")
        .rows()
    )
    pz = Pseudonymizer(b"shopsearch-benchmark-key-" + seed.encode())  # the key bench-personal used
    store = ProfileStore(profiles)
    personal = Personalizer(PersonalRanker.load(model), store, pz)
    pipe = SearchPipeline(Retriever.open(index), None, personal)
    samples, warm, plain, vec = [], 0, [], []
    for i, (user, query, ts) in enumerate(rows):
        t0 = time.perf_counter()
        pipe.retriever.search(query, k=50)
        t1 = time.perf_counter()
        hits = pipe.retriever.search(
            query, k=50, with_vectors=True
        )  # what a warm shopper's search asks
        t2 = time.perf_counter()
        if i >= 20:
            plain.append(t1 - t0)
            vec.append(t2 - t1)
        t0 = time.perf_counter()
        profile = personal.profile(
            user, before=ts.timestamp() if hasattr(ts, "timestamp") else float(ts)
        )
        recent = pipe._recent(profile)
        taste_vector(recent)
        pipe.rank(query, hits, profile, recent=recent)
        if i >= 20:  # warm-up
            samples.append(time.perf_counter() - t0)
            warm += profile.n_events > 0
    ms = np.asarray(samples) * 1000
    a, b = np.asarray(plain) * 1000, np.asarray(vec) * 1000
    print(
        f"first-stage search (hybrid, k=50, query encoding included): p50 {np.percentile(a, 50):.2f} ms; "
        f"returning the candidates' vectors too: p50 {np.percentile(b, 50):.2f} ms "
        f"(+{np.percentile(b, 50) - np.percentile(a, 50):.2f} ms)"
    )
    print(
        f"personalization cost over {len(ms)} searches ({warm} by shoppers with history), 50 candidates: "
        f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms"
    )


if __name__ == "__main__":
    main()

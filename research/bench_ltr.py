"""``shopsearch bench-ltr``: the learned final stage against the first stage, on a benchmark.

One run, one machine: BM25, hybrid (the index's fusion), hybrid + the learned stage (every
feature; no cross-encoder unless ``--reranker``), and the learned stage without the lexical
features (the ablation), on the test split: NDCG@10 and Recall@100 over the scored queries,
paired randomization tests (``evaluation.stats``) against hybrid and BM25. The learned stage
reorders the top ``depth`` (50) candidates; candidates 51-100 follow in the hybrid's order, so
Recall@100 moves only inside the top 50. The models are trained as ``shopsearch train ranker``
trains them (:mod:`training.ranker`): train split lists, early stopping on the validation split.

Also: the full model's feature importances (share of the total split gain), and the stage's
latency for ``depth`` candidates (features + LightGBM predict + sort, one thread), per test
query, with the product-text cache cleared before each query (cold: every candidate tokenized)
and as serving meets them (the cache empty at the first test query, then kept).

The retrieved lists are cached in ``WORKDIR`` (keyed by the index build, depth and the
reranker), so a second run only trains and measures.

    run(data, index, workdir) -> LtrReport
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "learned-stage"
#: Candidates retrieved per test query (Recall@100); the learned stage reorders the first ``depth``.
RECALL_K = 100


@dataclass(frozen=True)
class LtrReport:
    """The figures of one ``bench-ltr`` run."""

    queries: int
    depth: int
    systems: dict[str, dict[str, float]]
    tests: dict[str, dict[str, float]]
    training: dict[str, dict[str, Any]]
    importance: dict[str, float]
    latency_ms: dict[str, float]
    load: float
    reranker: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as the docs page shows it."""
        lines = [
            f"Test split: {self.queries} scored queries; the learned stage reorders the top "
            f"{self.depth} hybrid candidates"
            + (
                f" with the cross-encoder {self.reranker}"
                if self.reranker
                else " (no cross-encoder)"
            )
            + "; candidates 51-100 follow in the hybrid's order, so Recall@100 cannot move. "
            "p: paired randomization test (10,000 sign flips) of NDCG@10.",
            "",
            "| system | NDCG@10 | Recall@100 | NDCG@10 vs hybrid | p | vs BM25 | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in self.systems.items():
            t = self.tests.get(name, {})
            vs_h = (
                f"{t['hybrid_delta']:+.4f} ({t['hybrid_rel']:+.1%}) | {t['hybrid_p']:.4f}"
                if "hybrid_delta" in t
                else "| "
            )
            vs_b = (
                f"{t['bm25_delta']:+.4f} ({t['bm25_rel']:+.1%}) | {t['bm25_p']:.4f}"
                if "bm25_delta" in t
                else "| "
            )
            lines.append(
                f"| {name} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {vs_h} | {vs_b} |"
            )
        lines += [
            "",
            "Training (validation NDCG@10 over the candidates, first stage -> model):",
            "",
        ]
        for name, t in self.training.items():
            lines.append(
                f"- {name}: {t['baseline_ndcg10']:.4f} -> {t['best_ndcg10']:.4f}, "
                f"{t['best_iteration']} trees, {t['train_queries']} training lists "
                f"({t['train_rows']:,} candidates), {t['wall_seconds']:.0f} s"
            )
        lines += [
            "",
            "Feature importance of the full model (share of the total split gain, top 12):",
            "",
            "| feature | gain share |",
            "|---|---|",
        ]
        total = sum(self.importance.values()) or 1.0
        for name, gain in list(self.importance.items())[:12]:
            lines.append(f"| {name} | {gain / total:.1%} |")
        lat = self.latency_ms
        lines += [
            "",
            f"Latency of the learned stage for {self.depth} candidates (features + predict + "
            f"sort, one thread), over the test queries; load average {self.load:.2f} during "
            "the run (on 2 cores above 2: the figures are loaded, not the stage's own):",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| cold (text cache cleared per query) | {lat['cold_p50']:.3f} | {lat['cold_p99']:.3f} |",
            f"| as served (cache kept across queries) | {lat['served_p50']:.3f} | "
            f"{lat['served_p99']:.3f} |",
            f"| of which predict | {lat['predict_p50']:.3f} | {lat['predict_p99']:.3f} |",
        ]
        return "\n".join(lines) + "\n"


def _cached_lists(path: Path, make: Callable[[], Any], log: Callable[[str], None]) -> Any:
    if path.is_file():
        log(f"reading cached candidates {path}")
        with open(path, "rb") as fh:
            return pickle.load(fh)  # noqa: S301 - our own cache, written below
    got = make()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(got, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return got


def _run_of(pids: Sequence[str]) -> dict[str, float]:
    n = len(pids)
    return {p: float(n - i) for i, p in enumerate(pids)}


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run(
    data_dir: str | os.PathLike[str],
    index: str | os.PathLike[str],
    workdir: str | os.PathLike[str] = "runs/ltr",
    depth: int = 50,
    reranker: str | None = None,
    threads: int | None = 2,
    seed: int = 13,
    log: Callable[[str], None] = print,
) -> LtrReport:
    """Trains the learned stage (full and without lexical features) and measures it.

    Args:
        data_dir: A benchmark directory (``evaluation.data``), e.g. ``runs/hd``.
        index: The index its catalog was indexed into (the candidates come from it).
        workdir: Where the candidate cache, the models and the report go.
        depth: Candidates the learned stage reorders (the rerank depth).
        reranker: A cross-encoder folder whose logits become a feature, or None.
        threads: LightGBM training threads.
        seed: Training seed.
        log: Progress messages.
    """
    from evaluation.data import judgments_from, load_benchmark
    from evaluation.metrics import evaluate, mean_scores
    from evaluation.stats import paired_test
    from rerank.cross_encoder import Reranker
    from rerank.ltr import LearnedRanker, _analyse
    from retrieval.retriever import Retriever
    from training.ranker import RankerTrainConfig, retrieve_lists, train_ranker

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = judgments_from(load_benchmark(data_dir))
    model = Reranker.load(reranker) if reranker is not None else None
    fp = getattr(model, "fingerprint", None)
    with Retriever.open(index) as retriever:
        build = str(retriever.manifest.get("build_id") or "index")
        tag = f"-{fp}" if fp else ""
        lists: dict[str, list[Any]] = {}
        for split in ("train", "validation", "test"):
            judged = data.qrels[split]
            queries = {q: t for q, t in data.queries[split].items() if q in judged}
            k = RECALL_K if split == "test" else depth

            def make(queries=queries, split=split, k=k) -> list[Any]:
                log(f"retrieving {len(queries)} {split} queries ({k} candidates each)")
                return retrieve_lists(retriever, queries, k, model, log)

            path = work / f"lists-{split}-{build}-k{k}{tag}.pkl"
            lists[split] = _cached_lists(path, make, log)
        test_queries = {q.query_id: q.query for q in lists["test"]}

        def bm25() -> dict[str, list[str]]:
            log(f"BM25 for {len(test_queries)} test queries")
            ids = list(test_queries)
            out: dict[str, list[str]] = {}
            for at in range(0, len(ids), 64):
                chunk = ids[at : at + 64]
                got = retriever.search_batch(
                    [test_queries[q] for q in chunk], k=RECALL_K, mode="bm25"
                )
                out.update(
                    {q: [h.product_id for h in hits] for q, hits in zip(chunk, got, strict=True)}
                )
            return out

        bm25_run = _cached_lists(work / f"bm25-test-{build}.pkl", bm25, log)

    train_lists = {split: lists[split] for split in ("train", "validation")}
    variants = {"hybrid + learned stage": (), "hybrid + learned stage, no lexical": ("lexical",)}
    if fp:
        variants["hybrid + learned stage, no cross-encoder"] = ("cross",)
    rankers: dict[str, LearnedRanker] = {}
    importance: dict[str, float] = {}
    training: dict[str, dict[str, Any]] = {}
    for name, dropped in variants.items():
        named = "without-" + "-".join(dropped) if dropped else "full"
        out = work / (f"model-{named}" + (f"-{fp}" if fp else ""))
        config = RankerTrainConfig(depth=depth, dropped=dropped, threads=threads, seed=seed)
        report = train_ranker(data, out, train_lists, config, log=log, reranker_fingerprint=fp)
        training[name] = {
            k: v for k, v in report.as_dict().items() if k not in ("history", "importance")
        }
        rankers[name] = LearnedRanker.open(out)
        if not dropped:
            importance = report.importance

    runs: dict[str, dict[str, dict[str, float]]] = {
        "BM25": {q: _run_of(p) for q, p in bm25_run.items()},
        "hybrid": {q.query_id: _run_of([h.product_id for h in q.hits]) for q in lists["test"]},
    }
    for name, ranker in rankers.items():
        run_: dict[str, dict[str, float]] = {}
        for item in lists["test"]:
            top = ranker.rank(item.query, item.hits[:depth], item.corrected)
            run_[item.query_id] = _run_of(
                [h.product_id for h in top] + [h.product_id for h in item.hits[depth:]]
            )
        runs[name] = run_
    qrels = data.qrels["test"]
    metrics = ("ndcg@10", "recall@100")
    per_query = {
        name: evaluate(qrels, r, metrics, data.threshold, data.gain_offset)
        for name, r in runs.items()
    }
    systems = {name: mean_scores(pq) for name, pq in per_query.items()}
    tests: dict[str, dict[str, float]] = {}
    for name in runs:
        if name == "BM25":
            continue
        t: dict[str, float] = {}
        for base, tag in (("hybrid", "hybrid"), ("BM25", "bm25")):
            if name == base:
                continue
            pt = paired_test(per_query[base]["ndcg@10"], per_query[name]["ndcg@10"])
            t[f"{tag}_delta"], t[f"{tag}_rel"], t[f"{tag}_p"] = (
                pt.delta,
                pt.relative_delta,
                pt.p_value,
            )
            pr = paired_test(per_query[base]["recall@100"], per_query[name]["recall@100"])
            t[f"{tag}_recall_delta"], t[f"{tag}_recall_p"] = pr.delta, pr.p_value
        tests[name] = t

    # latency of the stage: features + predict + sort, per test query
    full = rankers["hybrid + learned stage"]
    lat: dict[str, list[float]] = {"cold": [], "served": [], "predict": []}
    items = lists["test"]
    load0 = os.getloadavg()[0]
    for item in items[:50]:  # warm the interpreter and LightGBM
        full.rank(item.query, item.hits[:depth], item.corrected)
    for item in items:
        _analyse.cache_clear()
        t0 = time.perf_counter()
        full.rank(item.query, item.hits[:depth], item.corrected)
        lat["cold"].append(time.perf_counter() - t0)
    _analyse.cache_clear()
    for item in items:
        hits = item.hits[:depth]
        t0 = time.perf_counter()
        full.rank(item.query, hits, item.corrected)
        lat["served"].append(time.perf_counter() - t0)
        x = full.features(item.query, hits, item.corrected)
        t0 = time.perf_counter()
        full.booster.predict(x, num_threads=1)
        lat["predict"].append(time.perf_counter() - t0)
    load = (load0 + os.getloadavg()[0]) / 2
    latency: dict[str, float] = {}
    for name, values in lat.items():
        latency[f"{name}_p50"], latency[f"{name}_p99"] = _percentiles(values)

    report = LtrReport(
        queries=len(next(iter(per_query["hybrid"].values()))),
        depth=depth,
        systems=systems,
        tests=tests,
        training=training,
        importance=importance,
        latency_ms=latency,
        load=load,
        reranker=reranker,
    )
    (work / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (work / "report.md").write_text(report.markdown())
    return report

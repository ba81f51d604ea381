"""``shopsearch bench-ltr``: the learned final stage against the first stage, on a benchmark.

One run, one machine: BM25, hybrid (the index's fusion), hybrid + the learned stage (every
feature; no cross-encoder unless ``--reranker``), and the learned stage without the lexical
features (the ablation), on the test split: NDCG@10 and Recall@100 over the scored queries,
paired randomization tests (``evaluation.stats``) against hybrid and BM25. The learned stage
reorders the top ``depth`` (50) candidates; candidates 51-100 follow in the hybrid's order, so
Recall@100 moves only inside the top 50. The models are trained as ``shopsearch train ranker``
trains them (:mod:`training.ranker`): train split lists, early stopping on the validation split.

With ``--reranker`` the cross-encoder scores the top ``depth`` candidates of each list (cached
beside the lists, keyed by the model's fingerprint), and the page adds today's stage (hybrid +
the cross-encoder blended at the weight saved with it, :func:`rerank.blend.blend`) and the
ablation without the cross-encoder; every learned variant trains on the same lists. Scoring every
training list costs the cross-encoder ~2 ms per pair on two cores, so ``train_lists`` takes a
seeded sample of them, drawn from the train queries the cross-encoder was NOT trained on (read
from its ``train_report.json``): its logits on its own training queries would be more confident
than at serving and the learned stage would trust them too much.

Also: the full model's feature importances (share of the total split gain), and the stage's
latency for ``depth`` candidates (features + LightGBM predict + sort, one thread), per test
query (:func:`research.bench_ltr_latency.measure`): cold (every candidate tokenized), first
pass (the caches empty at the first test query, then kept) and warm (a second pass).

The retrieved lists are cached in ``WORKDIR`` (keyed by the index build, depth and the
reranker), so a second run only trains and measures.

    run(data, index, workdir) -> LtrReport
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.hits import hit_text

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "learned-stage"
#: Candidates retrieved per test query (Recall@100); the learned stage reorders the first ``depth``.
RECALL_K = 100
#: Today's relevance stage with a cross-encoder: its logits blended with the first stage's.
BLEND = "hybrid + cross-encoder blend"
#: The learned stage's latency rows (research.bench_ltr_latency.measure's keys -> label).
LATENCY_ROWS = (
    ("cold", "cold (product and query caches cleared before each query)"),
    ("first", "first pass (caches empty at the first query, then kept)"),
    ("warm", "warm (second pass: every candidate analysed before)"),
    ("warm_best3", "warm, best of 3 per query (the load's preemptions left out)"),
    ("features", "of which features (warm)"),
    ("predict", "of which predict (warm)"),
    ("sort", "of which sort (warm)"),
)
#: The end-to-end pipelines timed (key -> label).
E2E_STAGES = {
    "hybrid": "retrieve (hybrid)",
    "blend": "retrieve + cross-encoder blend",
    "learned": "retrieve + cross-encoder + learned stage",
    "learned_no_cross": "retrieve + learned stage, no cross-encoder",
}


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
    #: Training lists used (all, or the seeded sample ``train_lists``) and, of the train
    #: queries, how many were left out as the cross-encoder's own training queries.
    train_lists: int = 0
    excluded_queries: int = 0
    #: End-to-end ms per query (retrieve + relevance stage, ``SearchPipeline.search``):
    #: ``{stage}_p50`` / ``{stage}_p99`` and ``queries``.
    end_to_end_ms: dict[str, float] = field(default_factory=dict)
    #: The cross-encoder's other runtime (``onnx:int8``), scored on the test lists beside the
    #: fp32 torch one (None: not run), and its stages against their fp32 counterparts:
    #: ``{stage}`` -> ``delta``, ``rel``, ``p`` of NDCG@10.
    variant: str | None = None
    variant_tests: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as the docs page shows it."""
        blend = BLEND in self.systems
        lines = [
            f"Test split: {self.queries} scored queries; the learned stage reorders the top "
            f"{self.depth} hybrid candidates"
            + (
                f" with the cross-encoder {self.reranker}"
                if self.reranker
                else " (no cross-encoder)"
            )
            + f"; candidates {self.depth + 1}-100 follow in the hybrid's order, so Recall@100 "
            "cannot move. "
            "p: paired randomization test (10,000 sign flips) of NDCG@10."
            + (
                f" The learned variants train on {self.train_lists:,} lists"
                + (
                    f" (train queries the cross-encoder was trained on left out: "
                    f"{self.excluded_queries:,})"
                    if self.excluded_queries
                    else ""
                )
                + "."
                if self.train_lists
                else ""
            ),
            "",
            "| system | NDCG@10 | Recall@100 | NDCG@10 vs hybrid | p | vs BM25 | p |"
            + (" vs blend | p |" if blend else ""),
            "|---|---|---|---|---|---|---|" + ("---|---|" if blend else ""),
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
            vs_x = ""
            if blend:
                vs_x = (
                    f" {t['blend_delta']:+.4f} ({t['blend_rel']:+.1%}) | {t['blend_p']:.4f} |"
                    if "blend_delta" in t
                    else " | |"
                )
            lines.append(
                f"| {name} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {vs_h} | {vs_b} |{vs_x}"
            )
        if self.variant_tests:
            parts = [
                f"{name}: {t['delta']:+.4f} ({t['rel']:+.1%}), p = {t['p']:.4f}"
                for name, t in self.variant_tests.items()
            ]
            lines += [
                "",
                f"The cross-encoder as `{self.variant}` (the same weights, exported; the learned "
                "stage trained on the fp32 logits reads these, as serving would) against fp32 "
                "torch, NDCG@10: " + "; ".join(parts) + ".",
            ]
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
            *(
                f"| {label} | {lat[f'{key}_p50']:.3f} | {lat[f'{key}_p99']:.3f} |"
                for key, label in LATENCY_ROWS
                if f"{key}_p50" in lat
            ),
        ]
        lines += self._end_to_end_lines()
        return "\n".join(lines) + "\n"

    def _end_to_end_lines(self) -> list[str]:
        e2e = self.end_to_end_ms
        if not e2e:
            return []
        out = [
            "",
            f"End to end per query (`SearchPipeline.search`: spelling, hybrid retrieval of "
            f"{self.depth} candidates, the relevance stage, top 10), over the first "
            f"{int(e2e['queries'])} test queries, the pipelines taken in turn on each query; "
            f"load average {e2e.get('load', float('nan')):.2f} on "
            f"{os.cpu_count() or 1} cores (above the core count: loaded figures):",
            "",
            "| pipeline | p50 ms | p99 ms |",
            "|---|---|---|",
        ]
        for key, label in E2E_STAGES.items():
            if f"{key}_p50" in e2e:
                out.append(f"| {label} | {e2e[f'{key}_p50']:.1f} | {e2e[f'{key}_p99']:.1f} |")
        return out


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


def reranker_train_queries(folder: str | os.PathLike[str], data: Any) -> set[str]:
    """The train queries a cross-encoder folder was trained on, from its ``train_report.json``.

    Re-draws :func:`training.reranker.select_train_queries` with the recorded ``seed``,
    ``train_fraction`` and ``max_queries``; an empty set when the folder has no report (a model
    trained elsewhere: nothing is known to leave out).
    """
    from training.common import REPORT_NAME
    from training.config import RerankerTrainConfig
    from training.reranker import select_train_queries

    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        return set()
    recorded = json.loads(path.read_text()).get("config") or {}
    keys = ("seed", "train_fraction", "max_queries")
    config = RerankerTrainConfig(**{k: recorded[k] for k in keys if k in recorded})
    return set(select_train_queries(data, config))


def sample_lists(lists: Sequence[Any], n: int | None, exclude: set[str], seed: int) -> list[Any]:
    """At most ``n`` lists (seeded, in their order), none of a query in ``exclude``."""
    kept = [item for item in lists if item.query_id not in exclude]
    if n is None or len(kept) <= n:
        return kept
    picked = set(random.Random(seed).sample(range(len(kept)), n))
    return [item for i, item in enumerate(kept) if i in picked]


def with_cross(
    lists: Sequence[Any], model: Any, depth: int, log: Callable[[str], None]
) -> list[Any]:
    """The lists with the cross-encoder's logits on their top ``depth`` hits (as serving scores
    them: the corrected query when one was applied)."""
    out = []
    t0 = time.perf_counter()
    pairs = 0
    for n, item in enumerate(lists, 1):
        top = item.hits[:depth]
        logits = model.score(item.corrected or item.query, [hit_text(h) for h in top])
        scored = tuple(replace(h, cross=float(c)) for h, c in zip(top, logits, strict=True))
        out.append(replace(item, hits=scored + tuple(item.hits[depth:])))
        pairs += len(top)
        if n % 250 == 0:
            log(
                f"cross-encoder: {n}/{len(lists)} lists, {pairs / (time.perf_counter() - t0):.0f} "
                "pairs/s"
            )
    return out


def _run_of(pids: Sequence[str]) -> dict[str, float]:
    n = len(pids)
    return {p: float(n - i) for i, p in enumerate(pids)}


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def end_to_end(
    index: str | os.PathLike[str],
    model: Any,
    rankers: dict[str, Any],
    items: Sequence[Any],
    depth: int,
    pipeline_cls: Any,
    log: Callable[[str], None],
) -> dict[str, float]:
    """Per-query ms of ``SearchPipeline.search`` for each pipeline of :data:`E2E_STAGES` that
    the run has, the pipelines taken in turn on each query (so load falls on all alike)."""
    from retrieval.retriever import Retriever

    if not items:
        return {}
    with Retriever.open(index) as retriever:
        pipelines = {"hybrid": pipeline_cls(retriever)}
        if model is not None:
            pipelines["blend"] = pipeline_cls(retriever, model)
            pipelines["learned"] = pipeline_cls(
                retriever, model, ranker=rankers["hybrid + learned stage"]
            )
            name = "hybrid + learned stage, no cross-encoder"
        else:
            name = "hybrid + learned stage"
        pipelines["learned_no_cross"] = pipeline_cls(retriever, ranker=rankers[name])
        log(f"end to end: {len(items)} test queries x {len(pipelines)} pipelines")
        times: dict[str, list[float]] = {key: [] for key in pipelines}
        load0 = os.getloadavg()[0]
        for item in items[:5]:  # warm-up
            for pipe in pipelines.values():
                pipe.search(item.query, k=10, rerank_depth=depth)
        for item in items:
            for key, pipe in pipelines.items():
                t0 = time.perf_counter()
                pipe.search(item.query, k=10, rerank_depth=depth)
                times[key].append(time.perf_counter() - t0)
    out: dict[str, float] = {
        "queries": float(len(items)),
        "load": (load0 + os.getloadavg()[0]) / 2,
    }
    for key, values in times.items():
        out[f"{key}_p50"], out[f"{key}_p99"] = _percentiles(values)
    return out


def run(
    data_dir: str | os.PathLike[str],
    index: str | os.PathLike[str],
    workdir: str | os.PathLike[str] = "runs/ltr",
    depth: int = 50,
    reranker: str | None = None,
    threads: int | None = 2,
    seed: int = 13,
    log: Callable[[str], None] = print,
    train_lists: int | None = None,
    e2e_queries: int = 200,
    val_lists: int | None = None,
    reranker_threads: int | None = None,
    variant: tuple[str, str | None] | None = None,
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
        train_lists: Train the learned stage on a seeded sample of this many training lists
            (of the queries the cross-encoder was not trained on); None: every list.
        e2e_queries: Test queries timed end to end (``SearchPipeline.search``); 0: none.
        val_lists: Early-stop on a seeded sample of this many validation lists; None: all.
        reranker_threads: The cross-encoder's intra-op threads (1 beside other jobs: threads
            fighting over busy cores run slower than one); None: the physical cores.
        variant: ``(backend, quantize)`` of the same cross-encoder (e.g. ``("onnx", "int8")``,
            exported by ``shopsearch optimize``): it scores the test lists again, and the blend
            and the learned stage (trained on the fp32 logits) are scored on its logits and
            paired-tested against fp32. Needs ``reranker``.

    Raises:
        ShopsearchError: ``variant`` without ``reranker``, or a variant not exported.
    """
    from core.errors import ShopsearchError
    from evaluation.data import judgments_from, load_benchmark
    from evaluation.metrics import evaluate, mean_scores
    from evaluation.stats import paired_test
    from rerank.blend import rerank_hits
    from rerank.cross_encoder import Reranker
    from rerank.defaults import DEFAULT_RERANK_DEPTH
    from rerank.ltr import LearnedRanker
    from rerank.pipeline import SearchPipeline
    from research.bench_ltr_latency import measure as measure_latency
    from retrieval.retriever import Retriever
    from training.ranker import RankerTrainConfig, retrieve_lists, train_ranker

    if variant is not None and reranker is None:
        raise ShopsearchError("--variant scores the cross-encoder another way: give --reranker")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = judgments_from(load_benchmark(data_dir))
    model = Reranker.load(reranker, threads=reranker_threads) if reranker is not None else None
    model_v = (
        Reranker.load(reranker, backend=variant[0], quantize=variant[1], threads=reranker_threads)
        if variant is not None
        else None
    )
    # the variant as the page names it (onnx:int8), and as its cached lists' file name tags it
    label = f"{variant[0]}:{variant[1] or 'fp32'}" if variant is not None else None
    tag = f"{variant[0]}{variant[1] or ''}" if variant is not None else ""
    fp = getattr(model, "fingerprint", None)
    with Retriever.open(index) as retriever:
        build = str(retriever.manifest.get("build_id") or "index")
        lists: dict[str, list[Any]] = {}
        for split in ("train", "validation", "test"):
            judged = data.qrels[split]
            queries = {q: t for q, t in data.queries[split].items() if q in judged}
            # a shallower depth reads the lists of the default one, cut (the first stage's
            # order does not depend on how many hits are asked for)
            k = RECALL_K if split == "test" else max(depth, DEFAULT_RERANK_DEPTH)

            def make(queries=queries, split=split, k=k) -> list[Any]:
                log(f"retrieving {len(queries)} {split} queries ({k} candidates each)")
                return retrieve_lists(retriever, queries, k, None, log)

            path = work / f"lists-{split}-{build}-k{k}.pkl"
            lists[split] = _cached_lists(path, make, log)
            if split != "test":
                lists[split] = [replace(item, hits=item.hits[:depth]) for item in lists[split]]
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

    excluded = reranker_train_queries(reranker, data) if reranker is not None else set()
    lists["train"] = sample_lists(lists["train"], train_lists, excluded, seed)
    lists["validation"] = sample_lists(lists["validation"], val_lists, set(), seed)
    n_excluded = len(excluded & set(data.qrels["train"]))
    log(
        f"learned stage trains on {len(lists['train'])} lists ({n_excluded} queries left out), "
        f"validates on {len(lists['validation'])}"
    )
    if model is not None:
        for split in ("train", "validation", "test"):
            n = len(lists[split])
            path = work / f"lists-{split}-{build}-n{n}-s{seed}-d{depth}-cross-{fp}.pkl"
            lists[split] = _cached_lists(
                path, lambda split=split: with_cross(lists[split], model, depth, log), log
            )
    train_lists_ = {split: lists[split] for split in ("train", "validation")}
    variants = {"hybrid + learned stage": (), "hybrid + learned stage, no lexical": ("lexical",)}
    if fp:
        variants = {
            "hybrid + learned stage": (),
            "hybrid + learned stage, no cross-encoder": ("cross",),
            "hybrid + learned stage, no lexical": ("lexical",),
        }
    rankers: dict[str, LearnedRanker] = {}
    importance: dict[str, float] = {}
    training: dict[str, dict[str, Any]] = {}
    for name, dropped in variants.items():
        named = "without-" + "-".join(dropped) if dropped else "full"
        sample = (
            f"-n{len(lists['train'])}-v{len(lists['validation'])}-s{seed}"
            if train_lists is not None or val_lists is not None
            else ""
        )
        out = work / (f"model-{named}" + sample + (f"-{fp}" if fp else ""))
        config = RankerTrainConfig(depth=depth, dropped=dropped, threads=threads, seed=seed)
        report = train_ranker(
            data,
            out,
            train_lists_,
            config,
            log=log,
            reranker_fingerprint=None if "cross" in dropped else fp,
        )
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

    def ranked(
        test: Sequence[Any], rank: Callable[[Any, Sequence[Any]], Sequence[Any]]
    ) -> dict[str, dict[str, float]]:
        """Each list's top ``depth`` reordered by ``rank(item, top)``, the rest as retrieved."""
        return {
            item.query_id: _run_of(
                [h.product_id for h in rank(item, item.hits[:depth])]
                + [h.product_id for h in item.hits[depth:]]
            )
            for item in test
        }

    def blend(item: Any, top: Sequence[Any]) -> Sequence[Any]:
        """Today's stage: the logits blended with the first stage's scores."""
        assert model is not None
        cross = np.array([h.cross for h in top], dtype=np.float32)
        return rerank_hits(top, cross, model.retrieval_weight)

    def by(ranker: LearnedRanker) -> Callable[[Any, Sequence[Any]], Sequence[Any]]:
        return lambda item, top: ranker.rank(item.query, top, item.corrected)

    if model is not None:
        runs[BLEND] = ranked(lists["test"], blend)
    for name, ranker in rankers.items():
        runs[name] = ranked(lists["test"], by(ranker))
    variant_pairs: dict[str, str] = {}  # the variant's stage -> its fp32 counterpart
    if model_v is not None:
        n = len(lists["test"])
        path = work / f"lists-test-{build}-n{n}-s{seed}-d{depth}-cross-{fp}-{tag}.pkl"
        test_v = _cached_lists(path, lambda: with_cross(lists["test"], model_v, depth, log), log)
        full = "hybrid + learned stage"
        for base, name_v, rank in (
            (BLEND, f"{BLEND}, {label}", blend),
            (full, f"{full}, {label} cross-encoder", by(rankers[full])),
        ):
            runs[name_v] = ranked(test_v, rank)
            variant_pairs[name_v] = base
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
        for base, tag in (("hybrid", "hybrid"), ("BM25", "bm25"), (BLEND, "blend")):
            if name == base or base not in runs or (tag == "blend" and name == "hybrid"):
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
    variant_tests: dict[str, dict[str, float]] = {}
    for name, base in variant_pairs.items():
        pt = paired_test(per_query[base]["ndcg@10"], per_query[name]["ndcg@10"])
        variant_tests[name] = {"delta": pt.delta, "rel": pt.relative_delta, "p": pt.p_value}

    # latency of the stage: features + predict + sort, per test query (bench_ltr_latency)
    load0 = os.getloadavg()[0]
    latency = measure_latency(rankers["hybrid + learned stage"], lists["test"], depth, False)
    load = (load0 + os.getloadavg()[0]) / 2

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
        train_lists=len(lists["train"]) if train_lists is not None or excluded else 0,
        excluded_queries=n_excluded,
        end_to_end_ms=end_to_end(
            index, model, rankers, lists["test"][:e2e_queries], depth, SearchPipeline, log
        )
        if e2e_queries
        else {},
        variant=label,
        variant_tests=variant_tests,
    )
    (work / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (work / "report.md").write_text(report.markdown())
    return report

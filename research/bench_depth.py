"""Rerank depth: NDCG@10 and latency of the pipeline at each number of reranked candidates.

Quality: every scored query of a split is retrieved once (hybrid, top :data:`RETRIEVED`); at
depth ``d`` its top ``d`` hits are cross-scored as a search at that depth scores them (the
corrected query, that query's ``d`` candidates per call) and reranked (blended with the first
stage as :func:`rerank.pipeline.rerank_hits` does, with the reranker's saved blend weight),
followed by the rest in retrieval order: what ``SearchPipeline.search(..., rerank_depth=d)``
ranks. Each depth is paired-tested against the pipeline's default depth. Recall@100 is
the same at every depth by construction: a depth reorders, never changes, the 100 retrieved.

Latency: the whole ``SearchPipeline.search`` (retrieve + rerank ``d``) per query, p50/p99,
after a warm-up, with the pipeline's own thread settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError

if TYPE_CHECKING:  # torch and the models load only when a benchmark runs (the CLI imports this)
    import numpy as np

    from research.bench_quality import Comparison, Run
    from research.bench_speed import Latency
    from retrieval.hits import RankedHit

DEFAULT_DEPTHS = (10, 20, 30, 50, 75, 100)
#: Hits returned per search, the cut NDCG@10 and Recall@10 read: a smaller depth would not be
#: what the pipeline does (it reranks at least ``k`` candidates).
MIN_DEPTH = 10
#: Hits retrieved per query: Recall@100 is read on them. The store prefetches max(k, 100) per
#: source, so the top d of these 100 are the hits a search with k = d gets, for d <= 100.
RETRIEVED = 100
MAX_DEPTH = RETRIEVED
METRICS = ("ndcg@10", "recall@10", "recall@100")
TESTED = ("ndcg@10", "recall@10")
#: Queries searched (untimed) before each depth is timed.
WARMUP_QUERIES = 10


def check_depths(depths: Sequence[int]) -> list[int]:
    """Rerank depths, sorted and unique, with the pipeline's default added (the baseline).

    Raises:
        ShopsearchError: No depth, or one outside [MIN_DEPTH, MAX_DEPTH].
    """
    from rerank.pipeline import DEFAULT_RERANK_DEPTH

    if not depths:
        raise ShopsearchError("no rerank depth given")
    bad = [d for d in depths if not MIN_DEPTH <= d <= MAX_DEPTH]
    if bad:
        raise ShopsearchError(
            f"rerank depths must be between {MIN_DEPTH} (the hits a search returns) and "
            f"{MAX_DEPTH} (the hits retrieved), got {', '.join(map(str, bad))}"
        )
    return sorted({*depths, DEFAULT_RERANK_DEPTH})


def parse_depths(text: str) -> list[int]:
    """``"10,20,50"`` -> ``[10, 20, 50]`` checked by :func:`check_depths`.

    Raises:
        ShopsearchError: Not integers separated by commas, or a depth out of range.
    """
    try:
        depths = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ShopsearchError("give integers separated by commas, e.g. 10,20,50") from None
    return check_depths(depths)


def rank_at_depth(
    hits: Sequence[RankedHit], cross: np.ndarray, depth: int, retrieval_weight: float
) -> list[RankedHit]:
    """The ranking ``SearchPipeline`` gives at ``rerank_depth=depth``, from scores already made.

    Args:
        hits: The first stage's hits, best first (at least the top ``depth``).
        cross: Cross-encoder logits of the first ``len(cross) >= min(depth, len(hits))`` hits.
        depth: Candidates reranked.
        retrieval_weight: The blend weight (:func:`rerank.pipeline.blend`).

    Returns:
        The top ``depth`` reranked, then the other hits in retrieval order.
    """
    from rerank.blend import rerank_hits

    head = list(hits[:depth])
    return rerank_hits(head, cross[: len(head)], retrieval_weight) + list(hits[depth:])


def depth_runs(
    pipeline: Any,
    texts: Sequence[str],
    qids: Sequence[str],
    depths: Sequence[int],
    log: Callable[[str], None] = print,
    batch: int = 64,
) -> dict[int, Run]:
    """Per depth, the run of every query: one retrieval for all depths, and the top d of each
    query's hits scored as ``SearchPipeline`` scores them at depth d.

    The cross-encoder reads the query the retriever corrected, one query's top d per call: an
    int8 model's activation scale depends on the batch, so the top 10 scored beside 40 more
    would not be what a search at depth 10 computes.
    """
    from research.bench_quality import _run_from
    from retrieval.hits import hit_text

    retriever, reranker = pipeline.retriever, pipeline.reranker
    hit_lists = []
    for i in range(0, len(texts), batch):
        hit_lists.extend(
            retriever.search_batch(list(texts[i : i + batch]), k=RETRIEVED, mode="hybrid")
        )
    n_pairs = sum(min(d, len(hits)) for hits in hit_lists for d in depths)
    log(f"cross-scoring {n_pairs} (query, product) pairs: each query's top d, at each depth d")
    ranked: dict[int, list[list[RankedHit]]] = {d: [] for d in depths}
    for text, hits in zip(texts, hit_lists, strict=True):
        read = hits.corrected or text
        product_texts = [hit_text(h) for h in hits[: max(depths)]]
        for d in depths:
            scores = reranker.score(read, product_texts[:d])
            ranked[d].append(rank_at_depth(hits, scores, d, reranker.retrieval_weight))
    return {d: _run_from(lists, qids) for d, lists in ranked.items()}


@dataclass(frozen=True)
class DepthRow:
    """One rerank depth: quality, its tests against the default depth, latency."""

    depth: int
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    comparisons: list[Comparison]
    latency: Latency

    def p_value(self, metric: str) -> float | None:
        """p of the paired test against the default depth (None for the default itself)."""
        return next((c.p_value for c in self.comparisons if c.metric == metric), None)


@dataclass(frozen=True)
class DepthReport:
    """What ``shopsearch bench-depth`` measured."""

    data: str
    index: str
    reranker: str
    backend: str
    quantize: str | None
    runtime: dict[str, Any]
    split: str
    queries_scored: int
    queries_in_split: int
    threshold: float
    retrieval_weight: float
    default_depth: int
    retrieved: int
    recall_at_100: float
    rows: list[DepthRow]
    latency_queries: int
    machine: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (per-query values included, for re-analysis)."""
        return asdict(self)

    def markdown(self) -> str:
        """The table of depths and what it was measured on."""
        quant = f" {self.quantize}" if self.quantize else ""
        lines = [
            f"Rerank depth on {self.data}, split `{self.split}`: {self.queries_scored} of "
            f"{self.queries_in_split} queries have a product graded >= {self.threshold} and are "
            f"scored. Index {self.index}, reranker {self.reranker} ({self.backend}{quant}, "
            f"blend weight {self.retrieval_weight:g}). Machine: {self.machine}.",
            "",
            f"Each depth d reranks the top d of the same {self.retrieved} hybrid hits, scored as a "
            "search at depth d scores them; the rest keep their retrieval order. p: paired "
            f"randomization test against the default depth {self.default_depth}. Latency: "
            f"SearchPipeline.search (retrieve + rerank d, k=10) over {self.latency_queries} "
            "queries after a warm-up, one depth after the other.",
            "",
            "| depth | NDCG@10 | p vs default | Recall@10 | p vs default | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = [str(r.depth) + (" (default)" if r.depth == self.default_depth else "")]
            for metric in TESTED:
                p = r.p_value(metric)
                cells += [f"{r.means[metric]:.4f}", "-" if p is None else _p(p)]
            cells += [f"{r.latency.p50_ms:.1f}", f"{r.latency.p99_ms:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "`*`: p < 0.05.",
            "",
            f"Recall@100 is {self.recall_at_100:.4f} at every depth, by construction: a depth "
            f"reorders the {self.retrieved} retrieved hits and never changes which they are.",
        ]
        return "\n".join(lines)


def _p(p: float) -> str:
    return f"{p:.4f}" + (" *" if p < 0.05 else "")


def run_depth_benchmark(
    data_dir: str | Path,
    index: str | Path,
    reranker_model: str | Path,
    workdir: str | Path,
    *,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    backend: str = "torch",
    quantize: str | None = None,
    split: str = "test",
    latency_queries: int = 100,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> DepthReport:
    """Measures every depth and writes ``depth.json``, ``depth.md`` and ``depth.png``.

    Args:
        data_dir: A benchmark directory (``shopsearch import homedepot``).
        index: An index of the benchmark's catalog (its recorded fusion weights are used).
        reranker_model: A reranker folder; its saved blend weight is used.
        depths: Rerank depths in [MIN_DEPTH, MAX_DEPTH]; the pipeline's default is added.
        backend, quantize: How both the query tower and the reranker run (as ``SearchPipeline.open``).
        latency_queries: Queries timed per depth (the first of the scored ones).

    Raises:
        ShopsearchError: Bad depths, a split without scored queries, or what opening the
            index, the reranker or the data raises.
    """
    from evaluation.data import load_benchmark
    from evaluation.metrics import evaluate, mean_scores
    from rerank.pipeline import DEFAULT_RERANK_DEPTH, SearchPipeline
    from research.bench_quality import compared, scored_queries
    from research.bench_speed import _percentiles, machine_description, time_queries

    start = time.perf_counter()
    depths = check_depths(depths)
    workdir = Path(workdir)
    data = load_benchmark(data_dir)
    for problem in data.problems:
        log(f"data: {problem}")
    qids, texts, qrels, in_split = scored_queries(data, split)
    if not qids:
        raise ShopsearchError(f"{data_dir}: no query of the {split} split has a relevant product")
    with SearchPipeline.open(
        index, reranker=reranker_model, device=device, backend=backend, quantize=quantize
    ) as pipeline:
        log(
            f"{len(qids)} scored {split} queries; depths {', '.join(map(str, depths))}; blend "
            f"weight {pipeline.retrieval_weight:g}"
        )
        runs = depth_runs(pipeline, texts, qids, depths, log=log)
        lat_texts = texts[:latency_queries]
        warm = texts[latency_queries : latency_queries + WARMUP_QUERIES] or texts[:WARMUP_QUERIES]
        latency: dict[int, Latency] = {}
        for d in depths:
            samples = time_queries(
                lambda q, d=d: pipeline.search(q, k=MIN_DEPTH, rerank_depth=d, mode="hybrid"),
                lat_texts,
                warm,
            )
            latency[d] = _percentiles(f"hybrid + rerank {d}", samples)
            log(f"depth {d}: p50 {latency[d].p50_ms:.1f} ms, p99 {latency[d].p99_ms:.1f} ms")
        runtime = {
            "query_tower": dict(getattr(pipeline.retriever.encoder, "runtime", {}) or {}),
            "reranker": dict(pipeline.reranker.runtime),
        }
        weight = pipeline.retrieval_weight
    per_depth = {
        d: evaluate(
            qrels, runs[d], metrics=METRICS, threshold=data.threshold, gain_offset=data.gain_offset
        )
        for d in depths
    }
    recall_100 = {d: mean_scores(per_depth[d])["recall@100"] for d in depths}
    if len({round(v, 12) for v in recall_100.values()}) != 1:  # pragma: no cover - a bug
        raise AssertionError(f"Recall@100 differs between depths: {recall_100}")
    base = per_depth[DEFAULT_RERANK_DEPTH]
    rows = []
    for d in depths:
        comparisons = [
            compared(f"depth {DEFAULT_RERANK_DEPTH}", f"depth {d}", m, base[m], per_depth[d][m])
            for m in TESTED
            if d != DEFAULT_RERANK_DEPTH
        ]
        rows.append(DepthRow(d, mean_scores(per_depth[d]), per_depth[d], comparisons, latency[d]))
    report = DepthReport(
        data=str(data_dir),
        index=str(index),
        reranker=str(reranker_model),
        backend=backend,
        quantize=quantize,
        runtime=runtime,
        split=split,
        queries_scored=len(qids),
        queries_in_split=in_split,
        threshold=data.threshold,
        retrieval_weight=weight,
        default_depth=DEFAULT_RERANK_DEPTH,
        retrieved=RETRIEVED,
        recall_at_100=recall_100[DEFAULT_RERANK_DEPTH],
        rows=rows,
        latency_queries=len(lat_texts),
        machine=machine_description(),
        seconds=time.perf_counter() - start,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "depth.json").write_text(json.dumps(report.as_dict(), indent=1))
    (workdir / "depth.md").write_text(report.markdown() + "\n")
    plot_depth(report, workdir / "depth.png")
    return report


def plot_depth(report: DepthReport, path: Path) -> None:
    """Two panels over the depth: NDCG@10, and p50/p99 latency of the whole search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = [r.depth for r in report.rows]
    fig, (q_ax, t_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    q_ax.plot(depths, [r.means["ndcg@10"] for r in report.rows], "o-", label="NDCG@10")
    q_ax.set_ylabel("NDCG@10")
    q_ax.set_title(f"Quality ({report.split}, {report.queries_scored} queries)")
    t_ax.plot(depths, [r.latency.p99_ms for r in report.rows], "o-", label="p99")
    t_ax.plot(depths, [r.latency.p50_ms for r in report.rows], "s--", label="p50")
    t_ax.set_ylabel("ms per search (retrieve + rerank)")
    quant = f" {report.quantize}" if report.quantize else ""
    t_ax.set_title(f"Latency ({report.backend}{quant}, {report.latency_queries} queries)")
    t_ax.legend(loc="upper left", fontsize=8)
    for ax in (q_ax, t_ax):
        ax.axvline(report.default_depth, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("rerank depth (candidates reranked)")
        ax.set_xticks(depths)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

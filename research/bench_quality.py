"""Quality benchmark: every stage on a benchmark's test split over the full catalog.

Stages: BM25, dense zero-shot, dense fine-tuned, hybrid (RRF of dense and BM25 in Qdrant), and
hybrid + cross-encoder reranker. Each is scored by the metrics in ``evaluation.metrics``, compared
with a paired randomization test over queries, and timed per query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.data import load_benchmark
from evaluation.metrics import evaluate, mean_scores, ranking
from evaluation.stats import paired_test
from indexer.build import index_catalog
from retrieval.encoder import BiEncoder
from retrieval.hits import RankedHit
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation, open_backend

METRICS = ("recall@10", "recall@50", "recall@100", "precision@10", "ndcg@10", "mrr@10", "judged@10")
HEADLINE = ("recall@100", "ndcg@10", "mrr@10")
#: Weights of the first-stage score tried on the validation split when blending (see rerank.blend).
BLEND_GRID = (0.0, 0.3, 0.5, 0.7, 1.0)
Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Stage:
    """One system's results on the benchmark."""

    name: str
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    latency_p50_ms: float
    latency_p99_ms: float
    recall_curve: list[float] = field(repr=False)


@dataclass(frozen=True)
class Comparison:
    """A paired test between two stages on one metric."""

    baseline: str
    system: str
    metric: str
    mean_baseline: float
    mean_system: float
    relative_delta: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class QualityReport:
    """What ``shopsearch bench`` measured."""

    data: str
    split: str
    queries_scored: int
    queries_in_split: int
    threshold: float
    stages: list[Stage]
    comparisons: list[Comparison]
    machine: str
    seconds: float
    blend: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (per-query values included, for re-analysis)."""
        return asdict(self)

    def markdown(self) -> str:
        """Tables of the stages and the comparisons."""
        lines = [
            f"Benchmark {self.data}, split `{self.split}`: {self.queries_scored} of {self.queries_in_split} "
            f"queries have a product graded >= {self.threshold} and are scored; unjudged products count as "
            f"not relevant. Machine: {self.machine}.",
            "",
            "| stage | "
            + " | ".join(m.replace("@", "@") for m in METRICS)
            + " | p50 ms | p99 ms |",
            "|---|" + "---|" * (len(METRICS) + 2),
        ]
        for s in self.stages:
            vals = " | ".join(f"{s.means[m]:.3f}" for m in METRICS)
            lines.append(f"| {s.name} | {vals} | {s.latency_p50_ms:.1f} | {s.latency_p99_ms:.1f} |")
        lines += [
            "",
            "| system | baseline | metric | system | baseline | rel. change | p (paired randomization) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.comparisons:
            mark = " *" if c.significant else ""
            lines.append(
                f"| {c.system} | {c.baseline} | {c.metric} | {c.mean_system:.3f} | {c.mean_baseline:.3f} | "
                f"{c.relative_delta:+.1%} | {c.p_value:.4f}{mark} |"
            )
        lines.append("\n`*`: p < 0.05.")
        if self.blend:
            tried = ", ".join(
                f"{float(w):g}: {v:.4f}" for w, v in self.blend["validation_ndcg@10"].items()
            )
            lines.append(
                f"\nReranker blend: weight of the first-stage score {self.blend.get('how', '')} "
                f"(validation NDCG@10 by weight: {tried or 'none'}) -> {self.blend['chosen']:g}."
            )
        return "\n".join(lines)


def _curve(qrels, run: Run, threshold: float, max_k: int = 100) -> list[float]:
    """Mean Recall@K for K = 1..max_k over the scored queries."""
    scored = [q for q, j in qrels.items() if any(g >= threshold for g in j.values())]
    out = np.zeros(max_k)
    for q in scored:
        rel = {p for p, g in qrels[q].items() if g >= threshold}
        ranked = ranking(run.get(q, {}))[:max_k]
        hits = np.cumsum([1.0 if p in rel else 0.0 for p in ranked] + [0.0] * (max_k - len(ranked)))
        out += hits / len(rel)
    return (out / max(1, len(scored))).tolist()


def _index_for(
    encoder: BiEncoder, catalog: Path, workdir: Path, log: Callable[[str], None]
) -> Path:
    """An index of the catalog built with this encoder, reused across runs."""
    runtime = getattr(encoder, "runtime", None) or {"backend": "torch"}
    tag = (
        "" if runtime["backend"] == "torch" else f"-{runtime['backend']}{runtime['quantize'] or ''}"
    )
    path = workdir / f"index-{encoder.fingerprint}{tag}"
    backend = open_backend(IndexLocation(path=path))
    if backend.exists():
        col = backend.open()
        ok = col.manifest.get("source") == str(catalog.resolve())
        spelled = "spelling" in col.manifest
        col.close()
        if ok and not spelled:  # built before the vocabulary was stored: add it, embed nothing
            log(f"adding the spelling vocabulary to {path}")
            index_catalog(
                catalog,
                IndexLocation(path=path),
                mode="upsert",
                encoder=encoder,
                rejects_path=workdir / "rejects.csv",
                progress=False,
            )
        if ok:
            log(f"reusing {path}")
            return path
    log(f"indexing {catalog} with {encoder.name} into {path}")
    index_catalog(
        catalog, IndexLocation(path=path), encoder=encoder, rejects_path=workdir / "rejects.csv"
    )
    return path


def choose_blend_weight(
    runs_for: Callable[[Sequence[float]], dict[float, Run]],
    qrels: dict[str, dict[str, float]],
    data: Any,
    saved: float,
    log: Callable[[str], None] = print,
) -> tuple[float, dict[float, float], str]:
    """The blend weight with the best validation NDCG@10 over :data:`BLEND_GRID`.

    No choice is made over empty or NaN statistics: with no scored validation query (or a
    NaN score), the weight saved with the model is kept, and the returned note says so.

    Returns:
        (weight, validation NDCG@10 per weight tried, how the weight was chosen).
    """
    if not qrels or not any(any(g >= data.threshold for g in j.values()) for j in qrels.values()):
        log(f"no scored validation query: keeping the model's blend weight {saved:g}")
        return saved, {}, "kept from the model (no validation queries to choose on)"
    log(f"choosing the blend weight on {len(qrels)} validation queries")
    vscore = {
        w: mean_scores(
            evaluate(
                qrels,
                r,
                metrics=("ndcg@10",),
                threshold=data.threshold,
                gain_offset=data.gain_offset,
            )
        )["ndcg@10"]
        for w, r in runs_for(BLEND_GRID).items()
    }
    finite = {w: v for w, v in vscore.items() if v == v}  # NaN != NaN
    if not finite:
        log(f"validation NDCG@10 undefined: keeping the model's blend weight {saved:g}")
        return saved, vscore, "kept from the model (validation NDCG@10 undefined)"
    chosen = max(finite, key=lambda w: (finite[w], -w))
    log(
        "validation NDCG@10 by retrieval weight: "
        + ", ".join(f"{w:g}: {v:.4f}" for w, v in vscore.items())
        + f" -> {chosen:g}"
    )
    return chosen, vscore, "chosen on the validation split"


def _run_from(batches: Sequence[Sequence[RankedHit]], qids: Sequence[str]) -> Run:
    return {
        q: {h.product_id: float(len(hits) - i) for i, h in enumerate(hits)}
        for q, hits in zip(qids, batches, strict=True)
    }


def scored_queries(data: Any, split: str) -> tuple[list[str], list[str], Qrels, int]:
    """The queries of a split that have a relevant product (graded >= the threshold).

    Returns:
        (query ids sorted, their texts, the split's qrels, how many queries the split holds).
    """
    frame, qrels = data.split(split)
    scored = {q for q, j in qrels.items() if any(g >= data.threshold for g in j.values())}
    queries = {
        q: t
        for q, t in zip(frame["query_id"].to_list(), frame["query"].to_list(), strict=True)
        if q in scored
    }
    qids = sorted(queries)
    return qids, [queries[q] for q in qids], qrels, frame.height


def _timed(fn: Callable[[str], object], queries: Sequence[str]) -> tuple[float, float]:
    for q in queries[:3]:
        fn(q)
    samples = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - t0)
    arr = np.asarray(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run_quality_benchmark(
    data_dir: str | Path,
    workdir: str | Path,
    *,
    retriever_model: str | None = None,
    reranker_model: str | None = None,
    base_model: str | None = None,
    split: str = "test",
    candidates: int = 50,
    latency_queries: int = 200,
    device: str | None = None,
    variants: Sequence[tuple[str, str | None]] = (),
    log: Callable[[str], None] = print,
) -> QualityReport:
    """Runs every stage and writes ``bench.json``, ``bench.md`` and ``recall.png`` in ``workdir``.

    Args:
        variants: ``(backend, quantize)`` pairs (e.g. ``("onnx", "int8")``) run beside the fp32
            torch stages: the tuned hybrid (index built and queried by that backend) and, with a
            reranker, the reranked stage with the same blend weight; each is paired-tested
            against its fp32 stage ("<stage> [onnx int8]").
    """
    from research.bench_speed import machine_description

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_benchmark(data_dir)
    for problem in data.problems:
        log(f"data: {problem}")
    qids, texts, qrels, in_split = scored_queries(data, split)
    lat_texts = texts[:latency_queries]
    catalog = Path(data_dir) / "catalog.parquet"
    runs: dict[str, Run] = {}
    blend_note: dict[str, Any] | None = None
    latency: dict[str, tuple[float, float]] = {}

    def stage(name: str, retriever: Retriever, mode: str) -> None:
        log(f"stage {name}")
        batches = []
        for i in range(0, len(texts), 64):
            batches.extend(retriever.search_batch(texts[i : i + 64], k=100, mode=mode))
        runs[name] = _run_from(batches, qids)
        latency[name] = _timed(lambda q: retriever.search(q, k=100, mode=mode), lat_texts)

    base = BiEncoder(base_model, device=device)
    with Retriever.open(_index_for(base, catalog, workdir, log), encoder=base) as zero:
        stage("bm25", zero, "bm25")
        stage("dense zero-shot", zero, "dense")
        if retriever_model is None:
            stage("hybrid zero-shot", zero, "hybrid")
    best_hybrid = "hybrid zero-shot"
    final_retriever: Retriever | None = None
    if retriever_model is not None:
        tuned = BiEncoder(retriever_model, device=device)
        final_retriever = Retriever.open(_index_for(tuned, catalog, workdir, log), encoder=tuned)
        stage("dense fine-tuned", final_retriever, "dense")
        stage("hybrid fine-tuned", final_retriever, "hybrid")
        best_hybrid = "hybrid fine-tuned"
    if reranker_model is not None:
        from rerank.blend import rerank_hits
        from rerank.cross_encoder import Reranker
        from rerank.pipeline import SearchPipeline
        from retrieval.hits import hit_text

        reranker = Reranker.load(reranker_model, device=device)
        owner = final_retriever or Retriever.open(
            _index_for(base, catalog, workdir, log), encoder=base
        )
        log(f"stage + reranker (top {candidates} of {best_hybrid})")

        def reranked_runs(
            split_qids: list[str],
            split_texts: list[str],
            split_qrels,
            weights,
            owner=owner,
            reranker=reranker,
        ) -> dict[float, Run]:
            batches = []
            for i in range(0, len(split_texts), 64):
                batches.extend(owner.search_batch(split_texts[i : i + 64], k=100, mode="hybrid"))
            out: dict[float, Run] = {w: {} for w in weights}
            for q, t, hits in zip(split_qids, split_texts, batches, strict=True):
                head = hits[:candidates]
                # as the pipeline scores them: the corrected query, one query's candidates
                # per call (an int8 model's activation scale depends on the batch); once,
                # every weight blends the same logits
                c = reranker.score(hits.corrected or t, [hit_text(h) for h in head])
                for w in weights:
                    ranked = rerank_hits(head, c, w) + list(hits[candidates:])
                    out[w][q] = {h.product_id: float(len(ranked) - r) for r, h in enumerate(ranked)}
            return out

        # the blend weight is chosen on the validation split, never on the split reported
        vframe, vqrels = data.split("validation")
        vscored = {q for q, j in vqrels.items() if any(g >= data.threshold for g in j.values())}
        vpairs = [
            (q, t)
            for q, t in zip(vframe["query_id"].to_list(), vframe["query"].to_list(), strict=True)
            if q in vscored
        ]
        chosen, vscore, how = choose_blend_weight(
            lambda weights: reranked_runs(
                [q for q, _ in vpairs], [t for _, t in vpairs], vqrels, weights
            ),
            vqrels,
            data,
            saved=reranker.retrieval_weight,
            log=log,
        )
        truns = reranked_runs(qids, texts, qrels, (0.0, chosen))
        runs[f"{best_hybrid} + cross-encoder alone"] = truns[0.0]
        name = f"{best_hybrid} + reranker (blend {chosen:g})"
        runs[name] = truns[chosen]
        reranker.retrieval_weight = chosen
        pipeline = SearchPipeline(owner, reranker)
        latency[f"{best_hybrid} + cross-encoder alone"] = latency[name] = _timed(
            lambda q: pipeline.search(q, k=10, rerank_depth=candidates, mode="hybrid"),
            lat_texts[: max(20, latency_queries // 4)],
        )
        if how.startswith("chosen"):  # the setting belongs with the model it was chosen for
            from rerank.cross_encoder import write_settings

            write_settings(reranker_model, retrieval_weight=chosen)
        blend_note = {
            "grid": list(BLEND_GRID),
            "validation_ndcg@10": vscore,
            "chosen": chosen,
            "how": how,
        }
        if owner is not final_retriever:
            owner.close()
    # a variant runs with the fp32 stage's fusion (weights recorded with that index, or the
    # default), so the two differ only in how the models run
    fp32_tuning = final_retriever.tuning if final_retriever is not None else None
    if final_retriever is not None:
        final_retriever.close()
    for v_backend, v_quantize in variants:
        tag = f"[{v_backend}{' ' + v_quantize if v_quantize else ''}]"
        v_model = retriever_model if retriever_model is not None else base_model
        v_enc = BiEncoder(v_model, device=device, backend=v_backend, quantize=v_quantize)
        v_ret = Retriever.open(_index_for(v_enc, catalog, workdir, log), encoder=v_enc)
        if fp32_tuning is not None:
            v_ret.tuning = fp32_tuning
        stage(f"{best_hybrid} {tag}", v_ret, "hybrid")
        if reranker_model is not None:
            v_rr = Reranker.load(
                reranker_model, backend=v_backend, quantize=v_quantize, retrieval_weight=chosen
            )
            v_name = f"{best_hybrid} + reranker (blend {chosen:g}) {tag}"
            log(f"stage {v_name}")
            runs[v_name] = reranked_runs(qids, texts, qrels, (chosen,), v_ret, v_rr)[chosen]
            v_pipe = SearchPipeline(v_ret, v_rr)
            latency[v_name] = _timed(
                lambda q, p=v_pipe: p.search(q, k=10, rerank_depth=candidates, mode="hybrid"),
                lat_texts[: max(20, latency_queries // 4)],
            )
        v_ret.close()

    stages = []
    for name, run in runs.items():
        per_query = evaluate(
            qrels, run, metrics=METRICS, threshold=data.threshold, gain_offset=data.gain_offset
        )
        stages.append(
            Stage(
                name,
                mean_scores(per_query),
                per_query,
                latency[name][0],
                latency[name][1],
                _curve(qrels, run, data.threshold),
            )
        )
    report = QualityReport(
        data=str(data_dir),
        split=split,
        queries_scored=len(qids),
        queries_in_split=in_split,
        threshold=data.threshold,
        stages=stages,
        blend=blend_note,
        comparisons=_comparisons(stages),
        machine=machine_description(),
        seconds=time.perf_counter() - start,
    )
    (workdir / "bench.json").write_text(json.dumps(report.as_dict(), indent=1))
    (workdir / "bench.md").write_text(report.markdown() + "\n")
    plot_recall(stages, workdir / "recall.png")
    return report


def _comparisons(stages: Sequence[Stage]) -> list[Comparison]:
    all_stages = list(stages)
    by = {s.name: s for s in stages}
    pairs: list[tuple[str, str, str]] = []
    variants = [s.name for s in stages if s.name.endswith("]") and " [" in s.name]
    stages = [s for s in stages if s.name not in variants]
    retrievers = [s.name for s in stages if " + " not in s.name]
    singles = [n for n in retrievers if not n.startswith("hybrid")]
    for metric in HEADLINE:
        for n in retrievers:
            if n != "bm25":
                pairs.append(("bm25", n, metric))
        if "dense fine-tuned" in by:
            pairs.append(("dense zero-shot", "dense fine-tuned", metric))
        for h in (n for n in retrievers if n.startswith("hybrid")):
            best_single = max(singles, key=lambda n: by[n].means[metric])
            pairs.append((best_single, h, metric))
        for r in (s.name for s in stages if " + " in s.name):
            best = max(retrievers, key=lambda n: by[n].means[metric])
            pairs.append((best, r, metric))
    for metric in HEADLINE:  # each backend variant against its fp32 torch stage
        for v in variants:
            base = v.rsplit(" [", 1)[0]
            if base in by:
                pairs.append((base, v, metric))
    by.update({v.name: v for v in all_stages if v.name in variants})
    out = []
    seen = set()
    for base, system, metric in pairs:
        if (base, system, metric) in seen or base == system:
            continue
        seen.add((base, system, metric))
        out.append(
            compared(base, system, metric, by[base].per_query[metric], by[system].per_query[metric])
        )
    return out


def compared(
    base: str, system: str, metric: str, a: dict[str, float], b: dict[str, float]
) -> Comparison:
    """``system`` against ``base`` on ``metric``: a paired randomization test over queries."""
    t = paired_test(a, b, method="randomization")
    return Comparison(
        base, system, metric, t.mean_a, t.mean_b, t.relative_delta, t.p_value, t.p_value < 0.05
    )


def plot_recall(stages: Sequence[Stage], path: Path) -> None:
    """Recall@K curves, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ks = np.arange(1, 101)
    for s in stages:
        ax.plot(ks, s.recall_curve, label=s.name)
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Recall@K per stage")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

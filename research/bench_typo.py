"""Typo benchmark: spelling correction, fusion weights and robustness to noisy queries.

One run, side by side on a benchmark's test split:

* fusion weights (dense weight against BM25's 1.0) and what the dense tower reads when a query
  was corrected, chosen on the validation split and recorded with the index
  (``indexer.build.tune_index``);
* every stage (BM25, dense, hybrid, and the reranked pipeline when a reranker is given) with
  and without correction, on all scored queries and on the subset with an out-of-vocabulary
  word, with paired randomization tests;
* a robustness curve: NDCG@10 and Recall@100 as 0/5/10/20% of query letters get a seeded
  typo (``retrieval.noise``), per stage;
* the corrector's precision: every correction made on the test queries, flagged when the
  word it changed is an English word (symspellpy's bundled English frequency list, a proxy
  for "was right"), with a sample listed;
* typo-augmented against plain training (part ``training``, with the plain models given):
  dense and hybrid retrieval and the pipeline of each pair of models, at the same fusion, on
  clean and noisy queries, paired-tested.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from evaluation.data import load_benchmark
from evaluation.metrics import evaluate, mean_scores
from evaluation.stats import paired_test
from indexer.build import tune_index
from research.bench_quality import _index_for, _run_from
from retrieval.encoder import BiEncoder
from retrieval.retriever import QueryTuning, Retriever
from retrieval.spelling import vocabulary_words
from retrieval.store import IndexLocation
from training.noise import TypoNoise

METRICS = ("ndcg@10", "recall@100")
DENSE_WEIGHTS = (0.1, 0.25, 0.5, 0.75, 1.0)
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2)
#: What one run can do; a run of some of them reads the fusion recorded with the index.
PARTS = ("fusion", "stages", "robustness", "corrector", "training")
#: What a run does by default: ``training`` needs the plain models to compare with.
DEFAULT_PARTS = PARTS[:4]
#: Noise levels of the augmented-vs-plain comparison (0: the test queries as typed).
TRAINING_NOISE = (0.0, 0.1, 0.2)
Run = dict[str, dict[str, float]]


def report_name(parts: Sequence[str]) -> str:
    """``typo`` for a default run, else ``typo-<parts>`` (the report files' stem in the workdir)."""
    if set(parts) == set(DEFAULT_PARTS):
        return "typo"
    return "typo-" + "-".join(p for p in PARTS if p in parts)


@dataclass(frozen=True)
class TypoRow:
    """One system on one query subset, with and without correction."""

    stage: str
    subset: str
    queries: int
    metric: str
    as_typed: float
    corrected: float
    relative_delta: float
    p_value: float


@dataclass(frozen=True)
class PolicyRow:
    """One stage on one query subset: every proposed correction applied, against only those
    with evidence (``Retriever.corrections``)."""

    stage: str
    subset: str
    queries: int
    metric: str
    always: float
    with_evidence: float
    relative_delta: float
    p_value: float


@dataclass(frozen=True)
class AugmentRow:
    """One system trained plain and typo-augmented, on one query subset at one noise level."""

    stage: str
    subset: str
    noise: float
    queries: int
    metric: str
    plain: float
    augmented: float
    relative_delta: float
    p_value: float


@dataclass(frozen=True)
class TypoReport:
    """What ``shopsearch bench-typo`` measured."""

    data: str
    machine: str
    seconds: float
    queries_scored: int
    oov_queries: int
    tuning: dict[str, Any]
    validation: dict[str, float]
    default_check: dict[str, float]
    rows: list[TypoRow]
    robustness: dict[str, dict[str, list[float]]]
    corrections: dict[str, Any] = field(repr=False)
    augmentation: list[AugmentRow] = field(default_factory=list)
    models: dict[str, str | None] = field(default_factory=dict)
    #: The fusion both sides of the training comparison read (the plain index's).
    training_fusion: dict[str, Any] | None = None
    #: Corrections applied with evidence against all proposed ones, per stage (paired).
    policy: list[PolicyRow] = field(default_factory=list)

    def markdown(self) -> str:
        """The tables."""
        t = self.tuning
        lines = [
            f"Benchmark {self.data}: {self.queries_scored} scored test queries, {self.oov_queries} "
            f"with a word of 3+ letters the catalog does not know. Machine: {self.machine}.",
            "",
            f"Fusion chosen on validation ({t['how']}): dense weight {t['dense_weight']:g}, BM25 "
            f"{t['sparse_weight']:g}, dense reads the {t['dense_reads']} query.",
        ]
        if self.validation:  # the parts a run left out leave no empty table behind
            lines.append(
                "Validation NDCG@10 by (dense weight, dense reads): "
                + ", ".join(f"{k}: {v:.4f}" for k, v in self.validation.items())
            )
        if self.default_check:
            lines += [
                "",
                "Untuned-model check (test): "
                + ", ".join(f"{k}: {v:.4f}" for k, v in self.default_check.items()),
            ]
        lines.append("")
        if self.rows:
            lines += [
                "| stage | subset | n | metric | as typed | corrected | rel. change | p |",
                "|---|---|---|---|---|---|---|---|",
            ]
        for r in self.rows:
            lines.append(
                _compared(
                    (r.stage, r.subset, r.queries, r.metric),
                    r.as_typed,
                    r.corrected,
                    r.relative_delta,
                    r.p_value,
                )
            )
        if self.rows or self.policy:
            lines += ["", "`*`: p < 0.05 (paired randomization).", ""]
        if self.policy:
            lines += [
                "A correction applied only with evidence (the word unknown to the language too, "
                "and one product holding it beside another word of the query) against every "
                "proposed correction applied:",
                "",
                "| stage | subset | n | metric | always | with evidence | rel. change | p |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for r in self.policy:
                lines.append(
                    _compared(
                        (r.stage, r.subset, r.queries, r.metric),
                        r.always,
                        r.with_evidence,
                        r.relative_delta,
                        r.p_value,
                    )
                )
            lines.append("")
        levels = " | ".join(f"{x:.0%}" for x in NOISE_LEVELS)
        if self.robustness:
            lines += [
                f"| stage (corrected) | metric | {levels} |",
                "|---|---|" + "---|" * len(NOISE_LEVELS),
            ]
        for stage, by_metric in self.robustness.items():
            for metric, values in by_metric.items():
                lines.append(
                    f"| {stage} | {metric} | " + " | ".join(f"{v:.3f}" for v in values) + " |"
                )
        c = self.corrections
        lines += [
            "",
            f"Corrector on the test queries: {c['queries_corrected']} queries corrected "
            f"({c.get('queries_offered_only', 0)} more offered only, without evidence), "
            f"{c['words_changed']} words changed, {c['english_words_changed']} of them an English "
            f"word ({c['english_share']:.1%}; proxy for a word that was right). "
            + (
                f"Time per query (the correction a search applies, its evidence search "
                f"included; {c['latency_ms']['n']} queries after a "
                f"warm-up): p50 {c['latency_ms']['p50']:.3f} ms, p99 "
                f"{c['latency_ms']['p99']:.3f} ms, max {c['latency_ms']['max']:.3f} ms. "
                if c.get("latency_ms", {}).get("n")
                else ""
            )
            + "Sample:",
            "",
            "| query | changed | English word? |",
            "|---|---|---|",
        ]
        for s in c["sample"]:
            lines.append(f"| {s['query']} | {s['from']} -> {s['to']} | {s['english']} |")
        if self.augmentation:
            m = self.models
            lines += [
                "",
                f"Typo-augmented training ({m.get('retriever')}, {m.get('reranker')}) against "
                f"plain ({m.get('plain_retriever')}, {m.get('plain_reranker')}), both at the "
                "plain index's fusion (dense weight "
                f"{(self.training_fusion or {}).get('dense_weight', '?')}, dense reads the "
                f"{(self.training_fusion or {}).get('dense_reads', '?')} query), queries "
                "corrected; noise on a seeded sample of the test queries:",
                "",
                "| stage | subset | noise | n | metric | plain | augmented | rel. change | p |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in self.augmentation:
                lines.append(
                    _compared(
                        (r.stage, r.subset, f"{r.noise:.0%}", r.queries, r.metric),
                        r.plain,
                        r.augmented,
                        r.relative_delta,
                        r.p_value,
                    )
                )
        return "\n".join(lines)


def _compared(labels: Sequence[object], a: float, b: float, delta: float, p: float) -> str:
    """One table row of a paired comparison: its labels, both means, the change, p (``*``)."""
    mark = " *" if p < 0.05 else ""
    cells = " | ".join(str(x) for x in labels)
    return f"| {cells} | {a:.3f} | {b:.3f} | {delta:+.1%} | {p:.4f}{mark} |"


def _english_words() -> set[str]:
    from importlib.resources import files

    path = files("symspellpy") / "frequency_dictionary_en_82_765.txt"
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _scored(data, split: str) -> tuple[list[str], list[str], dict]:
    frame, qrels = data.split(split)
    ok = {q for q, j in qrels.items() if any(g >= data.threshold for g in j.values())}
    pairs = sorted(
        (q, t)
        for q, t in zip(frame["query_id"].to_list(), frame["query"].to_list(), strict=True)
        if q in ok
    )
    return [q for q, _ in pairs], [t for _, t in pairs], qrels


def _paired(
    a_scores: dict[str, dict[str, float]],
    b_scores: dict[str, dict[str, float]],
    subsets: Sequence[tuple[str, Sequence[str]]],
):
    """(subset, metric, queries, paired test of b against a) per subset and metric; a subset
    with no scored query (no out-of-vocabulary query in a benchmark) is left out."""
    for subset, ids in subsets:
        for m in METRICS:
            a = {q: a_scores[m][q] for q in ids if q in a_scores[m]}
            b = {q: b_scores[m][q] for q in ids if q in b_scores[m]}
            if a:
                yield subset, m, len(a), paired_test(a, b, method="randomization")


def _pipeline_batches(pipe, qs: Sequence[str], depth: int, correct: bool = True) -> list:
    """The pipeline's top 100 for each query (batches of 32), reranking ``depth`` hits."""
    batches = []
    for i in range(0, len(qs), 32):
        batches.extend(
            pipe.search_batch(list(qs[i : i + 32]), k=100, rerank_depth=depth, correct=correct)
        )
    return batches


def run_typo_benchmark(
    data_dir: str | Path,
    workdir: str | Path,
    *,
    retriever_model: str | None = None,
    reranker_model: str | None = None,
    base_model: str | None = None,
    candidates: int = 50,
    noise_queries: int | None = None,
    seed: int = 0,
    device: str | None = None,
    parts: Sequence[str] = DEFAULT_PARTS,
    plain_retriever: str | None = None,
    plain_reranker: str | None = None,
    log: Callable[[str], None] = print,
) -> TypoReport:
    """Runs the typo benchmark; writes ``typo.json`` and ``typo.md`` in ``workdir``.

    Args:
        data_dir: A benchmark folder (``catalog.parquet``, queries, qrels).
        workdir: Indexes (reused with ``shopsearch bench``'s) and the report.
        retriever_model: Fine-tuned bi-encoder; None benchmarks the zero-shot one only.
        reranker_model: Cross-encoder: adds the pipeline stage.
        base_model: Zero-shot bi-encoder (default: the packaged all-MiniLM-L6-v2).
        candidates: Hybrid hits the reranker reorders.
        noise_queries: Score the robustness curve on a seeded sample of this many queries.
        seed: Seeds the noise and the samples.
        device: Torch device.
        parts: Which of :data:`PARTS` to run; without ``fusion`` the weights recorded with
            the index are used. A run of other parts than :data:`DEFAULT_PARTS` writes
            ``typo-<parts>.json`` / ``.md``.
        plain_retriever: For part ``training``: the bi-encoder trained the same way without
            typos; ``retriever_model`` is then the typo-augmented one.
        plain_reranker: For part ``training``: the plain cross-encoder; with
            ``reranker_model`` (the augmented one) it adds the pipeline to the comparison,
            which is otherwise dense and hybrid retrieval only.
        log: Progress lines.

    Raises:
        ShopsearchError: Part ``training`` without both retrievers, or a plain reranker without
            an augmented one.
    """
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise ValueError(f"parts {sorted(unknown) or '(none)'}: choose from {PARTS}")
    if "training" in parts:
        if plain_retriever is None or retriever_model is None:
            raise ShopsearchError(
                "part 'training' compares two retrievers: give the typo-augmented one as "
                "--retriever and the plain one as --against-retriever"
            )
        if plain_reranker is not None and reranker_model is None:
            raise ShopsearchError(
                "part 'training': --against-reranker needs --reranker (the typo-augmented "
                "cross-encoder) to compare with"
            )
    from research.bench_speed import machine_description

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_benchmark(data_dir)
    catalog = Path(data_dir) / "catalog.parquet"
    qids, texts, qrels = _scored(data, "test")
    vqids, vtexts, vqrels = _scored(data, "validation")

    def score(run: Run, judged=qrels) -> dict[str, dict[str, float]]:
        return evaluate(
            judged, run, metrics=METRICS, threshold=data.threshold, gain_offset=data.gain_offset
        )

    def retrieve(r: Retriever, mode: str, ids, qs, correct: bool) -> Run:
        batches = []
        for i in range(0, len(qs), 64):
            batches.extend(r.search_batch(qs[i : i + 64], k=100, mode=mode, correct=correct))
        return _run_from(batches, ids)

    base = BiEncoder(base_model, device=device)
    base_path = _index_for(base, catalog, workdir, log)
    # the untuned default: zero-shot hybrid at the built-in weights against BM25 (test)
    # and at each dense weight (validation NDCG@10 picks a default for shops without labels)
    default_check: dict[str, float] = {}
    with Retriever.open(base_path, encoder=base) as zero:
        weights: Sequence[float] = DENSE_WEIGHTS if "fusion" in parts else ()
        if weights:
            means = mean_scores(score(retrieve(zero, "bm25", qids, texts, True)))
            for m in METRICS:
                default_check[f"bm25 {m}"] = means[m]
        for w in weights:
            zero.tuning = QueryTuning(dense_weight=w)
            v = mean_scores(score(retrieve(zero, "hybrid", vqids, vtexts, True), vqrels))
            default_check[f"zero-shot hybrid w={w:g} validation ndcg@10"] = v["ndcg@10"]
            means = mean_scores(score(retrieve(zero, "hybrid", qids, texts, True)))
            for m in METRICS:
                default_check[f"zero-shot hybrid w={w:g} {m}"] = means[m]
            log(f"zero-shot hybrid, dense weight {w:g}: validation NDCG@10 {v['ndcg@10']:.4f}")
    if retriever_model is not None:
        encoder = BiEncoder(retriever_model, device=device)
        path = _index_for(encoder, catalog, workdir, log)
    else:
        encoder, path = base, base_path
    retriever = Retriever.open(path, encoder=encoder)
    corrector = retriever.corrector
    assert corrector is not None  # _index_for adds a vocabulary to an index built without

    # fusion weights and dense reading, chosen on validation
    validation: dict[str, float] = {}
    for reads in ("original", "corrected") if "fusion" in parts else ():
        for w in DENSE_WEIGHTS:
            retriever.tuning = QueryTuning(dense_weight=w, dense_reads=reads)  # type: ignore[arg-type]
            run = retrieve(retriever, "hybrid", vqids, vtexts, True)
            value = mean_scores(score(run, vqrels))["ndcg@10"]
            validation[f"{w:g}/{reads}"] = value
            log(f"validation hybrid dense weight {w:g}, dense reads {reads}: NDCG@10 {value:.4f}")
    if validation:
        best = max(validation, key=lambda k: validation[k])
        w, reads = best.split("/")
        tuning = QueryTuning(
            dense_weight=float(w),
            dense_reads=reads,  # type: ignore[arg-type]
            how="chosen on the validation split (shopsearch bench-typo)",
        )
        retriever.close()
        tune_index(IndexLocation(path=path), tuning)
        log(f"recorded {tuning} with {path}")
        retriever = Retriever.open(path, encoder=encoder)
        assert retriever.tuning == tuning
    else:
        tuning = retriever.tuning
        log(f"using the fusion recorded with {path}: {tuning}")

    oov = [
        q
        for q, t in zip(qids, texts, strict=True)
        if any(len(x) >= 3 and not corrector.knows(x) for x in vocabulary_words(t))
    ]
    runs: dict[str, dict[bool, Run]] = {}
    always: dict[str, Run] = {}  # every proposed correction applied (the earlier policy)
    for name, mode in (("bm25", "bm25"), ("dense", "dense"), ("hybrid", "hybrid")):
        if "stages" not in parts:
            break
        log(f"stage {name}")
        runs[name] = {c: retrieve(retriever, mode, qids, texts, c) for c in (False, True)}
        retriever.require_evidence = False
        always[name] = retrieve(retriever, mode, qids, texts, True)
        retriever.require_evidence = True

    pipeline_fn = None
    if reranker_model is not None:
        from rerank.cross_encoder import Reranker
        from rerank.pipeline import SearchPipeline

        pipe = SearchPipeline(retriever, Reranker.load(reranker_model, device=device))

        def pipeline_fn(ids: Sequence[str], qs: Sequence[str], correct: bool) -> Run:
            return _run_from(_pipeline_batches(pipe, qs, candidates, correct), list(ids))

        if "stages" in parts:
            log("stage pipeline")
            runs["pipeline"] = {c: pipeline_fn(qids, texts, c) for c in (False, True)}
            retriever.require_evidence = False
            always["pipeline"] = pipeline_fn(qids, texts, True)
            retriever.require_evidence = True

    rows: list[TypoRow] = []
    for name, by in runs.items():
        for subset, m, n, t in _paired(
            score(by[False]), score(by[True]), (("all", qids), ("out-of-vocabulary", oov))
        ):
            rows.append(
                TypoRow(name, subset, n, m, t.mean_a, t.mean_b, t.relative_delta, t.p_value)
            )

    policy: list[PolicyRow] = []
    for name, run in always.items():
        for subset, m, n, t in _paired(
            score(run), score(runs[name][True]), (("all", qids), ("out-of-vocabulary", oov))
        ):
            policy.append(
                PolicyRow(name, subset, n, m, t.mean_a, t.mean_b, t.relative_delta, t.p_value)
            )

    # robustness curve
    rng = random.Random(seed)
    nq = list(zip(qids, texts, strict=True))
    if noise_queries is not None and noise_queries < len(nq):
        nq = sorted(rng.sample(nq, noise_queries))
    nids, ntexts = [q for q, _ in nq], [t for _, t in nq]
    robustness: dict[str, dict[str, list[float]]] = {}
    sampled = {q: qrels[q] for q in nids}  # the curve averages over the sampled queries only
    for level in NOISE_LEVELS if "robustness" in parts else ():
        noisy = TypoNoise(level, seed).many(ntexts, nids)
        log(f"noise {level:.0%}")
        stage_runs = {
            name: retrieve(retriever, mode, nids, noisy, True)
            for name, mode in (("bm25", "bm25"), ("dense", "dense"), ("hybrid", "hybrid"))
        }
        stage_runs["hybrid, as typed"] = retrieve(retriever, "hybrid", nids, noisy, False)
        if pipeline_fn is not None:
            stage_runs["pipeline"] = pipeline_fn(nids, noisy, True)
        for name, run in stage_runs.items():
            means = mean_scores(score(run, sampled))
            for m in METRICS:
                robustness.setdefault(name, {}).setdefault(m, []).append(means[m])

    # the corrector's precision on the test queries
    english = _english_words()
    changed = []
    seconds = []
    for t in texts[:20] if "corrector" in parts else ():  # warm-up: symspell builds lazily,
        retriever.corrections([t])  # and the evidence's first store call opens its segments
    offered = 0
    for t in texts if "corrector" in parts else ():
        t0 = time.perf_counter()
        (fix,) = retriever.corrections([t])  # what a search applies (evidence included)
        seconds.append(time.perf_counter() - t0)
        if fix is not None and not fix.applied:
            offered += 1
        elif fix is not None:
            changed += [
                {"query": t, "from": a, "to": b, "english": a.lower() in english}
                for a, b in fix.changes
            ]
    n_queries = len({c["query"] for c in changed})
    sample = random.Random(seed).sample(changed, min(30, len(changed)))
    corrections = {
        "queries_corrected": n_queries,
        "queries_offered_only": offered,
        "words_changed": len(changed),
        "english_words_changed": sum(c["english"] for c in changed),
        "english_share": sum(c["english"] for c in changed) / max(1, len(changed)),
        "sample": sorted(sample, key=lambda c: c["query"]),
        "all": changed,
        # what correction adds to a search: the corrector and, for a query with a proposed
        # change, its evidence search (the stages then read one query text either way)
        "latency_ms": {
            "n": len(seconds),
            "p50": float(np.percentile(seconds, 50) * 1000) if seconds else None,
            "p99": float(np.percentile(seconds, 99) * 1000) if seconds else None,
            "max": float(max(seconds) * 1000) if seconds else None,
        },
    }
    augmentation: list[AugmentRow] = []
    fusion = None
    if "training" in parts:
        assert plain_retriever is not None
        with contextlib.ExitStack() as stack:
            plain_encoder = BiEncoder(plain_retriever, device=device)
            plain = stack.enter_context(
                Retriever.open(
                    _index_for(plain_encoder, catalog, workdir, log), encoder=plain_encoder
                )
            )
            # the last part: the augmented retriever now reads the plain index's fusion, so
            # that only the training differs
            retriever.tuning = plain.tuning
            fusion = plain.tuning.as_dict()
            # dense alone shows the query tower's training; hybrid and the pipeline what a
            # shopper gets
            systems: dict[str, tuple[Callable, Callable]] = {
                mode: (
                    lambda ids, qs, m=mode: retrieve(plain, m, ids, qs, True),
                    lambda ids, qs, m=mode: retrieve(retriever, m, ids, qs, True),
                )
                for mode in ("dense", "hybrid")
            }
            if plain_reranker is not None and pipeline_fn is not None:
                from rerank.cross_encoder import Reranker
                from rerank.pipeline import SearchPipeline

                plain_pipe = SearchPipeline(plain, Reranker.load(plain_reranker, device=device))
                systems["pipeline"] = (
                    lambda ids, qs: _run_from(
                        _pipeline_batches(plain_pipe, qs, candidates), list(ids)
                    ),
                    lambda ids, qs: pipeline_fn(ids, qs, True),
                )
            for level in TRAINING_NOISE:
                if level == 0:
                    ids, qs, judged = qids, texts, qrels
                    subsets = (("all", qids), ("out-of-vocabulary", oov))
                else:
                    ids, qs, judged = nids, TypoNoise(level, seed).many(ntexts, nids), sampled
                    subsets = (("all", nids),)
                for name, (run_plain, run_aug) in systems.items():
                    log(f"training comparison: {name}, noise {level:.0%}")
                    a_scores = score(run_plain(ids, qs), judged)
                    b_scores = score(run_aug(ids, qs), judged)
                    for subset, m, n, t in _paired(a_scores, b_scores, subsets):
                        augmentation.append(
                            AugmentRow(
                                name,
                                subset,
                                level,
                                n,
                                m,
                                t.mean_a,
                                t.mean_b,
                                t.relative_delta,
                                t.p_value,
                            )
                        )
    retriever.close()
    report = TypoReport(
        data=str(data_dir),
        machine=machine_description(),
        seconds=time.perf_counter() - start,
        queries_scored=len(qids),
        oov_queries=len(oov),
        tuning=tuning.as_dict(),
        validation=validation,
        default_check=default_check,
        rows=rows,
        robustness=robustness,
        corrections=corrections,
        augmentation=augmentation,
        models={
            "retriever": retriever_model,
            "reranker": reranker_model,
            "plain_retriever": plain_retriever,
            "plain_reranker": plain_reranker,
        },
        training_fusion=fusion,
        policy=policy,
    )
    name = report_name(parts)
    (workdir / f"{name}.json").write_text(json.dumps(asdict(report), indent=1))
    (workdir / f"{name}.md").write_text(report.markdown() + "\n")
    return report


__all__ = ["AugmentRow", "TypoReport", "TypoRow", "run_typo_benchmark"]

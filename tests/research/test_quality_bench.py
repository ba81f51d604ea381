"""The quality benchmark end to end on a tiny benchmark directory (tiny models)."""

from __future__ import annotations

import polars as pl
import pytest

from rerank.cross_encoder import new_cross_encoder
from research.bench_quality import run_quality_benchmark


def _untrained_reranker(tmp_path, tiny_model):
    """A cross-encoder folder over the tiny model with a new head (the blend is chosen on it)."""
    reranker = tmp_path / "reranker"
    new_cross_encoder(tiny_model.parent / "hf", device="cpu").save_pretrained(str(reranker))
    return reranker


@pytest.mark.slow
def test_bench_writes_every_stage_and_picks_blend_on_validation(tmp_path, tiny_bench, tiny_model):
    reranker = _untrained_reranker(tmp_path, tiny_model)
    report = run_quality_benchmark(
        tiny_bench,
        tmp_path / "work",
        base_model=str(tiny_model),
        retriever_model=str(tiny_model),
        reranker_model=str(reranker),
        latency_queries=5,
        log=lambda m: None,
    )
    names = [s.name for s in report.stages]
    assert names[:4] == ["bm25", "dense zero-shot", "dense fine-tuned", "hybrid fine-tuned"]
    assert any("cross-encoder alone" in n for n in names) and any("blend" in n for n in names)
    assert report.queries_scored == 30
    assert report.blend["chosen"] in report.blend["grid"]
    # the chosen weight is saved with the model it was chosen for, and loads with it
    from rerank.cross_encoder import Reranker, read_settings

    assert read_settings(reranker)["retrieval_weight"] == report.blend["chosen"]
    assert Reranker.load(reranker, device="cpu").retrieval_weight == report.blend["chosen"]
    for s in report.stages:
        assert 0.0 <= s.means["ndcg@10"] <= 1.0 and len(s.recall_curve) == 100
        assert s.recall_curve == sorted(s.recall_curve)
    # the same model as zero-shot and fine-tuned: the same dense results
    by = {s.name: s for s in report.stages}
    assert by["dense zero-shot"].means == by["dense fine-tuned"].means
    assert all(c.p_value <= 1.0 for c in report.comparisons)
    for f in ("bench.json", "bench.md", "recall.png"):
        assert (tmp_path / "work" / f).stat().st_size > 100
    assert "Reranker blend" in (tmp_path / "work" / "bench.md").read_text()


class _Data:
    threshold = 2.5
    gain_offset = 1.0


def test_blend_weight_is_never_chosen_over_empty_or_nan_statistics():
    from research.bench_quality import BLEND_GRID, choose_blend_weight

    def runs_for(weights):  # weight 0.7 ranks the relevant product first, others last
        return {
            w: {"q1": {"good": 2.0, "bad": 1.0} if w == 0.7 else {"good": 1.0, "bad": 2.0}}
            for w in weights
        }

    qrels = {"q1": {"good": 3.0, "bad": 1.0}}
    chosen, scores, how = choose_blend_weight(runs_for, qrels, _Data(), saved=0.3, log=print)
    assert chosen == 0.7 and set(scores) == set(BLEND_GRID) and "validation" in how
    # no validation query at all: the model's saved weight, and the report says so
    chosen, scores, how = choose_blend_weight(runs_for, {}, _Data(), saved=0.3, log=print)
    assert (chosen, scores) == (0.3, {}) and "kept from the model" in how
    # validation queries, none relevant: nothing to choose on
    unjudged = {"q1": {"good": 1.0}}
    chosen, _, how = choose_blend_weight(runs_for, unjudged, _Data(), saved=0.3, log=print)
    assert chosen == 0.3 and "kept" in how


@pytest.mark.slow
def test_typo_bench_records_fusion_and_scores_with_and_without_correction(
    tmp_path, tiny_bench, tiny_model
):
    from research.bench_typo import NOISE_LEVELS, run_typo_benchmark
    from retrieval.retriever import Retriever

    # a few test queries get a misspelled word, so the out-of-vocabulary subset is not empty
    queries = pl.read_parquet(tiny_bench / "queries.parquet")
    queries = queries.with_columns(
        pl.when(pl.col("split") == "test")
        .then(pl.col("query") + " cordlesss")
        .otherwise(pl.col("query"))
        .alias("query")
    )
    queries.write_parquet(tiny_bench / "queries.parquet")
    report = run_typo_benchmark(
        tiny_bench, tmp_path / "work", base_model=str(tiny_model), log=lambda m: None
    )
    assert report.oov_queries == report.queries_scored == 30
    assert {r.stage for r in report.rows} == {"bm25", "dense", "hybrid"}
    assert {r.subset for r in report.rows} == {"all", "out-of-vocabulary"}
    for values in report.robustness["hybrid"].values():
        assert len(values) == len(NOISE_LEVELS)
    # "cordlesss" -> "cordless" in each query: applied where the evidence holds (no English
    # word, so never merely offered)
    c = report.corrections
    assert 0 < c["queries_corrected"] <= 30 and c["queries_offered_only"] == 0
    assert c["words_changed"] >= c["queries_corrected"]
    # the evidence policy against every proposal applied, paired, per stage and subset
    assert {(r.stage, r.subset) for r in report.policy} == {
        (s, sub) for s in ("bm25", "dense", "hybrid") for sub in ("all", "out-of-vocabulary")
    }
    assert "with evidence" in (tmp_path / "work" / "typo.md").read_text()
    timing = report.corrections["latency_ms"]
    assert timing["n"] == 30 and 0 < timing["p50"] <= timing["p99"] <= timing["max"]
    assert (
        "Time per query (the correction a search applies"
        in (tmp_path / "work" / "typo.md").read_text()
    )
    # the weights chosen on validation are recorded with the index and used by search
    index = next((tmp_path / "work").glob("index-*"))
    with Retriever.open(index, model=str(tiny_model)) as r:
        assert r.tuning.as_dict() == report.tuning
        assert r.tuning.how.startswith("chosen on the validation split")
    assert "out-of-vocabulary" in (tmp_path / "work" / "typo.md").read_text()
    # the curve averages over the queries it scored: at 0% noise it is the hybrid stage's mean
    hybrid = {
        r.metric: r.corrected for r in report.rows if r.stage == "hybrid" and r.subset == "all"
    }
    assert report.robustness["hybrid"]["ndcg@10"][0] == pytest.approx(hybrid["ndcg@10"])

    # a run of one part reads the recorded fusion and writes its own report
    again = run_typo_benchmark(
        tiny_bench,
        tmp_path / "work",
        base_model=str(tiny_model),
        parts=("robustness",),
        noise_queries=10,
        log=lambda m: None,
    )
    assert again.tuning == report.tuning and again.rows == [] and not again.validation
    assert (tmp_path / "work" / "typo-robustness.md").exists()
    scored = report.robustness["hybrid"]["ndcg@10"][0]
    assert 0 < again.robustness["hybrid"]["ndcg@10"][0] <= 1 and scored > 0


@pytest.mark.slow
def test_typo_bench_compares_augmented_with_plain_training(
    tmp_path, tiny_bench, tiny_model, tiny_model_b
):
    from core.errors import ShopsearchError
    from research.bench_typo import TRAINING_NOISE, run_typo_benchmark

    reranker = _untrained_reranker(tmp_path, tiny_model)
    model, plain = str(tiny_model), str(tiny_model_b)
    with pytest.raises(ShopsearchError, match="--against-retriever"):
        run_typo_benchmark(tiny_bench, tmp_path / "w", parts=("training",), retriever_model=model)
    with pytest.raises(ShopsearchError, match="--against-reranker needs --reranker"):
        run_typo_benchmark(
            tiny_bench,
            tmp_path / "w",
            parts=("training",),
            retriever_model=model,
            plain_retriever=plain,
            plain_reranker=str(reranker),
        )
    work = tmp_path / "work"
    common = {"base_model": model, "noise_queries": 10, "log": lambda m: None}
    report = run_typo_benchmark(
        tiny_bench,
        work,
        retriever_model=model,
        reranker_model=str(reranker),
        plain_retriever=plain,
        plain_reranker=str(reranker),
        parts=("training",),
        **common,
    )
    rows = report.augmentation
    assert {r.stage for r in rows} == {"dense", "hybrid", "pipeline"}
    assert {r.noise for r in rows} == set(TRAINING_NOISE)
    noisy = {(r.noise, r.queries) for r in rows if r.noise > 0}
    assert noisy == {(n, 10) for n in TRAINING_NOISE[1:]}
    assert report.training_fusion["how"] == "default"  # neither index is tuned here
    # like for like: each side is what the stages part measures for that model alone (both
    # indexes untuned here, so both read the same built-in fusion)
    for side, retriever in (("plain", plain), ("augmented", model)):
        alone = run_typo_benchmark(
            tiny_bench, work, retriever_model=retriever, parts=("stages",), **common
        )
        want = {
            (r.stage, r.subset, r.metric): r.corrected
            for r in alone.rows
            if r.stage in ("dense", "hybrid")
        }
        got = {
            (r.stage, r.subset, r.metric): getattr(r, side)
            for r in rows
            if r.stage in ("dense", "hybrid") and r.noise == 0
        }
        assert got == pytest.approx(want), side
    assert any(r.plain != r.augmented for r in rows)  # two different models
    text = (work / "typo-training.md").read_text()
    assert "Typo-augmented training" in text and "| pipeline | all | 10% | 10 |" in text
    # without a plain reranker the comparison is retrieval only
    hybrid_only = run_typo_benchmark(
        tiny_bench,
        work,
        retriever_model=model,
        plain_retriever=plain,
        parts=("training",),
        **common,
    )
    assert {r.stage for r in hybrid_only.augmentation} == {"dense", "hybrid"}


@pytest.mark.slow
def test_bench_reranks_each_query_as_the_pipeline_does(
    tmp_path, tiny_bench, tiny_model, monkeypatch
):
    """The cross-encoder reads the corrected query, one query's candidates per call."""
    from rerank.cross_encoder import Reranker

    frame = pl.read_parquet(tiny_bench / "queries.parquet")
    typed = frame["query"].to_list()
    # a doubled letter in a query's longest word (when alphabetic): the corrector's kind of typo
    typo = []
    for q in typed:
        w = max(q.split(), key=len)
        typo.append(q.replace(w, w[:2] + w[1] + w[2:], 1) if w.isalpha() and len(w) > 4 else q)
    frame.with_columns(pl.Series("query", typo)).write_parquet(tiny_bench / "queries.parquet")
    reranker = _untrained_reranker(tmp_path, tiny_model)
    calls: list[tuple[set[str], int]] = []
    score_pairs = Reranker.score_pairs

    def spy(self, pairs, batch_size=None):
        calls.append(({q for q, _ in pairs}, len(pairs)))
        return score_pairs(self, pairs, batch_size)

    monkeypatch.setattr(Reranker, "score_pairs", spy)
    # no latency pass: its pipeline searches would read corrected queries whatever bench does
    import research.bench_quality as bq

    monkeypatch.setattr(bq, "_timed", lambda fn, queries: (0.0, 0.0))
    run_quality_benchmark(
        tiny_bench,
        tmp_path / "work",
        base_model=str(tiny_model),
        retriever_model=str(tiny_model),
        reranker_model=str(reranker),
        candidates=20,
        latency_queries=5,
        log=lambda m: None,
    )
    # per query, never the whole split in one call
    assert calls and all(len(qs) == 1 and n <= 20 for qs, n in calls)
    read = set().union(*(qs for qs, _ in calls))
    # the old bench gave the cross-encoder the queries as typed; it now reads corrections
    corrected = read - set(typo)
    assert corrected and all(q.lower() not in {t.lower() for t in typo} for q in corrected)

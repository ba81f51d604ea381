"""Bi-encoder fine-tuning (retrieval.train) on a tiny BERT and a synthetic, learnable task.

Products are described with one vocabulary (``c3 k1 s0``) and queries with another (``x3 y1
z0``): a random model cannot match them (Recall@100 near chance on 300 products), a model
trained on some combinations learns the word mapping and generalises to unseen ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tiny_models import build_tiny_bert

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from training.retriever import (
    RetrieverTrainConfig,
    mine_hard_negatives,
    train_retriever,
    training_dataset,
    validation_recall,
    validation_setup,
)

N_CAT, N_COLOR, N_SIZE = 8, 8, 6
FAST = {"device": "cpu", "max_seq_length": 16, "seed": 0}


def _product_text(c: int, k: int, s: int) -> str:
    return f"c{c} k{k} s{s}"


def _query_text(c: int, k: int, s: int) -> str:
    return f"x{c} y{k} z{s}"


def _vocab() -> list[str]:
    words = []
    for prefix, n in (("c", N_CAT), ("k", N_COLOR), ("s", N_SIZE)):
        words += [f"{prefix}{i}" for i in range(n)]
    for prefix, n in (("x", N_CAT), ("y", N_COLOR), ("z", N_SIZE)):
        words += [f"{prefix}{i}" for i in range(n)]
    return words


def make_judgments(n_products: int = 300, n_train: int = 220, n_val: int = 50) -> Judgments:
    """One query per product (grade 3) plus a judged non-relevant product (grade 1)."""
    rng = random.Random(7)
    combos = [(c, k, s) for c in range(N_CAT) for k in range(N_COLOR) for s in range(N_SIZE)]
    rng.shuffle(combos)
    combos = combos[:n_products]
    texts = {f"p{i:03d}": _product_text(*combo) for i, combo in enumerate(combos)}
    pids = list(texts)
    queries: dict[str, dict[str, str]] = {"train": {}, "validation": {}, "test": {}}
    qrels: dict[str, dict[str, dict[str, float]]] = {"train": {}, "validation": {}, "test": {}}
    n_test = 10
    for i, combo in enumerate(combos[: n_train + n_val + n_test]):
        split = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
        qid = f"q{i:03d}"
        queries[split][qid] = _query_text(*combo)
        other = pids[(i + 1) % len(pids)]
        qrels[split][qid] = {pids[i]: 3.0, other: 1.0}
    return Judgments(texts, queries, qrels, threshold=2.5, gain_offset=1.0)


@pytest.fixture(scope="module")
def task_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("train-tiny"), _vocab())


@pytest.fixture(scope="module")
def data() -> Judgments:
    return make_judgments()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task_model, data):
    out = tmp_path_factory.mktemp("trained") / "model"
    config = RetrieverTrainConfig(
        base_model=str(task_model),
        epochs=12,
        batch_size=32,
        lr=3e-3,
        warmup_ratio=0.1,
        val_queries=None,
        val_catalog=None,
        patience=2,
        hard_negatives=1,
        **FAST,
    )
    logs: list[str] = []
    report = train_retriever(data, out, config, progress=False, log=logs.append)
    return out, report, logs


@pytest.mark.slow
def test_training_beats_the_random_baseline(trained):
    _, report, logs = trained
    assert report.improved and report.best_step > 0
    assert report.best_metric >= report.baseline_metric + 0.2, (
        report.baseline_metric,
        report.best_metric,
    )
    assert report.steps > 0 and report.pairs_trained > 0 and report.pairs_per_s > 0
    assert report.pairs_trained <= report.steps * 32
    assert (
        report.history[0]["step"] == 0 and report.history[0]["recall@100"] == report.baseline_metric
    )
    assert len(report.best_per_epoch) == round(report.epochs)
    assert report.best_metric == max(report.best_per_epoch)
    assert any("whole catalog" in line for line in logs)


@pytest.mark.slow
def test_early_stopping_stops_and_the_best_checkpoint_is_kept(trained, data):
    from retrieval.encoder import BiEncoder

    out, report, _ = trained
    assert report.stopped_by == "early_stopping" and report.epochs < 12
    # patience 2: the two checks after the best one did not beat it
    later = [h["recall@100"] for h in report.history if h["step"] > report.best_step]
    assert len(later) == 2 and all(v <= report.best_metric for v in later)
    recall = validation_recall(BiEncoder(out, device="cpu"), data, "validation", k=100)
    assert recall == pytest.approx(report.best_metric, abs=1e-6)


@pytest.mark.slow
def test_saved_folder_is_a_plain_sentence_transformer(trained):
    from sentence_transformers import SentenceTransformer

    from retrieval.encoder import BiEncoder

    out, _, _ = trained
    encoder = BiEncoder(out, device="cpu")
    assert encoder.encode_query("x1 y2 z3").shape == (encoder.dim,)
    plain = SentenceTransformer(str(out), device="cpu").encode(["x1 y2 z3"], convert_to_numpy=True)
    assert plain[0] == pytest.approx(encoder.encode_query("x1 y2 z3"), abs=1e-5)
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_report_and_logs_are_written(trained):
    out, report, _ = trained
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["best_step"] == report.best_step and saved["model"] == "retriever"
    assert saved["pairs_trained"] == report.pairs_trained and saved["improved"] is True
    assert saved["config"]["batch_size"] == 32
    assert saved["details"]["validation"]["whole_catalog"] is True
    assert list((out / "logs").glob("events.out.tfevents.*"))


def test_out_dir_must_be_new_or_empty(tmp_path, task_model, data):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ShopsearchError, match="not empty"):
        train_retriever(
            data, out, RetrieverTrainConfig(base_model=str(task_model), **FAST), progress=False
        )


def test_too_few_pairs(tmp_path, task_model, data):
    config = RetrieverTrainConfig(base_model=str(task_model), batch_size=200, **FAST)
    with pytest.raises(
        ShopsearchError, match=r"only 220 relevant \(query, product\) pairs.*at least 400"
    ):
        train_retriever(data, tmp_path / "model", config, progress=False)
    assert not (tmp_path / "model").exists()


def test_no_validation_query_with_a_relevant_product(tmp_path, task_model, data):
    qrels = dict(data.qrels)
    qrels["validation"] = {q: {p: 1.0 for p in j} for q, j in data.qrels["validation"].items()}
    bad = Judgments(data.texts, data.queries, qrels, data.threshold, data.gain_offset)
    with pytest.raises(ShopsearchError, match="no validation query has a relevant product"):
        train_retriever(
            bad,
            tmp_path / "model",
            RetrieverTrainConfig(base_model=str(task_model), batch_size=8, **FAST),
            progress=False,
        )


def test_training_dataset_has_hard_negative_columns(data):
    pairs = data.relevant_pairs("train")[:10]
    hard = {
        q: [p for p in sorted(data.texts) if p not in data.qrels["train"][q]][:5] for q, _ in pairs
    }
    hard[pairs[0][0]] = []  # none mined: random unjudged products instead
    ds = training_dataset(data, pairs, hard, 2, seed=0)
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert ds["anchor"][0] == data.queries["train"][pairs[0][0]]
    assert ds["positive"][0] == data.texts[pairs[0][1]]
    by_text = {t: p for p, t in data.texts.items()}
    for row, (qid, _) in zip(ds, pairs, strict=True):
        for col in ("negative_1", "negative_2"):
            assert by_text[row[col]] not in data.qrels["train"][qid]
    assert training_dataset(data, pairs, None, 0, seed=0).column_names == ["anchor", "positive"]


def test_hard_negatives_are_never_judged(task_model, data):
    from retrieval.encoder import BiEncoder

    encoder = BiEncoder(task_model, device="cpu")
    qids = list(data.queries["train"])[:40]
    mined = mine_hard_negatives(encoder, data, qids, "train", depth=20)
    assert set(mined) == set(qids)
    for qid, negatives in mined.items():
        assert len(negatives) == 20
        assert not set(negatives) & set(data.qrels["train"][qid])
        assert set(negatives) <= set(data.texts)


def test_validation_setup_samples_queries_and_catalog(data):
    qids, catalog, desc = validation_setup(
        data, "validation", max_queries=10, extra_products=30, seed=0
    )
    assert len(qids) == 10 and catalog is not None
    judged = {p for q in qids for p in data.qrels["validation"][q]}
    assert judged <= set(catalog) and len(catalog) == len(judged) + 30
    assert "sampled catalog" in desc
    _, whole, desc = validation_setup(data, "validation", extra_products=None)
    assert whole is None and "whole catalog" in desc


@pytest.mark.slow
def test_no_gain_keeps_the_base_model_and_time_budget_stops(tmp_path, task_model, data):
    from retrieval.encoder import BiEncoder

    out = tmp_path / "model"
    config = RetrieverTrainConfig(
        base_model=str(task_model), batch_size=32, lr=1e-12, time_budget_s=0.0, **FAST
    )
    logs: list[str] = []
    report = train_retriever(data, out, config, progress=False, log=logs.append)
    assert report.stopped_by == "time_budget" and report.steps == 1
    assert not report.improved and report.best_step == 0
    assert report.best_metric == report.baseline_metric
    assert any("never beat the baseline" in line for line in logs)
    assert any("time budget of 0 s reached at step 1" in line for line in logs)
    assert validation_recall(BiEncoder(out, device="cpu"), data) == pytest.approx(
        report.baseline_metric
    )


@pytest.mark.slow
def test_gpu_script_trains_and_packs_both_models_on_cpu(tmp_path, task_model, data):
    """scripts/gpu_train.py --quick end to end on tiny data; gpu_unpack restores loadable folders."""
    import importlib.util

    from sentence_transformers import CrossEncoder, SentenceTransformer

    root = Path(__file__).resolve().parents[2] / "scripts"
    modules = {}
    for name in ("gpu_train", "gpu_unpack"):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    judgments = data.save(tmp_path / "j.json.gz")
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--judgments", str(judgments), "--base", str(task_model), "--work", str(work)]
    argv += ["--out", str(out), "--quick", "--device", "cpu"]
    modules["gpu_train"].main(argv)
    assert sorted(p.name for p in out.iterdir()) == ["retriever.tar.part00"]
    unpack = modules["gpu_unpack"].unpack
    retriever = unpack(out, "retriever", tmp_path / "back")
    assert SentenceTransformer(str(retriever), device="cpu").encode(["x1 y2"]).shape == (1, 32)
    reranker = unpack(work / "packed", "reranker", tmp_path / "back")
    scores = CrossEncoder(str(reranker), device="cpu").predict([("x1 y2 z3", "c1 k2 s3")])
    assert scores.shape == (1,)
    assert (reranker / "shopsearch_rerank.json").is_file()


def test_training_without_the_train_extra_says_how_to_install(
    monkeypatch, tmp_path, task_model, data
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("datasets", "accelerate") else real(name, *a),
    )
    config = RetrieverTrainConfig(base_model=str(task_model), **FAST)
    with pytest.raises(ShopsearchError, match=r"datasets and accelerate.*\[train\]"):
        train_retriever(data, tmp_path / "model", config, progress=False)

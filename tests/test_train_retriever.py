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
from conftest import build_tiny_bert

from catalog.errors import ShopsearchError
from evaluation.labels import Judgments
from retrieval.train import (
    RetrieverTrainConfig,
    build_batches,
    mine_hard_negatives,
    mnrl_loss,
    train_retriever,
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
        epochs=6,
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


def test_training_beats_the_random_baseline(trained):
    _, report, logs = trained
    assert report.improved and report.best_step > 0
    assert report.best_metric >= report.baseline_metric + 0.2, (
        report.baseline_metric,
        report.best_metric,
    )
    assert report.steps > 0 and report.pairs_seen > 0 and report.pairs_per_s > 0
    assert (
        report.history[0]["step"] == 0 and report.history[0]["recall@100"] == report.baseline_metric
    )
    assert any("whole catalog" in line for line in logs)


def test_saved_folder_loads_and_matches_the_best_metric(trained, data):
    from retrieval.encoder import BiEncoder

    out, report, _ = trained
    encoder = BiEncoder(out, device="cpu")
    assert encoder.encode_query("x1 y2 z3").shape == (encoder.dim,)
    recall = validation_recall(encoder, data, "validation", k=100)
    assert recall == pytest.approx(report.best_metric, abs=1e-6)


def test_report_and_logs_are_written(trained):
    out, report, _ = trained
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["best_step"] == report.best_step
    assert saved["config"]["batch_size"] == 32
    assert saved["validation"]["whole_catalog"] is True
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


def test_batches_hold_no_duplicate_query_or_product():
    rng = random.Random(1)
    # few queries with many products, popular products shared by many queries
    pairs = sorted(
        {(f"q{rng.randrange(40)}", f"p{int(rng.paretovariate(1.2)) % 60}") for _ in range(900)}
    )
    batches = build_batches(pairs, 16, seed=3)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))  # each pair at most once
    assert len(seen) >= 0.9 * len(pairs)  # only unpairable leftovers are dropped
    for batch in batches:
        assert 2 <= len(batch) <= 16
        assert len({pairs[i][0] for i in batch}) == len(batch)
        assert len({pairs[i][1] for i in batch}) == len(batch)
    assert batches == build_batches(pairs, 16, seed=3)  # seeded
    assert batches != build_batches(pairs, 16, seed=4)


def test_batches_of_one_query_only_are_dropped():
    pairs = [("q1", f"p{i}") for i in range(5)] + [("q2", "p0")]
    batches = build_batches(pairs, 4, seed=0)
    for batch in batches:
        assert len({pairs[i][0] for i in batch}) == len(batch) >= 2
        assert len({pairs[i][1] for i in batch}) == len(batch)


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


def test_mnrl_loss_masks_false_negatives():
    import torch

    q = torch.eye(3)
    docs = torch.cat([torch.eye(3), torch.eye(3)[:1]])  # doc 3 duplicates query 0's positive
    plain = mnrl_loss(q, docs)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 3] = True
    assert mnrl_loss(q, docs, mask) < plain


def test_no_gain_keeps_the_base_model_and_time_budget_stops(tmp_path, task_model, data):
    from retrieval.encoder import BiEncoder

    out = tmp_path / "model"
    config = RetrieverTrainConfig(
        base_model=str(task_model), batch_size=32, lr=1e-12, time_budget_s=0.0, **FAST
    )
    logs: list[str] = []
    report = train_retriever(data, out, config, progress=False, log=logs.append)
    assert report.stop_reason == "time_budget" and report.steps == 1
    assert not report.improved and report.best_step == 0
    assert report.best_metric == report.baseline_metric
    assert any("never beat the baseline" in line for line in logs)
    assert validation_recall(BiEncoder(out, device="cpu"), data) == pytest.approx(
        report.baseline_metric
    )


def test_false_negative_mask():
    from retrieval.train import _false_negative_mask

    relevant = {"q1": {"p1", "p3"}, "q2": {"p2"}}
    mask = _false_negative_mask(
        [("q1", "p1"), ("q2", "p2")], ["p1", "p2", "p3", "p1"], relevant, "cpu"
    )
    assert mask.tolist() == [[False, False, True, True], [False, False, False, False]]
    assert _false_negative_mask([("q1", "p1"), ("q2", "p2")], ["p1", "p2"], relevant, "cpu") is None

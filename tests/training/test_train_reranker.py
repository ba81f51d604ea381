"""Training the cross-encoder reranker (training.reranker): training pairs and negatives,
validation NDCG, early stopping, time budget, errors, distillation from a teacher.

Tiny BERT models built from a config and a synthetic, learnable task; CPU only. Training
tests are marked ``slow``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import COLORS, NOUNS, OTHER, build_tiny_cross_encoder

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from rerank.cross_encoder import Reranker, load_cross_encoder, new_cross_encoder, read_settings
from training.reranker import RerankerTrainConfig, judged_pairs, negative_pairs, train_reranker


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_judgments(seed: int = 0) -> Judgments:
    """12 queries per split; each query's noun appears in its 3 relevant products' texts.

    36 "matchable" products (noun + colour) and 60 distractors made of other words; per query
    the 3 products with its noun are graded 3, 3, 2 and three distractors 1.
    """
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    for i, noun in enumerate(NOUNS):
        for j in range(3):
            texts[f"m{i}_{j}"] = f"{noun} {rng.choice(COLORS)} | category: tools"
    for k in range(60):
        texts[f"d{k}"] = f"{rng.choice(OTHER)} {rng.choice(OTHER)} | category: tools"
    distractors = sorted(p for p in texts if p.startswith("d"))
    queries: dict[str, dict[str, str]] = {"train": {}, "validation": {}, "test": {}}
    qrels: dict[str, dict[str, dict[str, float]]] = {"train": {}, "validation": {}, "test": {}}
    for i, noun in enumerate(NOUNS):
        for split, suffix in (("train", ""), ("validation", " cheap")):
            qid = f"{split[0]}{i}"
            queries[split][qid] = noun + suffix
            judged = {f"m{i}_{j}": (3.0 if j < 2 else 2.0) for j in range(3)}
            judged.update({p: 1.0 for p in rng.sample(distractors, 3)})
            qrels[split][qid] = judged
    return Judgments(texts, queries, qrels, threshold=2.5, gain_offset=1.0)


@pytest.fixture(scope="module")
def data() -> Judgments:
    return synthetic_judgments()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny BERT folder (``hf/`` plain HF, ``st/`` sentence-transformers) with a real vocab."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


# --------------------------------------------------------------------------- training data


def test_soft_labels_follow_the_gains(data):
    pairs = judged_pairs(data, sorted(data.qrels["train"]))
    grades = {
        (p.query_id, p.product_id): data.qrels["train"][p.query_id][p.product_id] for p in pairs
    }
    for p in pairs:
        assert p.label == {3.0: 1.0, 2.0: 0.5, 1.0: 0.0}[grades[(p.query_id, p.product_id)]]
    assert len(pairs) == sum(len(j) for j in data.qrels["train"].values())


def test_negatives_never_include_judged_products(data):
    qids = sorted(data.qrels["train"])
    rng = random.Random(0)
    everything = sorted(data.texts)
    # candidates that start with the judged products: those must be skipped
    candidates = {q: [*data.qrels["train"][q], *rng.sample(everything, 20)] for q in qids}
    candidates[qids[0]] = list(data.qrels["train"][qids[0]])  # nothing unjudged: random top-up
    for cands in (candidates, None):
        for seed in range(3):
            negatives, topped_up = negative_pairs(data, qids, cands, 5, random.Random(seed))
            assert len(negatives) == 5 * len(qids)
            for n in negatives:
                assert n.label == 0.0
                assert n.product_id not in data.qrels["train"][n.query_id]
                assert n.product_id in data.texts
            per_query = {}
            for n in negatives:
                per_query.setdefault(n.query_id, []).append(n.product_id)
            assert all(len(set(v)) == len(v) == 5 for v in per_query.values())
            if cands is not None:
                assert topped_up == 5  # only the query without unjudged candidates
                assert all(
                    n.product_id in cands[n.query_id] for n in negatives if n.query_id != qids[0]
                )


# --------------------------------------------------------------------------- training


def _config(tiny: Path, **kw) -> RerankerTrainConfig:
    base = {
        "base_model": str(tiny / "hf"),
        "epochs": 3,
        "batch_size": 16,
        "lr": 1e-3,
        "max_length": 32,
        "val_depth": 20,
        "device": "cpu",
        "patience": 3,
    }
    return RerankerTrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_training_raises_validation_ndcg_and_saves_a_standard_folder(tiny, data, tmp_path):
    from sentence_transformers import CrossEncoder

    out = tmp_path / "rr"
    lines: list[str] = []
    report = train_reranker(data, out, config=_config(tiny), progress=False, log=lines.append)
    assert report.best_metric > report.baseline_metric + 0.15
    assert report.history[0]["step"] == 0 and report.history[0]["ndcg@10"] == report.baseline_metric
    assert report.best_step > 0 and report.steps >= report.best_step
    assert 0 < report.pairs_trained <= report.steps * 16 and report.pairs_per_s > 0
    assert len(report.best_per_epoch) == round(report.epochs) and report.wall_seconds > 0
    assert report.details["negatives"] == "random"
    assert any("random catalog products" in x for x in lines)
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["best_metric"] == report.best_metric and saved["config"]["lr"] == 1e-3
    assert any((out / "logs").iterdir()) and not (out / "checkpoints").exists()
    settings = read_settings(out)
    assert settings["retrieval_weight"] == 0.5 and settings["max_length"] == 32
    loaded = Reranker.load(out, device="cpu")
    assert loaded.max_length == 32
    relevant, other = loaded.score("drill", [data.texts["m0_0"], data.texts["d0"]])
    assert relevant > other
    # the kept model is the best checkpoint: its validation NDCG@10 is the best one
    from training.reranker import validation_lists, validation_ndcg

    lists, _ = validation_lists(data, _config(tiny), None, random.Random(0), sorted(data.texts))
    assert validation_ndcg(loaded, data, lists) == pytest.approx(report.best_metric, abs=1e-6)
    # anyone loads it: plain CrossEncoder, same scores (sigmoid of our logits by default)
    plain = CrossEncoder(str(out), device="cpu")
    pairs = [("drill", data.texts["m0_0"]), ("hammer cheap", data.texts["d3"])]
    np.testing.assert_allclose(
        plain.predict(pairs), 1 / (1 + np.exp(-loaded.score_pairs(pairs))), atol=1e-5
    )


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best(tiny, data, tmp_path):
    # a learning rate this high wrecks the model after the first epoch: patience 1 stops it
    cfg = _config(tiny, epochs=8, lr=0.5, patience=1, warmup_ratio=0.0)
    report = train_reranker(data, tmp_path / "rr", config=cfg, progress=False, log=lambda _: None)
    assert report.stopped_by == "early_stopping" and report.epochs < 8
    metrics = [h["ndcg@10"] for h in report.history[1:]]
    assert report.best_metric == max(metrics)
    assert report.best_step == report.history[1 + metrics.index(max(metrics))]["step"]


@pytest.mark.slow
def test_training_with_retrieval_candidates_and_a_time_budget(tiny, data, tmp_path):
    rng = random.Random(1)
    pids = sorted(data.texts)
    candidates = {
        qid: [*judged, *rng.sample(pids, 30)]
        for split in ("train", "validation")
        for qid, judged in data.qrels[split].items()
    }
    cfg = _config(tiny, time_budget_s=0.0, epochs=2)
    report = train_reranker(
        data, tmp_path / "rr", candidates, config=cfg, progress=False, log=lambda _: None
    )
    assert report.stopped_by == "time_budget" and report.steps == 1
    assert report.details["negatives"] == "retrieval" and report.details["val_queries"] == 12
    assert report.best_step == 1 and len(report.history) == 2
    assert load_cross_encoder(tmp_path / "rr").num_labels == 1


def test_training_errors(tiny, data, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    with pytest.raises(ShopsearchError, match="not empty"):
        train_reranker(data, busy, config=_config(tiny), progress=False, log=lambda _: None)
    one_query = {"t0": data.qrels["train"]["t0"]}
    few = Judgments(
        data.texts,
        data.queries,
        {**data.qrels, "train": one_query},
        data.threshold,
        data.gain_offset,
    )
    with pytest.raises(ShopsearchError, match="judged train pairs"):
        train_reranker(
            few, tmp_path / "a", config=_config(tiny), progress=False, log=lambda _: None
        )
    no_val = Judgments(
        data.texts,
        {**data.queries, "validation": {}},
        data.qrels,
        data.threshold,
        data.gain_offset,
    )
    with pytest.raises(ShopsearchError, match="no validation query"):
        train_reranker(
            no_val, tmp_path / "b", config=_config(tiny), progress=False, log=lambda _: None
        )
    with pytest.raises(ShopsearchError, match="epochs"):
        train_reranker(data, tmp_path / "c", config=_config(tiny, epochs=0), progress=False)
    with pytest.raises(ShopsearchError, match="dropout"):
        train_reranker(data, tmp_path / "d", config=_config(tiny, dropout=1.0), progress=False)
    assert not any((tmp_path / n).exists() for n in "abcd")


def _shifted_teacher(tiny: Path, folder: Path, shift: float) -> Path:
    """An untrained tiny cross-encoder whose logits sit near ``shift``: far from any grade's."""
    from rerank.cross_encoder import write_settings

    torch.manual_seed(1)
    model = new_cross_encoder(tiny / "hf", device="cpu")
    with torch.no_grad():
        model.model.classifier.bias += shift
    model.save_pretrained(str(folder))
    write_settings(folder, retrieval_weight=0.3, max_length=32)
    return folder


def test_teacher_labels_are_the_teachers_logits(tiny, data, tmp_path):
    from training.reranker import teacher_labels, training_dataset

    teacher = _shifted_teacher(tiny, tmp_path / "teacher", 3.0)
    pairs = judged_pairs(data, sorted(data.queries["train"]))[:20]
    dataset = training_dataset(data, pairs, seed=0, typo_rate=0.2)
    lines: list[str] = []
    relabelled, seconds = teacher_labels(dataset, str(teacher), "cpu", lines.append)
    assert relabelled["query"] == dataset["query"] and relabelled["text"] == dataset["text"]
    expected = Reranker.load(teacher, device="cpu").score_pairs(
        list(zip(dataset["query"], dataset["text"], strict=True))
    )  # the typo'd queries the student reads, not the clean ones
    np.testing.assert_allclose(relabelled["label"], expected, rtol=1e-5)
    assert min(relabelled["label"]) > 2.0 and seconds > 0 and "scored 20 pairs" in lines[0]


@pytest.mark.slow
def test_a_student_learns_the_teachers_scores(tiny, data, tmp_path):
    teacher = _shifted_teacher(tiny, tmp_path / "teacher", 3.0)
    cfg = _config(tiny, teacher=str(teacher), layers=1, epochs=4, lr=1e-2, warmup_ratio=0.0)
    report = train_reranker(
        data, tmp_path / "student", config=cfg, progress=False, log=lambda _: None
    )
    assert report.details["labels"] == "teacher" and report.details["teacher"] == str(teacher)
    assert report.details["teacher_seconds"] > 0
    settings = read_settings(tmp_path / "student")
    # the default blend weight, for bench to choose: the teacher's says nothing about the student
    assert settings["retrieval_weight"] == 0.5 and settings["training"]["teacher"] == str(teacher)
    student = Reranker.load(tmp_path / "student", device="cpu")
    assert student.model.config.num_hidden_layers == 1
    # the student's logits come to the teacher's (near 3); grade targets (BCE on labels in
    # [0, 1], mostly 0) would pull them below 0
    queries = data.queries["train"]
    pairs = [
        (queries[q], data.texts[p]) for q, judged in data.qrels["train"].items() for p in judged
    ]
    target = Reranker.load(teacher, device="cpu").score_pairs(pairs)
    got = student.score_pairs(pairs)
    assert np.abs(got - target).mean() < 0.5, (got.mean(), target.mean())


def test_a_teacher_that_is_no_reranker_is_refused_first(tiny, data, tmp_path):
    with pytest.raises(ShopsearchError, match="reranker|cross-encoder"):
        train_reranker(
            data,
            tmp_path / "s",
            config=_config(tiny, teacher=str(tmp_path)),
            progress=False,
            log=lambda _: None,
        )
    assert not (tmp_path / "s").exists()

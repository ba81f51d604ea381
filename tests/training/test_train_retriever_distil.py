"""MarginMSE distillation of a cross-encoder into the bi-encoder (training.retriever, ``--teacher``).

The tiny BERT and the synthetic task of ``test_train_retriever``: products say ``c3 k1 s0``,
queries ``x3 y1 z0``. The teacher is an oracle standing in for a trained cross-encoder: it
scores how many of the query's words the product's words map to.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_train_retriever import FAST, make_judgments
from tiny_models import build_tiny_bert

from core.errors import ShopsearchError
from training.config import RetrieverTrainConfig
from training.retriever import (
    label_margins,
    margin_scale,
    mine_index_negatives,
    scaled_dot,
    train_retriever,
    training_dataset,
)


def _vocab() -> list[str]:
    from test_train_retriever import _vocab as vocab

    return vocab()


class Oracle:
    """Logits ``4 * (words of the query matched by the product) - 6``, as a Reranker gives."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.scored = 0

    def score_pairs(self, pairs):
        time.sleep(self.delay)
        self.scored += len(pairs)
        self.done_at = time.perf_counter()
        out = []
        for query, text in pairs:
            q = {w[1:] + w[0].translate(str.maketrans("xyz", "cks")) for w in query.split()}
            p = {w[1:] + w[0] for w in text.split()}
            out.append(4.0 * len(q & p) - 6.0)
        return np.asarray(out, dtype=np.float32)


@pytest.fixture(scope="module")
def task_model(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("distil-tiny"), _vocab())


@pytest.fixture(scope="module")
def data():
    return make_judgments()


def _hard(data, pairs, k=5):
    return {
        q: [p for p in sorted(data.texts) if p not in data.qrels["train"][q]][:k] for q, _ in pairs
    }


def test_label_margins_are_the_teachers_differences(data):
    pairs = data.relevant_pairs("train")[:12]
    pairs = pairs + pairs[:3]  # a repeated pair is scored once
    ds = training_dataset(data, pairs, _hard(data, pairs), 2, seed=0)
    teacher = Oracle()
    got, figures = label_margins(teacher, ds, 2, log=lambda _: None)
    assert got.column_names[-1] == "label"
    for row in got:
        pos = teacher.score_pairs([(row["anchor"], row["positive"])])[0]
        negs = teacher.score_pairs([(row["anchor"], row[f"negative_{i}"]) for i in (1, 2)])
        assert row["label"] == pytest.approx([pos - n for n in negs])
    distinct = {(r["anchor"], r[c]) for r in ds for c in ("positive", "negative_1", "negative_2")}
    assert figures["teacher_pairs"] == len(distinct) < 15 * 3  # each distinct pair once
    assert figures["mean_margin"] > 0  # the positive matches all three words
    one, _ = label_margins(Oracle(), training_dataset(data, pairs, _hard(data, pairs), 1, 0), 1)
    assert isinstance(one["label"][0], float)


def test_scaled_dot_is_the_mnrl_logit_scale():
    import torch

    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert torch.allclose(scaled_dot(a, a), torch.full((4,), 20.0))


def test_margin_scale_puts_the_students_margins_on_the_teachers_spread(data, task_model):
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(task_model), device="cpu")
    pairs = data.relevant_pairs("train")[:40]
    ds = training_dataset(data, pairs, _hard(data, pairs), 2, seed=0)
    with torch.inference_mode():

        def enc(texts):
            return st.encode(texts, convert_to_tensor=True, show_progress_bar=False)

        q = enc(ds["anchor"])
        pos = (q * enc(ds["positive"])).sum(-1)
        student = torch.stack(
            [pos - (q * enc(ds[f"negative_{i}"])).sum(-1) for i in (1, 2)], dim=1
        ).numpy()
    # a teacher whose margins are the student's times 7, shifted: the scale is 7
    labelled = ds.add_column("label", (7.0 * student + 3.0).tolist())
    assert margin_scale(st, labelled, 2, sample=1000) == pytest.approx(7.0, rel=1e-3)
    # a sample of the rows gives about the same; constant margins fall back to MNRL's scale
    assert margin_scale(st, labelled, 2, sample=20) == pytest.approx(7.0, rel=1e-3)
    flat = ds.add_column("label", [[1.0, 1.0]] * len(ds))
    assert margin_scale(st, flat, 2) == 20.0


def test_a_teacher_needs_hard_negatives():
    with pytest.raises(ShopsearchError, match="hard_negatives >= 1"):
        RetrieverTrainConfig(teacher="models/x").check()
    with pytest.raises(ShopsearchError, match="hard_negatives >= 1"):
        RetrieverTrainConfig(negatives_index="runs/x").check()
    RetrieverTrainConfig(teacher="models/x", hard_negatives=1).check()


def test_index_negatives_skip_judged_and_unknown_products(monkeypatch, data):
    import training.candidates

    qids = list(data.queries["train"])[:3]

    def fake(location, data_, query_ids, depth):
        assert str(location.path) == "some/index" and depth == 50
        return {q: [*data.qrels["train"][q], "not-in-catalog", "p299", "p298"] for q in query_ids}

    monkeypatch.setattr(training.candidates, "reranker_candidates", fake)
    got = mine_index_negatives("some/index", data, qids + ["unknown-query"])
    assert set(got) == set(qids)
    for q in qids:
        assert got[q] == [p for p in ("p299", "p298") if p not in data.qrels["train"][q]]


def test_distillation_learns_the_task_and_labelling_is_outside_the_budget(
    tmp_path, monkeypatch, task_model, data
):
    import rerank.cross_encoder
    from training import common as trainkit

    teacher = Oracle(delay=8.0)  # labelling takes 8 s
    monkeypatch.setattr(rerank.cross_encoder.Reranker, "load", lambda *a, **k: teacher)
    origins: list[float] = []
    build = trainkit.build_trainer

    def spy(*args, **kwargs):
        origins.append(kwargs["started"])  # the time budget's origin
        return build(*args, **kwargs)

    monkeypatch.setattr(trainkit, "build_trainer", spy)
    config = RetrieverTrainConfig(
        base_model=str(task_model),
        epochs=6,
        batch_size=32,
        lr=3e-3,
        warmup_ratio=0.1,
        val_queries=None,
        val_catalog=None,
        hard_negatives=2,
        teacher="oracle",
        time_budget_s=600.0,
        **FAST,
    )
    logs: list[str] = []
    report = train_retriever(data, tmp_path / "model", config, progress=False, log=logs.append)
    assert report.details["loss"] == "MarginMSE"
    assert report.details["label_seconds"] >= 8.0 and teacher.scored > 0
    # when labelling ended, the budget had run for less than the labelling took
    assert teacher.done_at - origins[0] < report.details["label_seconds"]
    assert report.best_metric > report.baseline_metric + 0.05
    assert any("MarginMSE to the teacher" in line for line in logs)
    assert report.details["margin_scale"] > 0
    assert any("x cosine" in line for line in logs)

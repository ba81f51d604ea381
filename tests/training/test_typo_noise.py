"""Typo-augmented training: the seeded typo noise (training.noise) and the typo'd queries that
the retriever's and the reranker's training sets read. (Correcting typos at search time:
tests/retrieval/test_typo.py.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from core.errors import ShopsearchError


def test_noise_is_seeded_and_at_the_set_rate():
    import random

    from training.noise import TypoNoise, perturb

    rng = random.Random(7)
    edits = letters = 0
    for _ in range(3000):
        out = perturb("heavy duty shelving unit 3/4 in. dcd790", 0.1, rng)
        edits, letters = edits + out.edits, letters + out.letters
        assert "3/4" in out.text and "dcd790" in out.text  # sizes and model numbers untouched
    assert letters == 3000 * 23  # "heavy duty shelving unit in": the letters of words only
    assert 0.085 < edits / letters < 0.105
    noise = TypoNoise(0.2, seed=3)
    queries = [f"cordless drill kit {w}" for w in ("black", "yellow", "green")]
    assert noise.many(queries) == TypoNoise(0.2, seed=3).many(queries)
    assert noise.many(queries) != TypoNoise(0.2, seed=4).many(queries)
    assert TypoNoise(0.0).many(queries) == queries
    with pytest.raises(ShopsearchError, match="typo rate"):
        TypoNoise(1.5)


def _judgments():
    from types import SimpleNamespace

    queries = {f"q{i}": f"stainless steel kitchen faucet number {i}" for i in range(200)}
    texts = {f"p{i}": f"product {i}" for i in range(200)}
    return SimpleNamespace(
        queries={"train": queries},
        texts=texts,
        qrels={"train": {f"q{i}": {f"p{i}": 3.0} for i in range(200)}},
    )


def test_retriever_training_anchors_get_seeded_typos_at_the_rate():
    pytest.importorskip("datasets")
    from training.retriever import RetrieverTrainConfig, training_dataset

    data = _judgments()
    pairs = [(f"q{i}", f"p{i}") for i in range(200)]
    clean = training_dataset(data, pairs, None, 0, seed=1)["anchor"]
    noisy = training_dataset(data, pairs, None, 0, seed=1, typo_rate=0.1)["anchor"]
    again = training_dataset(data, pairs, None, 0, seed=1, typo_rate=0.1)["anchor"]
    assert clean == [data.queries["train"][q] for q, _ in pairs]
    assert noisy == again
    changed = sum(a != b for a, b in zip(clean, noisy, strict=True))
    assert 150 < changed < 200  # 33 letters at 10%: almost every query has a typo
    assert all(a.split()[-1] == b.split()[-1] for a, b in zip(clean, noisy, strict=True))
    with pytest.raises(ShopsearchError, match="typo_rate"):
        RetrieverTrainConfig(typo_rate=0.9).check()


def test_reranker_training_queries_get_seeded_typos():
    pytest.importorskip("datasets")
    from training.reranker import RerankerTrainConfig, TrainPair, training_dataset

    data = _judgments()
    pairs = [TrainPair(f"q{i}", f"p{i}", 1.0) for i in range(100)]
    clean = training_dataset(data, pairs, seed=2)
    noisy = training_dataset(data, pairs, seed=2, typo_rate=0.05)
    assert clean["text"] == noisy["text"] and clean["label"] == noisy["label"]
    assert noisy["query"] == training_dataset(data, pairs, seed=2, typo_rate=0.05)["query"]
    assert 40 < sum(a != b for a, b in zip(clean["query"], noisy["query"], strict=True)) < 100
    with pytest.raises(ShopsearchError, match="typo_rate"):
        RerankerTrainConfig(typo_rate=-0.1).check()


def test_train_cli_rejects_a_bad_typo_rate(tmp_path):
    from shopsearch.cli import main

    result = CliRunner().invoke(
        main, ["train", "retriever", str(tmp_path), str(tmp_path / "out"), "--typo-rate", "2"]
    )
    assert result.exit_code == 2 and "--typo-rate" in result.output

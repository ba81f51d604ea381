"""Training the learned final stage (training.ranker, ``shopsearch train ranker``).

A synthetic task whose signal is lexical: in each list one planted product holds every query
word and the query's size; the others hold one query word; the first stage's order is random.
A learned stage must put the planted product first far more often than the first stage does.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from rerank.ltr import FEATURE_GROUPS, FEATURE_NAMES, META_FILE, LearnedRanker
from retrieval.hits import RankedHit
from training.ranker import (
    CandidateList,
    RankerTrainConfig,
    grade_label,
    train_ranker,
)

NOUNS = ["drill", "saw", "sander", "grinder", "router", "planer", "nailer", "vacuum"]
BRANDS = ["dewalt", "ryobi", "makita", "bosch", "milwaukee", "ridgid"]


def synthetic(split: str, n: int, seed: int) -> tuple[list[CandidateList], dict]:
    rng = random.Random(seed)
    lists, qrels = [], {}
    for q in range(n):
        brand, noun, volts = rng.choice(BRANDS), rng.choice(NOUNS), rng.choice([12, 18, 20, 40])
        qid = f"{split}{q}"
        planted = rng.randrange(20)
        hits = []
        order = list(range(20))
        rng.shuffle(order)  # the first stage's order: random
        for rank, i in enumerate(order, start=1):
            if i == planted:
                title = f"{brand.title()} {volts}-Volt Cordless {noun.title()}"
            else:
                other = rng.choice([n for n in NOUNS if n != noun])
                title = f"{rng.choice(BRANDS).title()} {rng.choice([12, 18, 20, 40])}-Volt {other.title()}"
                if rng.random() < 0.5:
                    title += f" {noun.title()} Bag"  # one query word, not the product
            score = 1.0 / (60 + rank)
            hits.append(
                RankedHit(
                    f"{qid}-{i}",
                    score,
                    score,
                    rank,
                    payload={"title": title},
                    sources=(("bm25", rng.uniform(1, 10), rank),),
                )
            )
        lists.append(CandidateList(qid, f"{brand} {volts}v {noun}", None, tuple(hits)))
        qrels[qid] = {f"{qid}-{planted}": 3.0}
    return lists, qrels


def judgments(qrels: dict[str, dict]) -> Judgments:
    return Judgments(
        texts={}, queries={s: {} for s in qrels}, qrels=qrels, threshold=2.5, gain_offset=1.0
    )


def test_grade_labels():
    assert [grade_label(g, 1.0) for g in (1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0)] == [
        0, 1, 1, 2, 3, 3, 4
    ]  # fmt: skip
    assert grade_label(0.0, 1.0) == 0


def test_learns_a_lexical_signal_the_first_stage_misses(tmp_path):
    train, qr_train = synthetic("train", 120, 0)
    val, qr_val = synthetic("validation", 40, 1)
    test, qr_test = synthetic("test", 60, 2)
    data = judgments({"train": qr_train, "validation": qr_val, "test": qr_test})
    config = RankerTrainConfig(
        depth=20, rounds=200, early_stopping=20, min_data_in_leaf=5, threads=1
    )
    report = train_ranker(
        data, tmp_path / "r", {"train": train, "validation": val}, config, log=lambda _: None
    )
    assert report.best_ndcg10 > report.baseline_ndcg10 + 0.3
    ranker = LearnedRanker.open(tmp_path / "r")
    first_learned = sum(
        ranker.rank(item.query, item.hits)[0].product_id in qr_test[item.query_id] for item in test
    )
    first_stage = sum(item.hits[0].product_id in qr_test[item.query_id] for item in test)
    assert first_learned >= 0.8 * len(test) and first_learned > 3 * max(first_stage, 1)
    meta = json.loads((tmp_path / "r" / META_FILE).read_text())
    assert meta["training"]["best_iteration"] == report.best_iteration
    assert meta["reranker"] is None and meta["dropped"] == []


def test_an_ablation_never_splits_on_the_dropped_group(tmp_path):
    train, qr_train = synthetic("train", 60, 0)
    val, qr_val = synthetic("validation", 20, 1)
    data = judgments({"train": qr_train, "validation": qr_val})
    config = RankerTrainConfig(
        depth=20, rounds=50, early_stopping=10, min_data_in_leaf=5, dropped=("lexical",), threads=1
    )
    report = train_ranker(
        data, tmp_path / "r", {"train": train, "validation": val}, config, log=lambda _: None
    )
    lexical = FEATURE_GROUPS["lexical"]
    assert all(report.importance[n] == 0 for n in lexical)
    assert sum(report.importance.values()) > 0
    ranker = LearnedRanker.open(tmp_path / "r")
    x = ranker.features(train[0].query, train[0].hits)  # serving masks them too
    assert np.isnan(x[:, [FEATURE_NAMES.index(n) for n in lexical]]).all()


def test_nothing_graded_is_one_line():
    lists, _ = synthetic("train", 5, 0)
    data = judgments({"train": {}, "validation": {}})
    with pytest.raises(ShopsearchError, match="no train query has a graded product"):
        train_ranker(data, "unused", {"train": lists, "validation": lists}, log=lambda _: None)


def test_config_errors():
    with pytest.raises(ShopsearchError, match="unknown feature group 'words'"):
        RankerTrainConfig(dropped=("words",))
    with pytest.raises(ShopsearchError, match="learning_rate"):
        RankerTrainConfig(learning_rate=0)


def test_train_ranker_command(tmp_path, tiny_bench, sample_catalog, tiny_encoder):
    """``shopsearch train ranker DATA OUT --index IDX``: a model serving opens."""
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation
    from shopsearch.cli import main

    index = tmp_path / "index"
    index_catalog(sample_catalog, IndexLocation(path=index), encoder=tiny_encoder, progress=False)
    out = tmp_path / "ranker"
    result = CliRunner().invoke(
        main,
        ["train", "ranker", str(tiny_bench), str(out), "--index", str(index), "--depth", "20",
         "--rounds", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ranker: validation NDCG@10" in result.output
    ranker = LearnedRanker.open(out)
    assert ranker.meta["config"]["depth"] == 20
    searched = CliRunner().invoke(
        main, ["search", "cordless drill", "--index", str(index), "--ranker", str(out), "--json"]
    )
    assert searched.exit_code == 0, searched.output
    got = json.loads(searched.output)
    scores = [h["scores"]["relevance"] for h in got["hits"]]
    assert scores and scores == sorted(scores, reverse=True)
    (out / META_FILE).write_text("{}")
    refused = CliRunner().invoke(
        main, ["search", "drill", "--index", str(index), "--ranker", str(out)]
    )
    assert refused.exit_code == 2 and "not a shopsearch learned ranker" in refused.output

"""Cross-encoder reranker: the CrossEncoder folder, settings, scoring, ranking hits.

Tiny BERT models built from a config, CPU only. Training one: tests/training/test_train_reranker.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_cross_encoder

from core.errors import ShopsearchError
from rerank.cross_encoder import (
    CPU_BATCH_SIZE,
    SETTINGS_NAME,
    Reranker,
    load_cross_encoder,
    new_cross_encoder,
    read_settings,
    write_settings,
)
from retrieval.hits import RankedHit, hit_text


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny BERT folder (``hf/`` plain HF, ``st/`` sentence-transformers) with a real vocab."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="module")
def reranker(tiny) -> Reranker:
    torch.manual_seed(0)
    return Reranker(
        new_cross_encoder(tiny / "hf", device="cpu"),
        device="cpu",
        batch_size=4,
        retrieval_weight=0.0,
    )


def _hit(pid: str, score: float, title: str, rank: int | None = None, **payload) -> RankedHit:
    """A stage-1 hit (its rank: the order the test lists hits in, from 1)."""
    rank = rank if rank is not None else int(pid.lstrip("p") or 0) or 1
    return RankedHit(
        pid, score, score, rank, payload={"product_id": pid, "title": title, **payload}
    )


# --------------------------------------------------------------------------- model folder


def test_new_cross_encoder_from_hf_and_st_folders(tiny):
    torch.manual_seed(0)
    a = new_cross_encoder(tiny / "hf", dropout=0.3, max_length=40, device="cpu")
    torch.manual_seed(0)
    b = new_cross_encoder(tiny / "st", dropout=0.3, max_length=40, device="cpu")
    assert a.num_labels == b.num_labels == 1
    assert a.config.classifier_dropout == 0.3
    sa, sb = a.model.bert.state_dict(), b.model.bert.state_dict()
    shared = [k for k in sa if not k.startswith("pooler")]
    assert all(torch.equal(sa[k], sb[k]) for k in shared)  # same encoder weights


def test_a_smaller_cross_encoder_keeps_the_bottom_layers(tiny, tmp_path):
    full = new_cross_encoder(tiny / "hf", device="cpu")
    small = new_cross_encoder(tiny / "hf", device="cpu", layers=1)
    assert len(small.model.bert.encoder.layer) == 1 and small.config.num_hidden_layers == 1
    kept = small.model.bert.encoder.layer[0].state_dict()
    assert all(
        torch.equal(v, full.model.bert.encoder.layer[0].state_dict()[k]) for k, v in kept.items()
    )
    small.save_pretrained(str(tmp_path / "small"))  # and it loads back with its one layer
    assert Reranker.load(tmp_path / "small", device="cpu").model.config.num_hidden_layers == 1
    with pytest.raises(ShopsearchError, match="layers must be between 1 and 2"):
        new_cross_encoder(tiny / "hf", device="cpu", layers=3)


def test_saved_folder_loads_with_plain_cross_encoder(reranker, tmp_path):
    from sentence_transformers import CrossEncoder

    out = tmp_path / "rr"
    reranker.model.save_pretrained(str(out))
    write_settings(out, retrieval_weight=0.3, max_length=32)
    pairs = [("drill", "drill red | category: tools"), ("drill", "bolt nail"), ("saw", "x")]
    ours = Reranker.load(out, device="cpu").score_pairs(pairs)
    plain = CrossEncoder(str(out), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    np.testing.assert_allclose(ours, reranker.score_pairs(pairs), atol=1e-5)


def test_settings_round_trip_and_retrieval_weight_on_load(reranker, tmp_path):
    out = tmp_path / "rr"
    reranker.model.save_pretrained(str(out))
    assert read_settings(out)["retrieval_weight"] == 0.5  # no file yet: the default
    assert Reranker.load(out, device="cpu").retrieval_weight == 0.5
    write_settings(out, retrieval_weight=0.7, training={"best_step": 3})
    write_settings(out, max_length=24)  # keeps the other keys
    saved = json.loads((out / SETTINGS_NAME).read_text())
    assert saved["retrieval_weight"] == 0.7 and saved["training"] == {"best_step": 3}
    assert "blend_weight" not in saved  # one name in the file
    loaded = Reranker.load(out, device="cpu")
    assert loaded.retrieval_weight == 0.7 and loaded.max_length == 24
    assert Reranker.load(out, device="cpu", retrieval_weight=0.0).retrieval_weight == 0.0
    with pytest.raises(ShopsearchError, match="retrieval_weight must be a number in"):
        write_settings(out, retrieval_weight=1.5)
    (out / SETTINGS_NAME).write_text("{not json")
    with pytest.raises(ShopsearchError, match="not valid JSON"):
        read_settings(out)


def test_a_folder_written_with_the_old_weight_key_reads_the_same(reranker, tmp_path):
    """Folders saved before the blend weight had one name (``blend_weight``) still load; the
    next write keeps only ``retrieval_weight``."""
    out = tmp_path / "old"
    reranker.model.save_pretrained(str(out))
    (out / SETTINGS_NAME).write_text(json.dumps({"blend_weight": 0.3, "format_version": 2}))
    assert read_settings(out)["retrieval_weight"] == 0.3
    assert Reranker.load(out, device="cpu").retrieval_weight == 0.3
    write_settings(out, max_length=24)
    saved = json.loads((out / SETTINGS_NAME).read_text())
    assert saved["retrieval_weight"] == 0.3 and "blend_weight" not in saved
    assert "blend_weight" not in read_settings(out)  # one name in Python too


def test_load_without_a_path_is_an_untrained_minilm():
    untrained = Reranker.load(None, device="cpu", batch_size=8)
    scores = untrained.score("cordless drill", ["drill", "paint roller", "faucet"])
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert untrained.model.num_labels == 1 and untrained.retrieval_weight == 0.5


def test_bad_folders_give_one_line_errors(tiny, reranker, tmp_path):
    old = tmp_path / "old"
    reranker.model.save_pretrained(str(old))
    (old / "shopsearch_reranker.json").write_text(json.dumps({"format_version": 1}))
    (old / "head.safetensors").write_bytes(b"")
    with pytest.raises(ShopsearchError, match="old format.*retrain") as err:
        Reranker.load(old, device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ShopsearchError, match="holds no cross-encoder"):
        load_cross_encoder(tiny / "st")  # a bi-encoder folder
    with pytest.raises(ShopsearchError, match="does not exist"):
        Reranker.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    reranker.model.save_pretrained(str(broken))
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ShopsearchError, match="cannot load the cross-encoder") as err:
        Reranker.load(broken, device="cpu")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- scoring


def test_score_pairs_keeps_input_order(reranker):
    pairs = [
        ("drill", "bolt"),
        ("hammer blue", "hammer blue steel material acme | category: tools | brand: acme"),
        ("saw", "saw red"),
        ("rake", "rake green | category: tools | color: green"),
        ("paint", "paint"),
        ("mower cheap", "mower gray | category: tools"),
        ("pliers", "pliers a b c d e | category: tools"),
    ]
    batched = reranker.score_pairs(pairs)  # batch 4, length-sorted inside
    one_by_one = np.array([reranker.score_pairs([p])[0] for p in pairs])
    assert batched.dtype == np.float32 and batched.shape == (len(pairs),)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert reranker.score("drill", []).shape == (0,)
    assert reranker.score("drill", []).dtype == np.float32
    assert reranker.score_pairs([]).shape == (0,)


def test_batch_size_defaults_by_device_and_is_validated(reranker):
    model = reranker.model
    assert Reranker(model, device="cpu").batch_size == CPU_BATCH_SIZE  # small: little padding
    assert Reranker(model, device="cpu", batch_size=3).batch_size == 3
    with pytest.raises(ShopsearchError, match="batch_size"):
        Reranker(model, device="cpu", batch_size=0)


def test_rank_orders_by_score_and_keeps_payloads(reranker):
    hits = [
        _hit("p1", 0.9, "drill red", brand="acme", category="tools", price=9.5),
        _hit("p2", 0.8, "bolt nail"),
        _hit("p3", 0.7, "hammer blue", attributes={"color": "blue", "material": "steel"}),
        _hit("p4", 0.6, "saw"),
        _hit("p5", 0.5, "rake green"),
    ]
    ranked = reranker.rank("drill", hits)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert {r.product_id for r in ranked} == {h.product_id for h in hits}
    by_id = {h.product_id: (rank, h) for rank, h in enumerate(hits, start=1)}
    expected = reranker.score("drill", [hit_text(h) for h in hits])
    for r in ranked:
        rank, hit = by_id[r.product_id]
        assert isinstance(r, RankedHit)
        assert r.retrieval_rank == rank and r.retrieval == hit.score
        assert r.payload == hit.payload and r.title == hit.title
        assert r.score == pytest.approx(float(expected[rank - 1]), abs=1e-5)
        assert r.relevance == r.score and r.cross == pytest.approx(r.score, abs=1e-5)
    assert hit_text(hits[0]) == "drill red | brand: acme | category: tools"
    assert hit_text(hits[2]) == "hammer blue | color: blue; material: steel"
    assert [r.product_id for r in reranker.rank("drill", hits, top_k=2)] == [
        r.product_id for r in ranked[:2]
    ]
    assert reranker.rank("drill", hits, top_k=0) == []
    assert reranker.rank("drill", []) == []


def test_blend_mixes_standardised_scores(reranker):
    from rerank.blend import blend

    cross = np.array([2.0, 0.0, -2.0])
    retrieval = np.array([0.01, 0.03, 0.02])
    np.testing.assert_allclose(blend(cross, retrieval, 0.0), cross)
    z_c = (cross - cross.mean()) / cross.std()
    z_r = (retrieval - retrieval.mean()) / retrieval.std()
    np.testing.assert_allclose(blend(cross, retrieval, 0.5), 0.5 * z_c + 0.5 * z_r, atol=1e-6)
    assert list(np.argsort(-blend(cross, retrieval, 1.0))) == [1, 2, 0]
    np.testing.assert_allclose(blend(np.array([1.0]), np.array([5.0]), 0.5), [0.0])
    # without a cross-encoder the relevance is stage 1 standardised (the scale of a blend)
    np.testing.assert_allclose(blend(None, retrieval, 0.5), z_r, atol=1e-6)
    hits = [_hit("p1", 0.9, "drill red"), _hit("p2", 0.1, "bolt nail"), _hit("p3", 0.5, "saw")]
    assert [h.retrieval_rank for h in hits] == [1, 2, 3]
    mixed = Reranker(reranker.model, device="cpu", retrieval_weight=0.5)
    ranked = mixed.rank("drill", hits)
    logits = reranker.score("drill", [hit_text(h) for h in hits])
    expected = blend(logits, np.array([h.score for h in hits]), 0.5)
    for r in ranked:
        assert r.cross == pytest.approx(float(logits[r.retrieval_rank - 1]), abs=1e-5)
        assert r.score == pytest.approx(float(expected[r.retrieval_rank - 1]), abs=1e-5)
    with pytest.raises(ShopsearchError, match="retrieval_weight"):
        Reranker(reranker.model, device="cpu", retrieval_weight=1.5)


def test_rank_ties_keep_retrieval_order(reranker):
    same = {"title": "drill red", "category": "tools"}
    hits = [
        RankedHit(f"p{i}", 1.0 - i / 10, 1.0 - i / 10, i + 1, payload=dict(same)) for i in range(3)
    ]
    ranked = reranker.rank("drill", hits)
    assert len({r.score for r in ranked}) == 1
    assert [r.product_id for r in ranked] == ["p0", "p1", "p2"]

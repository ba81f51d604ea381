"""LoRA adapters (inference.adapters, ``train retriever|reranker --lora``): only the adapter
trains, the saved folder is small and names its base, base + adapter loads where a model folder
does (BiEncoder, Reranker) and scores as the trained model did, the fingerprint covers both.

Tiny BERT models built from a config (tests/tiny_models.py); CPU, one thread.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import COLORS, NOUNS, OTHER, build_tiny_bert, build_tiny_cross_encoder

pytest.importorskip("peft")

from core.errors import ShopsearchError  # noqa: E402
from evaluation.labels import Judgments  # noqa: E402
from inference import adapters  # noqa: E402
from inference.models import ADAPTER_FILE, model_fingerprint  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ce_root(tmp_path_factory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("lora-ce"))


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def _perturb(model, seed: int = 0) -> None:
    """Random (non-zero) adapter weights: an adapter that changes the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


# --------------------------------------------------------------------------- load and save


def test_bi_encoder_adapter_loads_as_base_plus_adapter(ce_root, tmp_path):
    from sentence_transformers import SentenceTransformer

    from retrieval.encoder import BiEncoder

    base = ce_root / "st"
    st = SentenceTransformer(str(base), device="cpu")
    info = adapters.add_lora(st, adapters.BI_ENCODER, rank=4, alpha=8, dropout=0.0)
    assert info["targets"] == ["query", "key", "value"]
    assert 0 < info["trainable_parameters"] < info["total_parameters"] / 5
    trainable = [n for n, p in st.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    _perturb(st)
    out = tmp_path / "adapter"
    size = adapters.save_adapter(
        st, out, adapters.BI_ENCODER, adapters.base_name(base), max_seq_length=32
    )
    assert not (out / "model.safetensors").exists() and (out / "adapter_config.json").is_file()
    assert 0 < size == _weights_bytes(out) < _weights_bytes(base) / 5
    assert json.loads((out / ADAPTER_FILE).read_text())["base_model"] == str(base.resolve())

    st.eval()
    texts = ["drill red", "hammer blue", "paint"]
    trained = st.encode(texts, normalize_embeddings=True)
    loaded, plain = BiEncoder(out, device="cpu"), BiEncoder(base, device="cpu")
    np.testing.assert_allclose(loaded.encode_document(texts), trained, atol=1e-5)
    assert np.abs(loaded.encode_document(texts) - plain.encode_document(texts)).max() > 1e-2
    assert loaded.max_seq_length == 32
    fp = model_fingerprint(out)
    assert fp != plain.fingerprint and loaded.fingerprint == fp
    with pytest.raises(ShopsearchError, match="torch only"):
        BiEncoder(out, backend="onnx")
    from inference.backend import optimize

    pytest.importorskip("onnxruntime")
    with pytest.raises(ShopsearchError, match="LoRA adapter"):
        optimize(out, "onnx")


def test_missing_base_is_one_line(ce_root, tmp_path):
    from sentence_transformers import SentenceTransformer

    from retrieval.encoder import BiEncoder

    base = tmp_path / "base"
    shutil.copytree(ce_root / "st", base)
    st = SentenceTransformer(str(base), device="cpu")
    adapters.add_lora(st, adapters.BI_ENCODER, rank=2, alpha=4, dropout=0.0)
    out = tmp_path / "adapter"
    adapters.save_adapter(st, out, adapters.BI_ENCODER, adapters.base_name(base))
    before = model_fingerprint(out)
    shutil.rmtree(base)
    with pytest.raises(ShopsearchError) as err:
        BiEncoder(out, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "base model" in message and str(base) in message
    # a different base under the same path: the same adapter file, another fingerprint
    build_tiny_bert(tmp_path / "other", NOUNS + COLORS + OTHER, seed=5)
    shutil.copytree(tmp_path / "other" / "st", base)
    assert model_fingerprint(out) != before


def test_cross_encoder_adapter_loads_with_its_head(ce_root, tmp_path):
    from rerank.cross_encoder import Reranker, new_cross_encoder

    model = new_cross_encoder(ce_root / "hf", max_length=32, device="cpu", layers=1)
    info = adapters.add_lora(model, adapters.CROSS_ENCODER, rank=4, alpha=8, dropout=0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("classifier" in n for n in trainable)  # the new head trains too
    assert all("lora_" in n or "classifier" in n for n in trainable)
    assert info["trainable_parameters"] < info["total_parameters"] / 5
    _perturb(model, seed=1)
    out = tmp_path / "rr"
    adapters.save_adapter(
        model,
        out,
        adapters.CROSS_ENCODER,
        adapters.base_name(ce_root / "hf"),
        classifier_dropout=0.1,
        max_length=32,
        layers=1,
    )
    pairs = [("drill", "drill red | category: tools"), ("drill", "lamp soap | category: tools")]
    trained = Reranker(model, device="cpu").score_pairs(pairs)
    loaded = Reranker.load(out, device="cpu")
    np.testing.assert_allclose(loaded.score_pairs(pairs), trained, atol=1e-4)
    assert loaded.fingerprint == model_fingerprint(out)
    assert loaded.fingerprint != model_fingerprint(ce_root / "hf")
    with pytest.raises(ShopsearchError, match="not a bi-encoder"):
        from retrieval.encoder import BiEncoder

        BiEncoder(out, device="cpu")


# --------------------------------------------------------------------------- training


N = 12


def _retrieval_task() -> Judgments:
    """Products "c3 k1" and queries "x3 y1": a word mapping a random model cannot match."""
    combos = [(c, k) for c in range(N) for k in range(N)]
    random.Random(3).shuffle(combos)
    texts = {f"p{i}": f"c{c} k{k}" for i, (c, k) in enumerate(combos)}
    queries: dict[str, dict[str, str]] = {"train": {}, "validation": {}, "test": {}}
    qrels: dict[str, dict[str, dict[str, float]]] = {"train": {}, "validation": {}, "test": {}}
    for i, (c, k) in enumerate(combos):
        split = "train" if i < 110 else "validation"
        queries[split][f"q{i}"] = f"x{c} y{k}"
        qrels[split][f"q{i}"] = {f"p{i}": 3.0}
    return Judgments(texts, queries, qrels, threshold=2.5, gain_offset=1.0)


@pytest.mark.slow
def test_train_retriever_lora_trains_only_the_adapter(tmp_path):
    from retrieval.encoder import BiEncoder
    from training.retriever import RetrieverTrainConfig, train_retriever, validation_recall

    words = [f"{p}{i}" for p in "ckxy" for i in range(N)]
    base = build_tiny_bert(tmp_path / "base", words)
    data = _retrieval_task()
    config = RetrieverTrainConfig(
        base_model=str(base),
        lora_rank=4,
        epochs=8,
        batch_size=8,
        lr=1e-2,
        val_queries=None,
        val_catalog=None,
        patience=8,
        device="cpu",
        max_seq_length=16,
    )
    out = tmp_path / "adapter"
    lines: list[str] = []
    report = train_retriever(data, out, config, progress=False, log=lines.append)
    lora = report.details["lora"]
    assert lora["rank"] == 4 and lora["alpha"] == 8.0
    assert 0 < lora["trainable_parameters"] < lora["total_parameters"] / 5
    assert 0 < lora["adapter_bytes"] < _weights_bytes(base) / 5
    assert any("LoRA rank 4" in line for line in lines)
    assert not (out / "model.safetensors").exists() and not (out / "checkpoints").exists()
    assert report.best_step > 0 and report.best_metric > report.baseline_metric
    # what loads is the best checkpoint's adapter on the base: it measures as reported
    loaded = BiEncoder(out, device="cpu")
    assert validation_recall(loaded, data, "validation") == pytest.approx(report.best_metric)
    assert loaded.fingerprint != model_fingerprint(base)


@pytest.mark.slow
def test_train_reranker_lora_learns_and_reloads(ce_root, tmp_path):
    from rerank.cross_encoder import Reranker
    from training.reranker import (
        RerankerTrainConfig,
        train_reranker,
        validation_lists,
        validation_ndcg,
    )

    rng = random.Random(0)
    texts, queries, qrels = {}, {"train": {}, "validation": {}}, {"train": {}, "validation": {}}
    for i, noun in enumerate(NOUNS):
        for j in range(2):
            texts[f"m{i}_{j}"] = f"{noun} {rng.choice(COLORS)} | category: tools"
    for k in range(30):
        texts[f"d{k}"] = f"{rng.choice(OTHER)} {rng.choice(OTHER)} | category: tools"
    for i, noun in enumerate(NOUNS):
        for split, suffix in (("train", ""), ("validation", " cheap")):
            queries[split][f"{split[0]}{i}"] = noun + suffix
            qrels[split][f"{split[0]}{i}"] = {f"m{i}_0": 3.0, f"m{i}_1": 3.0, f"d{i}": 1.0}
    data = Judgments(texts, queries, qrels, threshold=2.5, gain_offset=1.0)
    config = RerankerTrainConfig(
        base_model=str(ce_root / "hf"),
        lora_rank=4,
        epochs=4,
        batch_size=16,
        lr=5e-3,
        max_length=32,
        val_depth=10,
        patience=4,
        device="cpu",
    )
    out = tmp_path / "rr"
    report = train_reranker(data, out, config=config, progress=False, log=lambda _: None)
    lora = report.details["lora"]
    assert 0 < lora["trainable_parameters"] < lora["total_parameters"] / 5
    assert 0 < lora["adapter_bytes"] < _weights_bytes(ce_root / "hf") / 5
    assert not (out / "model.safetensors").exists()
    assert report.best_metric > report.baseline_metric
    # what loads is the best checkpoint's adapter and head on the base: it measures as reported
    lists, _ = validation_lists(data, config, None, random.Random(config.seed), sorted(texts))
    loaded = Reranker.load(out, device="cpu")
    assert validation_ndcg(loaded.model, data, lists) == pytest.approx(report.best_metric, abs=1e-6)

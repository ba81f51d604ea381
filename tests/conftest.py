"""Shared fixtures: tiny models built from a config (no download), small catalogs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(folder: Path, words: list[str], seed: int = 0) -> Path:
    """A 2-layer BERT with hidden size 32 as a sentence-transformers folder (mean pooling)."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6 moved the modules; the old path warns DeprecationWarning
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6 (pyproject allows >= 3.0)
        from sentence_transformers import models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_dir = folder / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(words))
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores vocab_file= here (every word became [UNK]): pass the vocab itself
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.tokenize(vocab[-1]) == [vocab[-1]], "tiny tokenizer lost its vocabulary"
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    out = folder / "st"
    st.save(str(out))
    return out


@pytest.fixture(scope="session")
def sample_products():
    """300 synthetic products (deterministic)."""
    from catalog.sample import generate_products

    return generate_products(300, seed=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, sample_products) -> Path:
    """A tiny BERT bi-encoder whose vocabulary covers the sample catalog."""
    words: set[str] = set()
    from catalog.text import product_text

    for p in sample_products:
        words.update(re.findall(r"[a-z]+|\d+", product_text(p).lower()))
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-model"), sorted(words))


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory, sample_products) -> Path:
    """Another tiny model (different weights), to test model-mismatch errors."""
    return build_tiny_bert(
        tmp_path_factory.mktemp("tiny-model-b"), ["drill", "paint", "faucet"], seed=1
    )


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    from retrieval.encoder import BiEncoder

    return BiEncoder(tiny_model, device="cpu")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory, sample_products) -> Path:
    """The 300 products as a Parquet catalog."""
    from catalog.sample import write_sample_catalog

    return write_sample_catalog(
        tmp_path_factory.mktemp("catalog") / "catalog.parquet", n=300, seed=3
    )


@pytest.fixture()
def tiny_bench(tmp_path, sample_products):
    """A benchmark directory: the 300 products, 90 queries (30 per split) graded 3 and 1."""
    import json

    import polars as pl

    rows = [
        {"product_id": p.product_id, "title": p.title, "brand": p.brand, "category": p.category}
        for p in sample_products
    ]
    out = tmp_path / "data"
    out.mkdir()
    pl.DataFrame(rows).write_parquet(out / "catalog.parquet")
    queries, qrels = [], []
    for i, p in enumerate(sample_products[:90]):
        split = ("train", "validation", "test")[i % 3]
        qid = f"q{i}"
        queries.append({"query_id": qid, "query": " ".join(p.title.split()[1:4]), "split": split})
        qrels.append({"query_id": qid, "product_id": p.product_id, "grade": 3.0})
        qrels.append(
            {"query_id": qid, "product_id": sample_products[(i + 7) % 300].product_id, "grade": 1.0}
        )
    pl.DataFrame(queries).write_parquet(out / "queries.parquet")
    pl.DataFrame(qrels).write_parquet(out / "qrels.parquet")
    (out / "manifest.json").write_text(json.dumps({"relevance_threshold": 2.5, "gain_offset": 1.0}))
    return out

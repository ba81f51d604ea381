"""Tiny models built from a config (no download), for the tests: a 2-layer BERT bi-encoder and
the cross-encoder folder made from one. Import with ``from tiny_models import ...`` (tests/ is on
sys.path while pytest runs: tests/conftest.py puts it there)."""

from __future__ import annotations

from pathlib import Path

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


#: The tiny cross-encoders' vocabulary (tests/rerank/, tests/training/): the nouns queries
#: name, colours, the words distractor products are made of, and the rest of their texts.
NOUNS = [
    "drill",
    "hammer",
    "faucet",
    "paint",
    "ladder",
    "shovel",
    "rake",
    "mower",
    "saw",
    "wrench",
    "pliers",
    "sander",
]
COLORS = ["red", "blue", "green", "black", "white", "gray"]
OTHER = [
    "bolt",
    "screw",
    "nail",
    "hinge",
    "latch",
    "chain",
    "rope",
    "tape",
    "glue",
    "brush",
    "roller",
    "bucket",
]
EXTRA = [
    "brand",
    "category",
    "tools",
    "cheap",
    "acme",
    "steel",
    "material",
    "a",
    "b",
    "c",
    "d",
    "e",
]


def build_tiny_cross_encoder(root: Path) -> Path:
    """A tiny BERT folder (``hf/`` plain HF, ``st/`` sentence-transformers) with a real vocab."""
    import inspect

    from transformers import BertTokenizerFast

    words = sorted(set(NOUNS + COLORS + OTHER + EXTRA))
    st = build_tiny_bert(root, words)
    # transformers 5 takes ``vocab=`` (``vocab_file=`` is silently ignored: a 5-token vocab)
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in params else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: str(root / "hf" / "vocab.txt")}, do_lower_case=True)
    assert len(tokenizer) == len(words) + 5
    tokenizer.save_pretrained(root / "hf")
    tokenizer.save_pretrained(st)
    return root

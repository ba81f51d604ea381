"""The packaged MiniLM bi-encoder: offline by default, normalised vectors, batching by tokens."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ShopsearchError
from inference.models import default_model_path
from retrieval.encoder import BiEncoder


@pytest.fixture(scope="module")
def minilm():
    return BiEncoder(device="cpu")


def test_packaged_minilm_is_offline_default(minilm):
    assert minilm.path == default_model_path()
    assert minilm.path.is_dir() and "site-packages" in str(minilm.path)
    assert minilm.dim == 384
    assert len(minilm.fingerprint) == 16


def test_vectors_are_normalised_float32_and_meaningful(minilm):
    docs = minilm.encode_document(
        [
            "Cordless 20V drill driver kit",
            "Pull-down kitchen faucet in matte black",
            "LED light bulb 60W",
        ]
    )
    assert docs.dtype == np.float32 and docs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    q = minilm.encode_query("power drill")
    assert q.shape == (384,)
    assert int(np.argmax(docs @ q)) == 0
    assert int(np.argmax(docs @ minilm.encode_query("sink tap"))) == 1


def test_empty_input_and_long_query(minilm):
    assert minilm.encode_document([]).shape == (0, 384)
    assert minilm.encode_query([]).shape == (0, 384)
    assert minilm.encode_query("drill " * 10_000).shape == (384,)


def test_batches_group_texts_by_tokens_not_characters(minilm):
    # sizes and model numbers cost many tokens per character; plain words few
    dense = ["1/2 in. x 3/4 in. 90-deg", "3/8-16 x 1-1/4 zn", "#10-24 x 3/4 in."]
    wordy = ["stainless steel kitchen sink", "cordless drill driver kit", "pendant lighting"]
    texts = [dense[0], wordy[0], dense[1], wordy[1], dense[2], wordy[2]]
    count = [len(minilm.model.tokenizer(t)["input_ids"]) for t in texts]
    assert min(count[0::2]) > max(count[1::2])  # the premise
    assert max(map(len, dense)) < max(map(len, wordy))  # ...which characters do not show
    batches = minilm.token_batches(texts, 3)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3, 5], [0, 2, 4]]


def test_batched_vectors_come_back_in_input_order(minilm):
    texts = [
        f"{n} in. x {n + 1} in. bolt" if n % 2 else "deck screws" * (n % 5 + 1) for n in range(9)
    ]
    texts[4] = "cordless drill " * 600  # cut at the model's max length
    alone = np.stack([minilm.encode_document([t])[0] for t in texts])
    for size in (2, 3):  # five token-sorted calls, the last of one text; three full ones
        together = minilm.encode_document(texts, batch_size=size)
        np.testing.assert_allclose(together, alone, atol=1e-5)
    with pytest.raises(ShopsearchError, match="batch_size"):
        minilm.encode_document(texts, batch_size=-1)


def test_a_static_embedding_model_encodes_with_its_bare_tokenizer(tiny_model, tmp_path):
    """sentence-transformers' StaticEmbedding has a `tokenizers.Tokenizer` and no length limit
    (max_seq_length is inf): batching by length must not call it as a transformers tokenizer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, StaticEmbedding

    from retrieval.encoder import BiEncoder

    base = SentenceTransformer(str(tiny_model), device="cpu")
    table = base[0].auto_model.embeddings.word_embeddings.weight.detach()
    static = StaticEmbedding(base.tokenizer, embedding_weights=table)
    SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(tmp_path / "m"))
    encoder = BiEncoder(tmp_path / "m", device="cpu")
    texts = ["cordless drill", "a much longer title of a hammer drill kit with a case", "saw"]
    docs = encoder.encode_document(texts * 40, batch_size=16)
    assert docs.shape == (120, table.shape[1])
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)
    assert np.allclose(docs[:3], docs[3:6], atol=1e-5)  # the order of batches changes nothing

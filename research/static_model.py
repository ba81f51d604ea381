"""A static-embedding bi-encoder derived from the packaged MiniLM, for scale benchmarks.

A 1M-product index takes hours to embed with MiniLM on a 2-core CPU; a static embedding model
(the mean of the same model's input token embeddings, no transformer layers; sentence-
transformers' ``StaticEmbedding``) embeds about 4,500 titles/s on one, so the storefront's
latency can be measured at 1M products. Its vectors are a much weaker retriever: use it for
cost, never for quality figures.
"""

from __future__ import annotations

from pathlib import Path


def static_minilm(out: Path) -> Path:
    """Writes (once) a ``StaticEmbedding`` + ``Normalize`` model made from MiniLM's token table.

    Args:
        out: Folder for the model (reused when it holds one already).

    Returns:
        ``out``, a sentence-transformers model folder (384-dimensional, normalized vectors).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, StaticEmbedding

    from inference.models import resolve_model_path

    out = Path(out)
    if (out / "modules.json").exists():
        return out
    base = SentenceTransformer(str(resolve_model_path(None)), device="cpu")
    table = base[0].auto_model.embeddings.word_embeddings.weight.detach()
    static = StaticEmbedding(base.tokenizer, embedding_weights=table)
    SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(out))
    return out

"""Second stage: rescore retrieval hits with the cross-encoder and reorder them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from catalog.schema import Product
from catalog.text import product_text
from rerank.model import (
    DEFAULT_BLEND_WEIGHT,
    _set_max_length,
    load_cross_encoder,
    new_cross_encoder,
    read_settings,
)
from retrieval.encoder import pick_device
from retrieval.retriever import Hit

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


@dataclass(frozen=True)
class RankedHit:
    """One reranked product.

    Attributes:
        product_id: The product's id.
        score: The ranking score: the cross-encoder's logit blended with the first stage's score
            (see :func:`blend`; the logit alone when ``retrieval_weight`` is 0).
        retrieval_score: The first stage's score.
        retrieval_rank: 1-based position in the first stage's list.
        payload: The product's stored fields, as retrieved.
        cross_score: The cross-encoder's logit.
    """

    product_id: str
    score: float
    retrieval_score: float
    retrieval_rank: int
    payload: dict[str, Any] = field(default_factory=dict)
    cross_score: float = 0.0

    @property
    def title(self) -> str:
        """The product title."""
        return str(self.payload.get("title", ""))


def hit_text(hit: Hit) -> str:
    """The product text of a hit, from its payload, by the one recipe (``product_text``)."""
    return product_text(Product.from_payload({**(hit.payload or {}), "product_id": hit.product_id}))


#: Weight of the first-stage score in the final ranking (the rest is the cross-encoder's):
#: 0.5 was best of {0, 0.3, 0.5, 0.7, 1} on the Home Depot validation split; ``shopsearch
#: bench`` re-chooses it on the validation split of whatever data it runs on and saves it with
#: the reranker (``rerank.model.write_settings``), where ``Reranker.load`` reads it.
DEFAULT_RETRIEVAL_WEIGHT = DEFAULT_BLEND_WEIGHT


def _z(x: np.ndarray) -> np.ndarray:
    std = float(x.std()) if len(x) else 0.0
    return (x - x.mean()) / std if std > 1e-9 else np.zeros_like(x)


def blend(cross: np.ndarray, retrieval: np.ndarray, retrieval_weight: float) -> np.ndarray:
    """Relevance of one query's candidates: ``(1 - w) * z(cross) + w * z(retrieval)``.

    Both scores are standardised over the candidate list (their scales differ: logits vs RRF),
    so the first stage's fused evidence (dense + BM25) is kept next to the cross-encoder's.
    """
    cross = np.asarray(cross, dtype=np.float32)
    if retrieval_weight <= 0:
        return cross
    retrieval = np.asarray(retrieval, dtype=np.float32)
    return ((1 - retrieval_weight) * _z(cross) + retrieval_weight * _z(retrieval)).astype(
        np.float32
    )


class Reranker:
    """Scores (query, product text) pairs with a sentence-transformers ``CrossEncoder``.

    Args:
        model: The cross-encoder (``num_labels=1``; moved to ``device``, put in eval mode).
        device: "cpu", "cuda", ...; None picks CUDA when present.
        batch_size: Pairs per forward pass.
        max_length: Token budget per pair; None keeps the model's.
        retrieval_weight: Weight of the first stage's score in the ranking (:func:`blend`).

    Scores are the raw logits (no sigmoid), float32. On CUDA the forward pass runs under
    bfloat16 autocast. ``torch.set_num_threads`` is left to the caller.
    """

    def __init__(
        self,
        model: CrossEncoder,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        retrieval_weight: float = DEFAULT_RETRIEVAL_WEIGHT,
    ) -> None:
        if not 0.0 <= retrieval_weight <= 1.0:
            raise ValueError(f"retrieval_weight must be in [0, 1], got {retrieval_weight}")
        self.retrieval_weight = retrieval_weight
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.model.eval()
        self.batch_size = batch_size
        if max_length is not None:
            _set_max_length(self.model, max_length)

    @property
    def max_length(self) -> int:
        """Token budget per (query, product) pair."""
        model = self.model
        value = model.max_seq_length if hasattr(type(model), "max_seq_length") else model.max_length
        return int(value)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        retrieval_weight: float | None = None,
    ) -> Reranker:
        """Opens a trained reranker folder (a ``CrossEncoder`` folder with shopsearch's settings).

        Args:
            path: The reranker folder; None: an UNTRAINED cross-encoder (the packaged
                all-MiniLM-L6-v2 with a new, random head), for tests and baselines only.
            device: Torch device; None picks CUDA when present.
            batch_size: Pairs per forward pass.
            max_length: Token budget per pair; None uses the saved one.
            retrieval_weight: Weight of the first stage's score in the ranking (:func:`blend`);
                None uses the folder's saved ``blend_weight`` (:func:`rerank.model.read_settings`).

        Raises:
            ShopsearchError: Not a reranker folder (an old-format one included), unreadable.
        """
        if path is None:
            model = new_cross_encoder(None, device=device)
            weight = DEFAULT_RETRIEVAL_WEIGHT
        else:
            model = load_cross_encoder(path, device=device, max_length=max_length)
            weight = read_settings(path)["blend_weight"]
        if retrieval_weight is not None:
            weight = retrieval_weight
        return cls(model, device, batch_size, max_length, weight)

    @torch.inference_mode()
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Logits of one query against product texts, in the order given: float32, (len(texts),)."""
        return self.score_pairs([(query, text) for text in texts])

    @torch.inference_mode()
    def score_pairs(
        self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None
    ) -> np.ndarray:
        """Logits of many (query, product text) pairs, in input order: float32, (len(pairs),).

        Pairs are scored longest first (each batch pads little; memory peaks at once) and put
        back in input order.
        """
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float32)
        pairs = [(str(q), str(t)) for q, t in pairs]
        order = np.argsort([-(len(q) + len(t)) for q, t in pairs], kind="stable")
        use_cuda = self.device.startswith("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
            scores = self.model.predict(
                [pairs[i] for i in order],
                batch_size=batch_size or self.batch_size,
                convert_to_numpy=False,
                convert_to_tensor=True,
                activation_fn=torch.nn.Identity(),  # logits, not the default sigmoid
                show_progress_bar=False,
            )
        out = np.empty(len(pairs), dtype=np.float32)
        out[order] = scores.float().reshape(len(pairs)).cpu().numpy()
        return out

    def rank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[RankedHit]:
        """Reorders retrieval hits by the reranker's score.

        Args:
            query: What the shopper typed.
            hits: The first stage's hits, best first.
            top_k: Keep this many after reranking; None keeps all.

        Returns:
            Hits by reranker score descending; ties keep the retrieval order.
        """
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
        if not hits:
            return []
        cross = self.score(query, [hit_text(h) for h in hits])
        scores = blend(cross, np.array([h.score for h in hits]), self.retrieval_weight)
        ranked = [
            RankedHit(h.product_id, float(s), float(h.score), rank, h.payload, float(c))
            for rank, (h, s, c) in enumerate(zip(hits, scores, cross, strict=True), start=1)
        ]
        ranked.sort(key=lambda r: (-r.score, r.retrieval_rank))
        return ranked if top_k is None else ranked[:top_k]

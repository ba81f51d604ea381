"""Second stage: rescore retrieval hits with the cross-encoder and reorder them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalog.schema import Product
from catalog.text import product_text
from rerank.model import CrossEncoderModel
from rerank.pipeline import DEFAULT_RETRIEVAL_WEIGHT, rerank_hits
from retrieval.encoder import pick_device
from retrieval.hits import RankedHit


def hit_text(hit: RankedHit) -> str:
    """The product text of a hit, from its payload, by the one recipe (``product_text``)."""
    return product_text(Product.from_payload({**(hit.payload or {}), "product_id": hit.product_id}))


def _pad(
    encoded: Any, keys: list[str], idx: np.ndarray, width: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pads the chosen rows of a tokenizer output to ``width`` (ids with ``pad_id``)."""
    batch = {}
    for key in keys:
        fill = pad_id if key == "input_ids" else 0
        rows = np.full((len(idx), width), fill, dtype=np.int64)
        for r, i in enumerate(idx):
            row = encoded[key][i]
            rows[r, : len(row)] = row
        batch[key] = torch.from_numpy(rows)
    return batch


class Reranker:
    """Scores (query, product text) pairs with a :class:`CrossEncoderModel`.

    Args:
        model: The cross-encoder (moved to ``device``, put in eval mode).
        device: "cpu", "cuda", ...; None picks CUDA when present.
        batch_size: Pairs per forward pass.
        max_length: Token budget per pair; None uses the model's (what it was trained with).
        retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.pipeline.blend`).

    On CUDA the forward pass runs under bfloat16 autocast; scores come back as float32.
    ``torch.set_num_threads`` is left to the caller.
    """

    def __init__(
        self,
        model: CrossEncoderModel,
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
        self.max_length = int(max_length or model.max_length)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        retrieval_weight: float = DEFAULT_RETRIEVAL_WEIGHT,
    ) -> Reranker:
        """Opens a reranker saved by training (``CrossEncoderModel.save``).

        Args:
            path: The saved reranker folder.
            device: Torch device; None picks CUDA when present.
            batch_size: Pairs per forward pass.
            max_length: Token budget per pair; None uses the saved one (96 by default).
            retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.pipeline.blend`).
        """
        return cls(
            CrossEncoderModel.load(Path(path)), device, batch_size, max_length, retrieval_weight
        )

    @torch.inference_mode()
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Logits of one query against product texts, in the order given (float32)."""
        return self.score_pairs([(query, text) for text in texts])

    @torch.inference_mode()
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Logits of many (query, product text) pairs, in input order (float32).

        Pairs are tokenised once, sorted by token length so each batch pads little, scored in
        batches, and put back in input order.
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        tokenizer = self.model.tokenizer
        encoded = tokenizer(
            [q for q, _ in pairs],
            [t for _, t in pairs],
            truncation="longest_first",
            max_length=self.max_length,
        )
        keys = list(encoded.keys())
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")  # longest first: memory peaks at once
        out = np.empty(len(pairs), dtype=np.float32)
        use_cuda = self.device.startswith("cuda")
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = _pad(encoded, keys, idx, int(lengths[idx].max()), tokenizer.pad_token_id or 0)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda):
                logits = self.model(**batch)
            out[idx] = logits.float().cpu().numpy()
        return out

    def rank(
        self, query: str, hits: Sequence[RankedHit], top_k: int | None = None
    ) -> list[RankedHit]:
        """Reorders retrieval hits by relevance (logit blended with stage 1, :func:`blend`).

        Args:
            query: What the shopper typed.
            hits: The first stage's hits, best first.
            top_k: Keep this many after reranking; None keeps all.

        Returns:
            Hits by relevance descending; ties keep the retrieval order.
        """
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {top_k}")
        if not hits:
            return []
        cross = self.score(query, [hit_text(h) for h in hits])
        return rerank_hits(hits, cross, self.retrieval_weight, top_k)

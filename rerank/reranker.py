"""Second stage: rescore retrieval hits with the cross-encoder and reorder them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from catalog.errors import ShopsearchError
from catalog.schema import Product
from catalog.text import product_text
from rerank.model import _set_max_length, load_cross_encoder, new_cross_encoder, read_settings
from rerank.pipeline import DEFAULT_RETRIEVAL_WEIGHT, rerank_hits
from retrieval.encoder import model_fingerprint, pick_device
from retrieval.hits import RankedHit

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


def hit_text(hit: RankedHit) -> str:
    """The product text of a hit, from its payload, by the one recipe (``product_text``)."""
    return product_text(Product.from_payload({**(hit.payload or {}), "product_id": hit.product_id}))


#: Pairs per forward pass on a CPU. Pairs are scored longest first, so small batches pad each
#: to its own longest pair: on 2 cores 50 Home Depot candidates score faster in batches of 16
#: than in one of 50 (int8 2-layer reranker: p99 about 43 against 50-61 ms, development script).
CPU_BATCH_SIZE = 16
#: Pairs per forward pass on a GPU, where a wide batch is what keeps it busy.
GPU_BATCH_SIZE = 64


class Reranker:
    """Scores (query, product text) pairs with a sentence-transformers ``CrossEncoder``.

    Args:
        model: The cross-encoder (``num_labels=1``; moved to ``device``, put in eval mode).
        device: "cpu", "cuda", ...; None picks CUDA when present.
        batch_size: Pairs per forward pass; None: :data:`CPU_BATCH_SIZE` on a CPU, else
            :data:`GPU_BATCH_SIZE`.
        max_length: Token budget per pair; None keeps the model's.
        retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.pipeline.blend`).

    Scores are the raw logits (no sigmoid), float32. On CUDA the forward pass runs under
    bfloat16 autocast. ``torch.set_num_threads`` is left to the caller.
    """

    def __init__(
        self,
        model: CrossEncoder,
        device: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        retrieval_weight: float = DEFAULT_RETRIEVAL_WEIGHT,
    ) -> None:
        if not 0.0 <= retrieval_weight <= 1.0:
            raise ValueError(f"retrieval_weight must be in [0, 1], got {retrieval_weight}")
        self.retrieval_weight = retrieval_weight
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.model.eval()
        if batch_size is None:
            batch_size = CPU_BATCH_SIZE if self.device.startswith("cpu") else GPU_BATCH_SIZE
        self.batch_size = batch_size
        #: A hash of the weights the model was loaded from (None when built in memory):
        #: what a personalization model records as the relevance it was trained on top of.
        self.fingerprint: str | None = None
        #: How the cross-encoder runs: backend, quantize, file (relative), threads.
        self.runtime: dict[str, object] = {"backend": "torch", "quantize": None, "file": None}
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
        batch_size: int | None = None,
        max_length: int | None = None,
        retrieval_weight: float | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
    ) -> Reranker:
        """Opens a trained reranker folder (a ``CrossEncoder`` folder with shopsearch's settings).

        Args:
            path: The reranker folder; None: an UNTRAINED cross-encoder (the packaged
                all-MiniLM-L6-v2 with a new, random head), for tests and baselines only.
            device: Torch device; None picks CUDA when present.
            batch_size: Pairs per forward pass; None: 16 on a CPU, 64 on a GPU.
            max_length: Token budget per pair; None uses the saved one.
            retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.pipeline.blend`);
                None uses the folder's saved ``blend_weight`` (:func:`rerank.model.read_settings`).
            backend: ``torch``, ``onnx`` (ONNX Runtime) or ``openvino``: the latter two run the
                copy ``shopsearch optimize`` wrote into the folder, on the CPU.
            quantize: None (fp32) or ``int8`` (the dynamically quantized copy).
            threads: Intra-op CPU threads; None: ``$SHOPSEARCH_THREADS`` or the physical cores.

        Raises:
            ShopsearchError: Not a reranker folder (an old-format one included), unreadable,
                or onnx/openvino where ``shopsearch optimize`` was never run.
        """
        from retrieval.backend import apply_torch_threads, attach, check_backend, model_file
        from retrieval.encoder import check_backend_device

        check_backend(backend, quantize)
        if backend != "torch":
            if path is None:
                raise ShopsearchError(
                    "the untrained reranker runs on torch only: give a reranker folder for "
                    f"--backend {backend}"
                )
            device = device or "cpu"
            check_backend_device(backend, device)
            model_file(Path(path).expanduser(), backend, quantize)  # exported? say so first
        if pick_device(device).startswith("cpu"):
            apply_torch_threads(threads)
        if path is None:
            model = new_cross_encoder(None, device=device)
            weight = DEFAULT_RETRIEVAL_WEIGHT
        else:
            model = load_cross_encoder(path, device=device, max_length=max_length)
            weight = read_settings(path)["blend_weight"]
        if retrieval_weight is not None:
            weight = retrieval_weight
        if path is not None:
            runtime = attach(model, Path(path).expanduser(), backend, quantize, threads)
        reranker = cls(model, device, batch_size, max_length, weight)
        if path is not None:
            reranker.fingerprint = model_fingerprint(Path(path).expanduser())
            reranker.runtime = runtime
        return reranker

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

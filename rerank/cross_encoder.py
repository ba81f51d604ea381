"""The second stage, for precision: the cross-encoder and its folder.

The model is a standard sentence-transformers ``CrossEncoder`` folder, one logit per pair.

A trained reranker is a folder anyone loads with ``CrossEncoder(path)`` (``num_labels=1``: a
``BertForSequenceClassification`` whose head is a linear layer on the pooled [CLS] vector, with
the config's ``classifier_dropout``). Beside its files, ``shopsearch_rerank.json``
(:data:`SETTINGS_NAME`) holds what shopsearch needs to serve it: the blend weight of the first
stage's score (``retrieval_weight``, chosen by ``shopsearch bench``; folders written before it
had that name call it ``blend_weight``, which is still read), the token budget, and how it was
trained. ``CrossEncoder(path)`` ignores that file.

Folders of the old home-made format (``shopsearch_reranker.json`` + ``head.safetensors``) are
refused with a one-line error: retrain them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.errors import ShopsearchError, check_batch_size, first_line
from core.io import atomic_write
from inference.backend import apply_torch_threads, attach, check_backend, model_file
from inference.models import (
    check_backend_device,
    is_adapter_folder,
    is_cross_encoder_folder,
    model_fingerprint,
    pick_device,
    resolve_model_path,
)
from rerank.blend import DEFAULT_RETRIEVAL_WEIGHT, check_retrieval_weight, rerank_hits
from retrieval.hits import RankedHit, hit_text

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

#: shopsearch's settings beside the CrossEncoder files.
SETTINGS_NAME = "shopsearch_rerank.json"
SETTINGS_VERSION = 2
#: The settings key the blend weight had before it was named ``retrieval_weight`` (still read).
OLD_WEIGHT_KEY = "blend_weight"
#: Files of the old (format 1) reranker folders, no longer read.
OLD_CONFIG_NAME = "shopsearch_reranker.json"
OLD_HEAD_NAME = "head.safetensors"
DEFAULT_MAX_LENGTH = 96


def is_old_format(path: str | os.PathLike[str]) -> bool:
    """True for a folder in the old home-made reranker format (no longer read)."""
    folder = Path(path)
    return (folder / OLD_CONFIG_NAME).is_file() or (folder / OLD_HEAD_NAME).is_file()


def check_reranker_folder(path: str | os.PathLike[str]) -> Path:
    """The folder, if it holds a cross-encoder; else a one-line ShopsearchError saying why."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ShopsearchError(f"reranker folder {folder} does not exist")
    if is_old_format(folder):
        raise ShopsearchError(
            f"{folder} holds a reranker in shopsearch's old format ({OLD_CONFIG_NAME} + "
            f"{OLD_HEAD_NAME}), which is no longer read: retrain it with `shopsearch train reranker`"
        )
    if not is_cross_encoder_folder(folder):
        raise ShopsearchError(
            f"{folder} holds no cross-encoder (a sentence-transformers CrossEncoder folder): "
            "train one with `shopsearch train reranker`"
        )
    return folder


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """shopsearch's settings of a reranker folder, with defaults for what is not recorded.

    Returns:
        A dict with at least ``retrieval_weight`` (float in [0, 1]: the blend weight) and
        ``max_length`` (int or None: the model's own), plus whatever else was written
        (``training`` ...). A folder written with the old key ``blend_weight`` reads the same.

    Raises:
        ShopsearchError: The settings file is not valid JSON or holds a bad blend weight.
    """
    file = Path(path).expanduser() / SETTINGS_NAME
    settings: dict[str, Any] = {"retrieval_weight": DEFAULT_RETRIEVAL_WEIGHT, "max_length": None}
    if file.is_file():
        try:
            saved = json.loads(file.read_text())
        except ValueError as exc:
            raise ShopsearchError(f"{file}: not valid JSON ({exc})") from exc
        if not isinstance(saved, dict):
            raise ShopsearchError(f"{file}: expected a JSON object")
        if OLD_WEIGHT_KEY in saved:  # written before the weight had its one name
            saved.setdefault("retrieval_weight", saved.pop(OLD_WEIGHT_KEY))
        settings.update(saved)
    try:
        settings["retrieval_weight"] = check_retrieval_weight(settings["retrieval_weight"])
    except ShopsearchError as exc:
        raise ShopsearchError(f"{file}: {exc}") from None
    return settings


def write_settings(
    path: str | os.PathLike[str], retrieval_weight: float | None = None, **extra: Any
) -> Path:
    """Updates ``shopsearch_rerank.json`` in a reranker folder (other keys are kept).

    Args:
        path: The reranker folder.
        retrieval_weight: Weight of the first stage's score in the final ranking (the blend
            weight), in [0, 1]; None keeps the recorded one.
        extra: More JSON-able keys (``max_length``, ``training`` ...).

    Raises:
        ShopsearchError: A blend weight outside [0, 1], or a folder that does not exist.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ShopsearchError(f"reranker folder {folder} does not exist")
    settings = read_settings(folder)
    if retrieval_weight is not None:
        settings["retrieval_weight"] = check_retrieval_weight(retrieval_weight)
    settings.update(extra)
    settings["format_version"] = SETTINGS_VERSION
    file = folder / SETTINGS_NAME
    return atomic_write(file, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _set_max_length(model: CrossEncoder, max_length: int) -> None:
    if hasattr(type(model), "max_seq_length"):  # sentence-transformers >= 6
        model.max_seq_length = int(max_length)
    else:  # pragma: no cover - older releases
        model.max_length = int(max_length)


def new_cross_encoder(
    base: str | os.PathLike[str] | None = None,
    dropout: float = 0.1,
    max_length: int = DEFAULT_MAX_LENGTH,
    device: str | None = None,
    layers: int | None = None,
) -> CrossEncoder:
    """A ``CrossEncoder`` (``num_labels=1``) on pretrained weights, with a new head.

    Args:
        base: A HF folder, a sentence-transformers folder (converted: its transformer weights,
            a new head), a CrossEncoder folder (trained further, its head kept), or None for
            the packaged all-MiniLM-L6-v2.
        dropout: ``classifier_dropout`` of the config: dropout before the head.
        max_length: Token budget per (query, product) pair.
        device: Torch device; None picks CUDA when present.
        layers: Keep only the base's first this many transformer layers (None: all): a
            cross-encoder that costs about ``layers / all`` of the time per pair. Dropping the
            top layers before fine-tuning is the simple strategy of Sajjad et al., "On the
            Effect of Dropping Layers of Pre-trained Transformer Models", 2023.

    Raises:
        ShopsearchError: No model there, an old-format reranker folder, or more layers asked
            for than the base has.
    """
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(base)
    if is_old_format(path):
        check_reranker_folder(path)  # raises the one-line error
    if layers is not None:
        from transformers import AutoConfig

        try:
            have = AutoConfig.from_pretrained(str(path), local_files_only=True).num_hidden_layers
        except Exception as exc:
            raise ShopsearchError(f"cannot read the model config in {path}: {exc}") from exc
        if not 1 <= layers <= have:  # more would add randomly initialised layers, silently
            raise ShopsearchError(
                f"layers must be between 1 and {have} (the transformer layers of {path}), "
                f"got {layers}"
            )
    _quiet()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report
    try:
        model = CrossEncoder(
            str(path),
            num_labels=1,
            max_length=max_length,
            device=pick_device(device),
            local_files_only=True,
            config_kwargs={
                "classifier_dropout": float(dropout),
                **({"num_hidden_layers": int(layers)} if layers is not None else {}),
            },
        )
    except Exception as exc:
        raise ShopsearchError(f"cannot build a cross-encoder from {path}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def load_cross_encoder(
    path: str | os.PathLike[str], device: str | None = None, max_length: int | None = None
) -> CrossEncoder:
    """Opens a reranker folder as a ``CrossEncoder`` in eval mode.

    Args:
        path: A CrossEncoder folder (what training writes), or a LoRA adapter folder
            (``train reranker --lora``: its base rebuilt as it was trained, the adapter and
            head merged in, :mod:`inference.adapters`).
        device: Torch device; None picks CUDA when present.
        max_length: Token budget per pair; None uses the saved settings' (or the model's).

    Raises:
        ShopsearchError: Not a cross-encoder folder, an old-format folder, more than one label,
            or weights that cannot be read (one line each).
    """
    from sentence_transformers import CrossEncoder

    folder = check_reranker_folder(path)
    settings = read_settings(folder)
    _quiet()
    try:
        if is_adapter_folder(folder):
            model = _open_adapter(folder, device)
        else:
            model = CrossEncoder(str(folder), device=pick_device(device), local_files_only=True)
    except ShopsearchError:
        raise
    except Exception as exc:
        raise ShopsearchError(
            f"cannot load the cross-encoder in {folder}: {first_line(exc)}"
        ) from exc
    if model.num_labels != 1:
        raise ShopsearchError(
            f"{folder} holds a cross-encoder with {model.num_labels} labels; a reranker gives one "
            "score per pair (num_labels=1)"
        )
    length = max_length or settings.get("max_length")
    if length:
        _set_max_length(model, int(length))
    model.eval()
    return model


def _open_adapter(folder: Path, device: str | None) -> CrossEncoder:
    """A cross-encoder adapter folder: the base rebuilt as training built it, adapter merged."""
    from inference.adapters import CROSS_ENCODER, attach_adapter, require_peft
    from inference.models import adapter_base_path, read_adapter

    info = read_adapter(folder)
    if info["kind"] != CROSS_ENCODER:
        raise ShopsearchError(
            f"{folder} holds a {info['kind']} adapter, not a cross-encoder's: give it as --model"
        )
    require_peft()
    model = new_cross_encoder(
        adapter_base_path(folder),
        dropout=float(info.get("classifier_dropout", 0.1)),
        max_length=int(info.get("max_length") or DEFAULT_MAX_LENGTH),
        device=device,
        layers=info.get("layers"),
    )
    return attach_adapter(model, folder)


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
        retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.blend.blend`).

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
        self.retrieval_weight = check_retrieval_weight(retrieval_weight)
        if batch_size is not None:
            check_batch_size(batch_size)
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
            retrieval_weight: Weight of the first stage's score in the ranking (:func:`rerank.blend.blend`);
                None uses the folder's saved one (:func:`read_settings`).
            backend: ``torch``, ``onnx`` (ONNX Runtime) or ``openvino``: the latter two run the
                copy ``shopsearch optimize`` wrote into the folder, on the CPU.
            quantize: None (fp32) or ``int8`` (the dynamically quantized copy).
            threads: Intra-op CPU threads; None: the physical cores
                (:func:`inference.backend.cpu_threads`).

        Raises:
            ShopsearchError: Not a reranker folder (an old-format one included), unreadable,
                or onnx/openvino where ``shopsearch optimize`` was never run.
        """
        check_backend(backend, quantize)
        if backend != "torch":
            if path is None:
                raise ShopsearchError(
                    "the untrained reranker runs on torch only: give a reranker folder for "
                    f"--backend {backend}"
                )
            if is_adapter_folder(Path(path).expanduser()):
                raise ShopsearchError(
                    f"{path} holds a LoRA adapter, which runs on --backend torch only"
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
            weight = read_settings(path)["retrieval_weight"]
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
            raise ShopsearchError(f"top_k must be >= 0 or None, got {top_k}")
        if not hits:
            return []
        cross = self.score(query, [hit_text(h) for h in hits])
        return rerank_hits(hits, cross, self.retrieval_weight, top_k)

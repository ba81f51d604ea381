"""LoRA adapters: one base model, one small adapter per shop, locale or department.

``train retriever|reranker --lora R`` wraps the transformer of a sentence-transformers model
(``SentenceTransformer`` or ``CrossEncoder``: the HF model of its first module) with a LoRA
adapter on the attention projections (query, key, value) using the ``peft`` library, trains
only the adapter (and, for the cross-encoder, its new scoring head), and saves an adapter
folder: peft's ``adapter_config.json`` + ``adapter_model.safetensors`` and
:data:`inference.models.ADAPTER_FILE` naming the base model and how to rebuild it. Serving
opens the base (resolved like any model option), loads the adapter and merges it into the
weights (``merge_and_unload``): a search costs what the base costs.

LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021 (arXiv 2106.09685):
``W x + (alpha / r) B A x`` with ``A`` (r x in) and ``B`` (out x r, zero at the start), so an
untrained adapter is the base model.

Why peft directly and not sentence-transformers' ``add_adapter`` / ``load_adapter``: those go
through transformers' PEFT integration, which (transformers 5.25) needs peft >= 0.22, newer than
the release on the package index here (0.21.2); ``get_peft_model`` / ``PeftModel`` on the
module's HF model is what that integration does underneath, and works with both.

peft is imported only when an adapter is trained or opened: serving full models never needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.errors import ShopsearchError, first_line
from core.io import atomic_write
from inference.models import ADAPTER_FILE, DEFAULT_MODEL, adapter_base_path, read_adapter

#: ``kind`` of an adapter folder for each model type.
BI_ENCODER = "bi-encoder"
CROSS_ENCODER = "cross-encoder"
ADAPTER_VERSION = 1
#: Attention projections LoRA adapts, by architecture naming (BERT, MiniLM ...; Llama-style;
#: DistilBERT): the first set found in the model is used.
ATTENTION_TARGETS = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("q_lin", "k_lin", "v_lin"),
)
#: peft writes these; together they are the adapter (the rest of the folder is JSON).
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def require_peft() -> Any:
    """The ``peft`` module, or a one-line ShopsearchError saying how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise ShopsearchError(
            "LoRA adapters need the peft library: pip install peft "
            "(shopsearch's `train` and `adapters` extras)"
        ) from exc
    return peft


def _module(model: Any) -> Any:
    """The first module of a SentenceTransformer / CrossEncoder (it holds the HF model)."""
    module = model[0]
    if not hasattr(module, "model"):
        raise ShopsearchError(
            f"LoRA needs a transformer model; the first module here is {type(module).__name__}"
        )
    return module


def attention_targets(hf_model: Any) -> list[str]:
    """Names of the attention projections of ``hf_model`` LoRA adapts (see
    :data:`ATTENTION_TARGETS`).

    Raises:
        ShopsearchError: None of the known names is in the model.
    """
    names = {name.rsplit(".", 1)[-1] for name, _ in hf_model.named_modules()}
    for targets in ATTENTION_TARGETS:
        if all(t in names for t in targets):
            return list(targets)
    raise ShopsearchError(
        f"no attention projections LoRA knows in {type(hf_model).__name__} "
        f"(looked for {', '.join('/'.join(t) for t in ATTENTION_TARGETS)})"
    )


def add_lora(model: Any, kind: str, rank: int, alpha: float, dropout: float) -> dict[str, Any]:
    """Wraps the transformer of ``model`` with a new LoRA adapter; only it is trainable after.

    Args:
        model: A SentenceTransformer (``kind`` :data:`BI_ENCODER`) or CrossEncoder
            (:data:`CROSS_ENCODER`: its scoring head is trained and saved too, peft's
            ``modules_to_save``).
        kind: :data:`BI_ENCODER` or :data:`CROSS_ENCODER`.
        rank: LoRA rank ``r`` (>= 1).
        alpha: LoRA scale numerator (the update is scaled by ``alpha / rank``).
        dropout: Dropout on the adapter's input.

    Returns:
        The adapter's settings (``rank``, ``alpha``, ``dropout``, ``targets``) and parameter
        counts (``trainable_parameters``, ``total_parameters``).
    """
    peft = require_peft()
    module = _module(model)
    targets = attention_targets(module.model)
    task = peft.TaskType.SEQ_CLS if kind == CROSS_ENCODER else peft.TaskType.FEATURE_EXTRACTION
    config = peft.LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=targets,
        task_type=task,
    )
    module.model = peft.get_peft_model(module.model, config)
    trainable, total = parameter_counts(model)
    return {
        "rank": int(rank),
        "alpha": float(alpha),
        "dropout": float(dropout),
        "targets": targets,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, all) parameters of a torch module."""
    params = list(model.parameters())
    return (
        sum(p.numel() for p in params if p.requires_grad),
        sum(p.numel() for p in params),
    )


def base_name(base_model: str | os.PathLike[str] | None) -> str:
    """How an adapter folder names its base: the packaged model's name, or an absolute path."""
    if base_model is None or str(base_model) in (
        DEFAULT_MODEL,
        f"sentence-transformers/{DEFAULT_MODEL}",
    ):
        return DEFAULT_MODEL
    return str(Path(base_model).expanduser().resolve())


def save_adapter(
    model: Any, out: str | os.PathLike[str], kind: str, base_model: str, **settings: Any
) -> int:
    """Writes the adapter of ``model`` (wrapped by :func:`add_lora`) into ``out``.

    Args:
        model: The SentenceTransformer / CrossEncoder with an adapter.
        out: The folder (created; peft's files and :data:`ADAPTER_FILE` are replaced).
        kind: :data:`BI_ENCODER` or :data:`CROSS_ENCODER`.
        base_model: The base, as :func:`base_name` gives it.
        settings: More JSON-able facts to rebuild the base (``max_seq_length``, ``layers`` ...).

    Returns:
        Bytes of the adapter's weight file(s) on disk.
    """
    import peft

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    _module(model).model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)  # peft's model card: no facts of ours
    info = {
        "format_version": ADAPTER_VERSION,
        "kind": kind,
        "base_model": base_model,
        "peft_version": peft.__version__,
        **settings,
    }
    atomic_write(folder / ADAPTER_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return adapter_bytes(folder)


def adapter_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of the adapter weights in an adapter folder."""
    return sum(
        (Path(folder) / name).stat().st_size
        for name in ADAPTER_WEIGHTS
        if (Path(folder) / name).is_file()
    )


def load_adapter_weights(model: Any, folder: str | os.PathLike[str]) -> None:
    """Replaces the adapter weights of a wrapped ``model`` by those saved in ``folder`` (a
    checkpoint of the same training): how the best checkpoint is restored."""
    require_peft()
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    folder = Path(folder)
    hits = sorted(folder.rglob(ADAPTER_WEIGHTS[0])) or sorted(folder.rglob(ADAPTER_WEIGHTS[1]))
    if not hits:
        raise RuntimeError(f"no adapter weights under checkpoint {folder}")  # a bug, not a user's
    state = load_peft_weights(str(hits[0].parent), device="cpu")
    set_peft_model_state_dict(_module(model).model, state)


def restore_best_checkpoint(trainer: Any, model: Any) -> None:
    """Makes ``trainer`` restore the best checkpoint's adapter at the end of training.

    sentence-transformers reloads the best checkpoint as a whole model folder, which for an
    adapter checkpoint goes through transformers' PEFT integration (see the module's note on
    versions); this loads the checkpoint's adapter weights into the model being trained instead.
    """

    def load_best() -> None:
        checkpoint = trainer.state.best_model_checkpoint
        if checkpoint:
            load_adapter_weights(model, checkpoint)

    trainer._load_best_model = load_best


def attach_adapter(model: Any, folder: str | os.PathLike[str], merge: bool = True) -> Any:
    """Loads the adapter in ``folder`` onto ``model`` (its base, already opened).

    Args:
        model: The base SentenceTransformer / CrossEncoder.
        folder: The adapter folder.
        merge: Fold the adapter into the weights (``merge_and_unload``): inference then costs
            what the base costs; False keeps the adapter separate (peft's ``PeftModel``).

    Returns:
        ``model`` (its first module's HF model replaced).

    Raises:
        ShopsearchError: peft missing, or adapter weights that do not fit the base.
    """
    peft = require_peft()
    module = _module(model)
    try:
        wrapped = peft.PeftModel.from_pretrained(module.model, str(folder), is_trainable=False)
    except Exception as exc:
        raise ShopsearchError(
            f"cannot load the adapter in {folder} onto its base "
            f"({read_adapter(folder)['base_model']}): {first_line(exc)}"
        ) from exc
    module.model = wrapped.merge_and_unload() if merge else wrapped
    return model


def open_sentence_transformer(folder: str | os.PathLike[str], device: str) -> Any:
    """A bi-encoder adapter folder as a SentenceTransformer: its base, the adapter merged in.

    Raises:
        ShopsearchError: Not a bi-encoder adapter, a missing base, or peft missing.
    """
    from sentence_transformers import SentenceTransformer

    info = read_adapter(folder)
    if info["kind"] != BI_ENCODER:
        raise ShopsearchError(
            f"{folder} holds a {info['kind']} adapter, not a bi-encoder's: give it as a reranker"
        )
    require_peft()
    base = adapter_base_path(folder)
    try:
        st = SentenceTransformer(str(base), device=device, local_files_only=True)
    except Exception as exc:
        raise ShopsearchError(f"cannot load the adapter's base model from {base}: {exc}") from exc
    attach_adapter(st, folder)
    if info.get("max_seq_length"):
        st.max_seq_length = int(info["max_seq_length"])
    return st.to(device)

"""The cross-encoder: one BERT reads "[CLS] query [SEP] product text [SEP]" and gives one logit.

A saved reranker folder holds the encoder as a plain HF folder (``config.json`` +
``model.safetensors``), the tokenizer, the head (``head.safetensors``) and
``shopsearch_reranker.json`` (base model, max_length, dropout, pooling, format version).

Room for issue 4 (a feature tower fused into the same logit): :meth:`CrossEncoderModel.forward`
already takes ``features``; the tower will be concatenated to the pooled text vector before the
head, recorded as ``n_features`` in the JSON, with ``FORMAT_VERSION`` bumped. Not built yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

# Never reach for a hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from catalog.errors import ShopsearchError  # noqa: E402

CONFIG_NAME = "shopsearch_reranker.json"
HEAD_NAME = "head.safetensors"
FORMAT_VERSION = 1
DEFAULT_MAX_LENGTH = 96
Pooling = Literal["cls", "mean"]
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_reranker_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a model written by :meth:`CrossEncoderModel.save`."""
    return (Path(path) / CONFIG_NAME).is_file()


def find_transformer_folder(path: str | os.PathLike[str] | None) -> Path:
    """The folder with the HF transformer weights inside a HF or sentence-transformers folder.

    Args:
        path: A plain HF folder (``config.json`` + weights), a sentence-transformers folder
            (weights at the root as in all-MiniLM-L6-v2, or in the subfolder of its Transformer
            module in ``modules.json``), or None for the packaged all-MiniLM-L6-v2.

    Raises:
        ShopsearchError: No transformer weights found.
    """
    if path is None:
        from retrieval.encoder import default_model_path

        path = default_model_path()
    root = Path(path).expanduser()
    candidates = [root]
    modules = root / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text())
        except ValueError as exc:
            raise ShopsearchError(f"{modules}: not valid JSON ({exc})") from exc
        for entry in entries:
            if str(entry.get("type", "")).endswith("Transformer"):
                candidates.insert(0, root / entry.get("path", ""))
                break
    for folder in candidates:
        has_weights = any((folder / name).is_file() for name in _WEIGHT_FILES)
        if (folder / "config.json").is_file() and has_weights:
            return folder
    raise ShopsearchError(
        f"no transformer weights (config.json + model.safetensors) in {root}: give a Hugging Face "
        "BERT folder, a sentence-transformers folder, or a saved reranker folder"
    )


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars


def _load_encoder(folder: Path) -> nn.Module:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    _quiet_transformers()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused-pooler "unexpected keys" report
    try:
        try:  # BERT-style models: the [CLS] pooler (dense + tanh) is not used here
            return AutoModel.from_pretrained(str(folder), add_pooling_layer=False)
        except TypeError:
            return AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ShopsearchError(f"cannot load transformer weights from {folder}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ShopsearchError(f"cannot load the tokenizer from {folder}: {exc}") from exc


class CrossEncoderModel(nn.Module):
    """BERT + dropout + linear head on the pooled output: one relevance logit per pair.

    Build with :meth:`from_pretrained` (a fresh head on a pretrained encoder) or :meth:`load`
    (a saved reranker). ``tokenizer`` travels with the model.

    Args:
        encoder: A ``transformers`` encoder (``BertModel`` ...).
        tokenizer: Its tokenizer.
        dropout: Dropout on the pooled vector before the head.
        pooling: ``"cls"`` (the [CLS] token's last hidden state) or ``"mean"`` (masked mean).
        max_length: Token budget per pair the model is meant for (recorded, used by callers).
        base_model: Name or path of the pretrained encoder (recorded).
    """

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        dropout: float = 0.1,
        pooling: Pooling = "cls",
        max_length: int = DEFAULT_MAX_LENGTH,
        base_model: str = "",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ShopsearchError(f"pooling must be 'cls' or 'mean', not {pooling!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = int(max_length)
        self.base_model = base_model
        self.dropout = nn.Dropout(dropout)
        hidden = int(encoder.config.hidden_size)
        self.head = nn.Linear(hidden, 1)
        std = float(getattr(encoder.config, "initializer_range", 0.02))
        nn.init.normal_(self.head.weight, std=std)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        dropout: float = 0.1,
        pooling: Pooling = "cls",
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> CrossEncoderModel:
        """A cross-encoder with a fresh head on pretrained encoder weights.

        Args:
            path: HF folder, sentence-transformers folder, or None for the packaged
                all-MiniLM-L6-v2. A saved reranker folder is loaded whole (to train further);
                ``dropout`` then replaces the saved one.
            dropout: Head dropout.
            pooling: ``"cls"`` or ``"mean"``.
            max_length: Token budget per pair (recorded).
        """
        if path is not None and is_reranker_folder(path):
            model = cls.load(path)
            model.dropout.p = dropout
            return model
        from retrieval.encoder import DEFAULT_MODEL, default_model_path

        folder = find_transformer_folder(path)
        base = DEFAULT_MODEL if path is None else str(Path(path).expanduser().resolve())
        if path is not None and _is_packaged_default(Path(path), default_model_path):
            base = DEFAULT_MODEL  # the packaged folder moves with the venv: record its name
        return cls(
            _load_encoder(folder),
            _load_tokenizer(folder),
            dropout=dropout,
            pooling=pooling,
            max_length=max_length,
            base_model=base,
        )

    def pooled(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled text vector of each pair, shape (batch, hidden)."""
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One logit per pair, shape (batch,).

        Args:
            input_ids, attention_mask, token_type_ids: The tokenised pairs.
            features: Reserved for the feature tower (issue 4); must be None for now.
        """
        if features is not None:
            raise NotImplementedError("this reranker has no feature tower (format version 1)")
        pooled = self.pooled(input_ids, attention_mask, token_type_ids)
        return self.head(self.dropout(pooled)).squeeze(-1)

    def tokenize(self, queries: list[str], texts: list[str], max_length: int | None = None) -> Any:
        """Pairs padded to the longest, truncated (longest part first) to ``max_length``."""
        return self.tokenizer(
            queries,
            texts,
            padding=True,
            truncation="longest_first",
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )

    def config_dict(self) -> dict[str, Any]:
        """What ``shopsearch_reranker.json`` records."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": "cross-encoder",
            "base_model": self.base_model,
            "max_length": self.max_length,
            "dropout": self.dropout.p,
            "pooling": self.pooling,
            "hidden_size": int(self.head.in_features),
            "n_features": 0,
        }

    def save(self, out_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Writes encoder (HF folder), tokenizer, head and ``shopsearch_reranker.json``.

        Args:
            out_dir: Folder (created if needed; files of an earlier save are replaced).
            extra: More JSON-able keys to record (e.g. training metadata).
        """
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _quiet_transformers()
        self.encoder.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        head = {
            f"head.{k}": v.detach().float().cpu().contiguous()
            for k, v in self.head.state_dict().items()
        }
        save_file(head, str(out / HEAD_NAME))
        (out / CONFIG_NAME).write_text(
            json.dumps({**self.config_dict(), **(extra or {})}, indent=2) + "\n"
        )
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CrossEncoderModel:
        """Reads a folder written by :meth:`save`.

        Raises:
            ShopsearchError: Not a reranker folder, or written by a newer shopsearch.
        """
        from safetensors.torch import load_file

        folder = Path(path).expanduser()
        if not is_reranker_folder(folder):
            raise ShopsearchError(
                f"{folder} is not a saved reranker (no {CONFIG_NAME}): train one with "
                "rerank.train.train_reranker, or use CrossEncoderModel.from_pretrained for a base model"
            )
        try:
            meta = json.loads((folder / CONFIG_NAME).read_text())
        except ValueError as exc:
            raise ShopsearchError(f"{folder / CONFIG_NAME}: not valid JSON ({exc})") from exc
        version = int(meta.get("format_version", 0))
        if version != FORMAT_VERSION:
            raise ShopsearchError(
                f"{folder} holds reranker format version {version}; this shopsearch reads "
                f"version {FORMAT_VERSION}: upgrade shopsearch or retrain"
            )
        model = cls(
            _load_encoder(folder),
            _load_tokenizer(folder),
            dropout=float(meta.get("dropout", 0.1)),
            pooling=meta.get("pooling", "cls"),
            max_length=int(meta.get("max_length", DEFAULT_MAX_LENGTH)),
            base_model=str(meta.get("base_model", "")),
        )
        try:
            head = load_file(str(folder / HEAD_NAME))
        except OSError as exc:
            raise ShopsearchError(
                f"{folder / HEAD_NAME}: cannot read the head weights ({exc})"
            ) from exc
        model.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
        model.eval()
        return model


def _is_packaged_default(path: Path, default_model_path) -> bool:
    """True when ``path`` is the packaged MiniLM folder (False where that package is absent)."""
    try:
        return path.expanduser().resolve() == default_model_path().resolve()
    except ShopsearchError:
        return False

"""The cross-encoder: a standard sentence-transformers ``CrossEncoder`` folder, one logit per pair.

A trained reranker is a folder anyone loads with ``CrossEncoder(path)`` (``num_labels=1``: a
``BertForSequenceClassification`` whose head is a linear layer on the pooled [CLS] vector, with
the config's ``classifier_dropout``). Beside its files, ``shopsearch_rerank.json``
(:data:`SETTINGS_NAME`) holds what shopsearch needs to serve it: the blend weight of the first
stage's score (chosen by ``shopsearch bench``), the token budget, and how it was trained.
``CrossEncoder(path)`` ignores that file.

Folders of the old home-made format (``shopsearch_reranker.json`` + ``head.safetensors``) are
refused with a one-line error: retrain them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Never reach for a hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from catalog.errors import ShopsearchError  # noqa: E402
from rerank.pipeline import DEFAULT_RETRIEVAL_WEIGHT  # noqa: E402

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

#: shopsearch's settings beside the CrossEncoder files.
SETTINGS_NAME = "shopsearch_rerank.json"
SETTINGS_VERSION = 2
#: Files of the old (format 1) reranker folders, no longer read.
OLD_CONFIG_NAME = "shopsearch_reranker.json"
OLD_HEAD_NAME = "head.safetensors"
DEFAULT_MAX_LENGTH = 96
#: Weight of the first-stage score in the final ranking until ``shopsearch bench`` chooses one
#: (``rerank.pipeline.DEFAULT_RETRIEVAL_WEIGHT``, the one default).
DEFAULT_BLEND_WEIGHT = DEFAULT_RETRIEVAL_WEIGHT


def is_old_format(path: str | os.PathLike[str]) -> bool:
    """True for a folder in the old home-made reranker format (no longer read)."""
    folder = Path(path)
    return (folder / OLD_CONFIG_NAME).is_file() or (folder / OLD_HEAD_NAME).is_file()


def is_cross_encoder_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a cross-encoder (a CrossEncoder save, or a HF sequence classifier)."""
    folder = Path(path)
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        try:
            if json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
                return True
        except ValueError:
            return False
    hf_config = folder / "config.json"
    if hf_config.is_file() and not (folder / "modules.json").is_file():
        try:
            archs = json.loads(hf_config.read_text()).get("architectures") or []
        except ValueError:
            return False
        return any(str(a).endswith("ForSequenceClassification") for a in archs)
    return False


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
        A dict with at least ``blend_weight`` (float in [0, 1]) and ``max_length`` (int or
        None: the model's own), plus whatever else was written (``training`` ...).

    Raises:
        ShopsearchError: The settings file is not valid JSON or holds a bad blend weight.
    """
    file = Path(path).expanduser() / SETTINGS_NAME
    settings: dict[str, Any] = {"blend_weight": DEFAULT_BLEND_WEIGHT, "max_length": None}
    if file.is_file():
        try:
            saved = json.loads(file.read_text())
        except ValueError as exc:
            raise ShopsearchError(f"{file}: not valid JSON ({exc})") from exc
        if not isinstance(saved, dict):
            raise ShopsearchError(f"{file}: expected a JSON object")
        settings.update(saved)
    weight = settings["blend_weight"]
    if not isinstance(weight, int | float) or not 0.0 <= float(weight) <= 1.0:
        raise ShopsearchError(f"{file}: blend_weight must be a number in [0, 1], got {weight!r}")
    settings["blend_weight"] = float(weight)
    return settings


def write_settings(
    path: str | os.PathLike[str], blend_weight: float | None = None, **extra: Any
) -> Path:
    """Updates ``shopsearch_rerank.json`` in a reranker folder (other keys are kept).

    Args:
        path: The reranker folder.
        blend_weight: Weight of the first stage's score in the final ranking, in [0, 1]; None
            keeps the recorded one.
        extra: More JSON-able keys (``max_length``, ``training`` ...).

    Raises:
        ShopsearchError: A blend weight outside [0, 1], or a folder that does not exist.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ShopsearchError(f"reranker folder {folder} does not exist")
    settings = read_settings(folder)
    if blend_weight is not None:
        if not 0.0 <= float(blend_weight) <= 1.0:
            raise ShopsearchError(f"blend_weight must be in [0, 1], got {blend_weight}")
        settings["blend_weight"] = float(blend_weight)
    settings.update(extra)
    settings["format_version"] = SETTINGS_VERSION
    file = folder / SETTINGS_NAME
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, file)
    return file


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

    from retrieval.encoder import pick_device, resolve_model_path

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
        path: A CrossEncoder folder (what training writes).
        device: Torch device; None picks CUDA when present.
        max_length: Token budget per pair; None uses the saved settings' (or the model's).

    Raises:
        ShopsearchError: Not a cross-encoder folder, an old-format folder, more than one label,
            or weights that cannot be read (one line each).
    """
    from sentence_transformers import CrossEncoder

    from retrieval.encoder import pick_device

    folder = check_reranker_folder(path)
    settings = read_settings(folder)
    _quiet()
    try:
        model = CrossEncoder(str(folder), device=pick_device(device), local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShopsearchError(f"cannot load the cross-encoder in {folder}: {first}") from exc
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

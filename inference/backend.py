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
    onnx/model_qint8_<isa>.onnx          fused by ONNX Runtime's transformer optimizer, then
                                         dynamic int8 (per-channel weights), isa = avx512_vnni ...
    openvino/openvino_model.xml (+.bin)  fp32, converted from onnx/model.onnx
    openvino/openvino_model_qint8_<isa>.xml  an unfused int8 ONNX copy, converted (OpenVINO
                                             has no QAttention)

Threads: ONNX Runtime and OpenVINO get the intra-op threads their caller passes (``threads=``,
default :func:`cpu_threads`: the physical cores this process may use); :func:`apply_torch_threads`
sets torch's the same way. This module reads no environment variable: the command line and the
service read ``SHOPSEARCH_THREADS`` and pass the number. ONNX Runtime's worker threads do not
spin-wait after a run (``session.intra_op.allow_spinning = 0``): a search runs the query tower,
Qdrant and the cross-encoder one after another, and on a few cores the threads one session leaves
spinning take the CPU from the next stage (on 2 cores, in a development script, hybrid retrieval
inside the pipeline took 15 ms p50 with spinning against 7 ms without).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ShopsearchError
from core.io import atomic_write
from inference.models import is_adapter_folder, is_cross_encoder_folder, resolve_model_path

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZATIONS = ("int8",)
ONNX_DIR = "onnx"
OPENVINO_DIR = "openvino"
ONNX_FP32 = "model.onnx"
OPENVINO_FP32 = "openvino_model.xml"
#: Inputs every exported BERT-like transformer takes (token_type_ids when the model has them).
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cpu_threads() -> int:
    """Intra-op threads for inference by default: the physical cores this process may use."""
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


def additive_mask(mask: torch.Tensor) -> torch.Tensor:
    """BERT's additive attention mask: ``(batch, seq)`` 0/1 -> ``(batch, 1, seq, seq)`` float32.

    0 where a token may be attended, the float32 minimum where it is padding: the form (expand,
    invert, fill) that ONNX Runtime's transformer optimizer recognises when it fuses attention.
    """
    batch, seq = mask.shape
    expanded = mask[:, None, None, :].expand(batch, 1, seq, seq).to(torch.float32)
    inverted = 1.0 - expanded
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(torch.float32).min)


class _ExportWrapper(torch.nn.Module):
    """Keyword-calls the HF model so ``torch.onnx.export`` sees plain tensor inputs/outputs.

    With ``mask_4d`` the model gets :func:`additive_mask` of the 2-D attention mask instead of
    building its own (transformers 5 builds it in a form no attention fusion matches).
    """

    def __init__(
        self, model: torch.nn.Module, names: tuple[str, ...], output: str, mask_4d: bool = False
    ) -> None:
        super().__init__()
        self.model, self.names, self.output, self.mask_4d = model, names, output, mask_4d

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, tensors, strict=True))
        if self.mask_4d:
            kwargs["attention_mask"] = additive_mask(kwargs["attention_mask"])
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


def _attn_implementation(hf: Any) -> str | None:
    return getattr(getattr(hf, "config", None), "_attn_implementation", None)


def _fusable_wrapper(hf: Any, names: tuple[str, ...], output: str, sample: Any) -> Any:
    """The export wrapper: eager attention fed :func:`additive_mask` if the model gives the
    same outputs that way (then ONNX Runtime can fuse its attention), else the plain one with
    the model's own attention implementation, as it was.

    Leaves ``hf`` on eager attention when it returns the fusable wrapper: :func:`export_onnx`
    restores the implementation after exporting.
    """
    plain = _ExportWrapper(hf, names, output)
    original = _attn_implementation(hf)
    if "attention_mask" not in names or not original:
        return plain
    args = tuple(sample[n] for n in names)
    with torch.no_grad():
        reference = plain(*args)
        try:
            hf.set_attn_implementation("eager")
            fusable = _ExportWrapper(hf, names, output, mask_4d=True)
            if torch.allclose(fusable(*args), reference, atol=1e-5, rtol=1e-4):
                return fusable
        except Exception:  # noqa: BLE001 - an architecture without 4-D masks: export it plainly
            pass
    if _attn_implementation(hf) != original:
        hf.set_attn_implementation(original)
    return plain


def export_onnx(model: Any, folder: Path) -> Path:
    """Exports the transformer of a SentenceTransformer or CrossEncoder to ``onnx/model.onnx``.

    Inputs ``input_ids``/``attention_mask`` (+``token_type_ids``), int64 ``(batch, seq)``; one
    output named as the HF model's (``last_hidden_state`` or ``logits``), as Optimum names them.
    Where the model gives identical outputs that way, attention runs eager and is fed
    :func:`additive_mask`, so that :func:`fuse_attention` can fuse it; the model's attention
    implementation is restored afterwards, also when the export fails.

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
    was_training = hf.training
    attn = _attn_implementation(hf)
    hf.eval()

    def export(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings of the HF attention code
            torch.onnx.export(
                _fusable_wrapper(hf.float().cpu(), names, output, sample),
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

    try:
        atomic_write(out, export)
    finally:
        if attn and _attn_implementation(hf) != attn:
            hf.set_attn_implementation(attn)
        hf.train(was_training)
    return out


def _name_heads(graph: Any, num_heads: int, head_size: int) -> int:
    """Writes the head count into the ``(batch, seq, -1, head_size)`` shapes of Q, K and V.

    transformers 5 reshapes to ``(*input_shape, -1, head_size)``; ONNX Runtime's optimizer
    reads the head count from that shape and takes the -1 for it. The same reshape with the
    count itself is the same computation. Returns how many shapes were rewritten.
    """
    from onnx import numpy_helper

    tensors = {i.name: i for i in graph.initializer}  # converted only when read: not the weights
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t

    def scalar(tensor_name: str) -> int | None:
        tensor = tensors.get(tensor_name)
        if tensor is None:
            return None
        value = numpy_helper.to_array(tensor)
        return int(value.ravel()[0]) if value.size == 1 else None

    reshape_shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    name = "shopsearch_num_heads"
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Concat" or len(node.input) != 4 or node.output[0] not in reshape_shapes:
            continue
        if scalar(node.input[2]) == -1 and scalar(node.input[3]) == head_size:
            node.input[2] = name
            rewritten += 1
    if rewritten:
        graph.initializer.append(numpy_helper.from_array(np.array([num_heads], np.int64), name))
    return rewritten


def _probe_feed(graph: Any) -> dict[str, np.ndarray]:
    """Two token rows, the second padded, within the model's vocabulary (for checking)."""
    weights = {i.name: i for i in graph.initializer}
    vocab = 100
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1] == "input_ids" and node.input[0] in weights:
            vocab = int(weights[node.input[0]].dims[0])  # rows of the word embeddings
    low = 5 if vocab > 10 else 0  # past the special tokens ([PAD], <s>, ...) where there are
    ids = low + (np.arange(14, dtype=np.int64).reshape(2, 7) * 37) % (vocab - low)
    mask = np.ones((2, 7), dtype=np.int64)
    mask[1, 3:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: feed[i.name] for i in graph.input if i.name in feed}


@contextlib.contextmanager
def _log_level(name: str | None, level: int) -> Iterator[None]:
    """Logger ``name`` (None: the root) at ``level`` inside the block, as it was after it."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _ort_outputs(file: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def fuse_attention(src: Path, out: Path, num_heads: int, hidden_size: int) -> bool:
    """Fuses a BERT-like export with ONNX Runtime's transformer optimizer; checks it; writes it.

    Attention becomes one ``Attention`` node per layer (quantized later as ``QAttention``), the
    embeddings one ``EmbedLayerNormalization``, residual + layer norm ``SkipLayerNormalization``
    and bias + GELU ``BiasGelu`` (``onnxruntime.transformers.optimizer``, model type ``bert``,
    the 2-D attention mask kept as it is). The fused graph is kept only if every layer's
    attention fused and it computes what ``src`` computes (padded rows included).

    Args:
        src: An fp32 export from :func:`export_onnx`.
        out: Where to write the fused fp32 graph.
        num_heads: Attention heads per layer (the HF config's ``num_attention_heads``).
        hidden_size: The HF config's ``hidden_size``.

    Returns:
        True if ``out`` was written; False when attention did not fuse or the outputs differ.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(src))
    layers = sum(1 for n in model.graph.node if n.op_type == "Softmax")
    if not layers or hidden_size % num_heads:
        return False
    feed = _probe_feed(model.graph)  # before fusing: the optimizer changes ``model`` in place
    _name_heads(model.graph, num_heads, hidden_size // num_heads)
    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask  # no right-padding assumption
    try:
        with _log_level("onnxruntime.transformers", logging.ERROR):
            fused = optimize_model(
                model,
                model_type="bert",
                num_heads=num_heads,
                hidden_size=hidden_size,
                optimization_options=options,
                opt_level=0,
            )
            if fused.get_fused_operator_statistics().get("Attention", 0) != layers:
                return False
            fused.save_model_to_file(str(out))
            want, got = _ort_outputs(src, feed), _ort_outputs(out, feed)
    except Exception:  # noqa: BLE001 - a graph the optimizer or runtime cannot take: unfused
        out.unlink(missing_ok=True)
        return False
    if want.ndim == 3 and "attention_mask" in feed:  # token vectors: padding is pooled away
        keep = feed["attention_mask"].astype(bool)
        want, got = want[keep], got[keep]
    if want.shape != got.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
        out.unlink()
        return False
    return True


#: Weight MatMuls a cross-encoder's int8 copy keeps in fp32 (node-name patterns): the first
#: layer's feed-forward output projection. On the Home Depot reranker (1,500 validation pairs,
#: a development script) the Pearson correlation of int8 with fp32 logits rose from 0.9918 to
#: 0.9952 for about 7% more time; keeping any other whole layer in fp32 did less, or cost more.
CROSS_ENCODER_FP32_NODES = (r"layer\.0/output/dense/MatMul$",)


def quantize_onnx(
    src: Path,
    keep_fp32: tuple[str, ...] = (),
    attention: tuple[int, int] | None = None,
    out: Path | None = None,
) -> Path:
    """Dynamic int8 quantization of an ONNX model with ONNX Runtime (per-channel int8 weights).

    MatMul weights int8 per output channel, activations quantized on the fly (no calibration
    data). Per-channel keeps query vectors at cosine ~0.994 of fp32 on all-MiniLM-L6-v2;
    per-tensor fell to ~0.97. With ``attention`` the graph is fused first
    (:func:`fuse_attention`) and the fused attention's weights are quantized too
    (``QAttention``): on 2 cores (a development script alternating the two exports on the same
    queries, 2026-11-30; README "Figures") one query took 2.65 against 3.39 ms p50, and the
    6-layer reranker's 50 candidates 88.6 against 96.6 ms.

    Args:
        src: The fp32 export.
        keep_fp32: Regular expressions: MatMul nodes whose name matches one stay fp32
            (e.g. :data:`CROSS_ENCODER_FP32_NODES`).
        attention: ``(num_heads, hidden_size)`` to fuse with; None: quantize the export's
            MatMuls as they are (the form OpenVINO can convert).
        out: The file to write; default ``model_qint8_<isa>.onnx`` beside ``src``.

    Returns:
        The written file.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = out or src.parent / _quantized_name(src.stem, src.suffix)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as work:
        fused = Path(work) / "fused.onnx"
        if attention is not None and not fuse_attention(src, fused, *attention):
            warnings.warn(
                f"attention in {src} did not fuse: its int8 copy runs attention unfused",
                stacklevel=2,
            )
        source = fused if fused.is_file() else src
        excluded = [
            node.name
            for node in onnx.load(str(source), load_external_data=False).graph.node
            if node.op_type == "MatMul" and any(re.search(p, node.name) for p in keep_fp32)
        ]
        if keep_fp32 and not excluded:  # another architecture's node names: say so, quantize all
            warnings.warn(
                f"no MatMul in {src} matches {list(keep_fp32)}: every weight MatMul becomes int8",
                stacklevel=2,
            )

        def quantize(tmp: Path) -> None:
            # root at ERROR: "consider pre-processing" is a static-quantization hint
            with _log_level(None, logging.ERROR):
                quantize_dynamic(
                    str(source),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=False,
                    op_types_to_quantize=["MatMul", "Attention"],
                    nodes_to_exclude=excluded,
                    # the fused contrib ops have no ONNX shape inference: their outputs are float
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )

        atomic_write(out, quantize)
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

    cls = CrossEncoder if is_cross_encoder_folder(folder) else SentenceTransformer
    try:
        return cls(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:
        raise ShopsearchError(f"cannot load the model in {folder}: {exc}") from exc


def optimize(
    model: str | os.PathLike[str] | None,
    backend: str = "onnx",
    quantize: str | None = None,
    all_int8: bool = False,
) -> list[Path]:
    """Writes the ONNX (and OpenVINO) copy of a bi-encoder or reranker folder, int8 if asked.

    Args:
        model: A sentence-transformers or CrossEncoder folder; None: the packaged
            all-MiniLM-L6-v2 (which lives in site-packages: copy it first to keep it clean).
        backend: ``onnx`` or ``openvino`` (which is converted from the ONNX export).
        quantize: None (fp32) or ``int8`` (dynamic int8 quantization with ONNX Runtime).
        all_int8: A cross-encoder's int8 copy quantizes :data:`CROSS_ENCODER_FP32_NODES` too
            (faster, a little further from fp32); needs ``quantize="int8"``.

    Returns:
        The files written (fp32 export first).

    Raises:
        ShopsearchError: Unknown backend, ONNX Runtime/OpenVINO not installed, not a model folder.
    """
    check_backend(backend, quantize)
    if backend == "torch":
        raise ShopsearchError("optimize writes onnx or openvino copies: --backend onnx|openvino")
    if all_int8 and quantize != "int8":
        raise ShopsearchError("--all-int8 needs --quantize int8")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ShopsearchError(
            "exporting needs ONNX Runtime and onnx: pip install 'shopsearch[onnx]'"
        ) from exc
    folder = resolve_model_path(model)
    if is_adapter_folder(folder):
        raise ShopsearchError(
            f"{folder} holds a LoRA adapter, which runs on --backend torch (merged into its base "
            "when opened): optimize exports full model folders"
        )
    plain_hf = (folder / "config.json").is_file() and not (folder / "modules.json").is_file()
    if plain_hf and not is_cross_encoder_folder(folder):
        raise ShopsearchError(f"{folder} is a plain HF folder, not a sentence-transformers one")
    st = load_torch_model(folder)
    written = [export_onnx(st, folder)]
    keep: tuple[str, ...] = ()
    if quantize == "int8":
        from sentence_transformers import CrossEncoder

        keep = CROSS_ENCODER_FP32_NODES if isinstance(st, CrossEncoder) and not all_int8 else ()
        heads = _heads(st)
        if heads is None:
            warnings.warn(
                f"{folder}'s config names no attention heads: its int8 copy runs attention unfused",
                stacklevel=2,
            )
        written.append(quantize_onnx(written[0], keep_fp32=keep, attention=heads))
    if backend == "openvino":
        converted = [to_openvino(written[0], folder)]
        if quantize == "int8":  # OpenVINO has no QAttention: convert an unfused int8 copy
            with tempfile.TemporaryDirectory() as work:
                plain = Path(work) / written[1].name
                converted.append(to_openvino(quantize_onnx(written[0], keep, out=plain), folder))
        written = written + converted
    return written


def _heads(model: Any) -> tuple[int, int] | None:
    """``(num_heads, hidden_size)`` of a loaded model's transformer, None if it has none."""
    config = getattr(_first_module(model).model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    return (int(heads), int(hidden)) if heads and hidden else None


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

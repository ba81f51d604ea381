"""Fine-tunes the bi-encoder on the shop's judged (query, product) pairs.

Loss: MultipleNegativesRankingLoss (each query's positive against the other products of its
batch, plus optional mined hard negatives), in a plain torch loop around a
``SentenceTransformer`` (no HF Trainer, no ``datasets``/``accelerate``). Early stopping on
validation Recall@100; the best model is kept in ``out_dir`` as a sentence-transformers folder
that ``BiEncoder(out_dir)`` loads.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from catalog.errors import ShopsearchError  # noqa: E402
from evaluation.labels import Judgments  # noqa: E402
from evaluation.metrics import evaluate, mean_scores  # noqa: E402
from retrieval.encoder import MAX_QUERY_CHARS, BiEncoder, pick_device, resolve_model_path  # noqa: E402

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: MultipleNegativesRankingLoss scale (sentence-transformers' default: cosine * 20).
MNRL_SCALE = 20.0
#: Hard negatives are drawn from this many of the base model's top products per query.
HARD_NEGATIVE_DEPTH = 50
#: Steps between reads of the training loss (each read waits for the GPU).
LOG_EVERY = 10
#: Validation metric for early stopping.
VAL_K = 100

Pair = tuple[str, str]


@dataclass(frozen=True)
class RetrieverTrainConfig:
    """Options of :func:`train_retriever`.

    Attributes:
        base_model: Sentence-transformers folder to start from; None = packaged all-MiniLM-L6-v2.
        epochs: Passes over the training pairs.
        batch_size: Pairs per step; every other product of the batch is a negative (bigger is better).
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        warmup_ratio: Share of the steps with a linear warm-up; then linear decay to 0.
        max_pairs: Cap on training pairs (a seeded sample); None = all.
        train_fraction: Keep a seeded fraction of the train queries (with all their pairs).
        hard_negatives: Per pair, this many products from the base model's top
            ``HARD_NEGATIVE_DEPTH`` for the query, never a judged one; 0 = off.
        eval_every: Steps between validation checks; None = once per epoch.
        val_queries: Cap on validation queries (a seeded sample); None = all.
        val_catalog: Validation ranks the products judged for the validation queries plus this
            many random others; None = the whole catalog.
        patience: Stop after this many validation checks without a better Recall@100.
        max_seq_length: Token cap for queries and products, at most the base model's own (the
            saved model keeps it).
        seed: Seeds python, numpy and torch, the batching and the samples.
        device: "cpu", "cuda", ...; None = CUDA if available.
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        time_budget_s: Stop (after one last validation) when training has run this long.
    """

    base_model: str | None = None
    epochs: int = 1
    batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_pairs: int | None = None
    train_fraction: float = 1.0
    hard_negatives: int = 0
    eval_every: int | None = None
    val_queries: int | None = 500
    val_catalog: int | None = 20000
    patience: int = 2
    max_seq_length: int = 64
    seed: int = 0
    device: str | None = None
    bf16: bool = True
    time_budget_s: float | None = None

    def check(self) -> None:
        """Raises ShopsearchError for options out of range."""
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (got {self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 < self.train_fraction <= 1:
            problems.append(f"train_fraction must be in (0, 1] (got {self.train_fraction})")
        if self.max_pairs is not None and self.max_pairs < 1:
            problems.append(f"max_pairs must be >= 1 or None (got {self.max_pairs})")
        if self.hard_negatives < 0:
            problems.append(f"hard_negatives must be >= 0 (got {self.hard_negatives})")
        if self.eval_every is not None and self.eval_every < 1:
            problems.append(f"eval_every must be >= 1 or None (got {self.eval_every})")
        if self.val_queries is not None and self.val_queries < 1:
            problems.append(f"val_queries must be >= 1 or None (got {self.val_queries})")
        if self.val_catalog is not None and self.val_catalog < 0:
            problems.append(f"val_catalog must be >= 0 or None (got {self.val_catalog})")
        if self.patience < 1:
            problems.append(f"patience must be >= 1 (got {self.patience})")
        if self.max_seq_length < 8:
            problems.append(f"max_seq_length must be >= 8 (got {self.max_seq_length})")
        if problems:
            raise ShopsearchError("bad training options: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainReport:
    """What a training run did.

    Attributes:
        best_step: Step of the saved model (0 = the base model, training never beat it).
        best_metric: Its validation Recall@100.
        baseline_metric: Validation Recall@100 of the base model, before training.
        steps: Optimizer steps run.
        pairs_seen: Training pairs seen (steps x batch, with partial batches).
        seconds: Wall time of the whole run (loading, mining, validation included).
        pairs_per_s: Training throughput: pairs_seen / time spent in training steps.
        history: One dict per validation check (step, epoch, recall@100, loss, lr, ...).
        stopped_early: True when patience ran out.
        out_dir: Folder of the saved model.
        improved: False when no check beat the baseline (``out_dir`` holds the base model).
        stop_reason: "completed", "early_stopping" or "time_budget".
        validation: How validation was done (queries, catalog size, which catalog).
    """

    best_step: int
    best_metric: float
    baseline_metric: float
    steps: int
    pairs_seen: int
    seconds: float
    pairs_per_s: float
    history: list[dict[str, Any]]
    stopped_early: bool
    out_dir: str
    improved: bool = True
    stop_reason: str = "completed"
    validation: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- batching


def build_batches(pairs: Sequence[Pair], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of pair indices with no query and no product twice in a batch.

    Pairs are shuffled with ``seed``; a pair whose query or product is already in the batch
    being filled waits for the next batch (and is tried first there), so nothing is sorted and
    the order stays random. At the very end, a pair that finds no partner (say the last
    products of one query) is dropped: a batch of one has no negative.

    Args:
        pairs: (query_id, product_id) pairs.
        batch_size: Pairs per batch (the last batches may be smaller).
        seed: Shuffle seed.

    Returns:
        Lists of indices into ``pairs``.
    """
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    fresh = iter(order)
    waiting: deque[int] = deque()
    batches: list[list[int]] = []
    exhausted = False
    while not (exhausted and not waiting):
        batch: list[int] = []
        queries: set[str] = set()
        products: set[str] = set()
        deferred: deque[int] = deque()
        while len(batch) < batch_size:
            if waiting:
                idx = waiting.popleft()
            elif not exhausted and (nxt := next(fresh, None)) is not None:
                idx = nxt
            else:
                exhausted = True
                break
            qid, pid = pairs[idx]
            if qid in queries or pid in products:
                deferred.append(idx)
            else:
                batch.append(idx)
                queries.add(qid)
                products.add(pid)
        deferred.extend(waiting)  # pairs not tried yet keep their turn after the deferred ones
        waiting = deferred
        if len(batch) >= 2:
            batches.append(batch)
        # else: the one pair left has no partner among the rest; it is dropped
    return batches


# --------------------------------------------------------------------------- encoding helpers


def _st(model: SentenceTransformer | BiEncoder) -> SentenceTransformer:
    return model.model if isinstance(model, BiEncoder) else model


def _prompt(st: SentenceTransformer, names: Iterable[str]) -> str | None:
    prompts = getattr(st, "prompts", None) or {}
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return None


def _query_prompt(st: SentenceTransformer) -> str | None:
    return _prompt(st, ("query",))


def _document_prompt(st: SentenceTransformer) -> str | None:
    return _prompt(st, ("document", "passage", "corpus"))


def _has_router(st: SentenceTransformer) -> bool:
    return any(type(m).__name__ == "Router" for m in st.modules())


def _model_device(st: SentenceTransformer) -> torch.device:
    return next(st.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    enabled = bf16 and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _encode(
    st: SentenceTransformer,
    texts: Sequence[str],
    *,
    query: bool,
    batch_size: int,
    bf16: bool = True,
) -> torch.Tensor:
    """L2-normalised float32 embeddings on the model's device (eval mode, no grad)."""
    device = _model_device(st)
    if not texts:
        return torch.zeros((0, st.get_sentence_embedding_dimension() or 0), device=device)
    if query:
        texts = [t[:MAX_QUERY_CHARS] for t in texts]
    fn_name = "encode_query" if query else "encode_document"
    fn = getattr(st, fn_name, None)
    kwargs: dict[str, Any] = {}
    if fn is None:  # sentence-transformers < 5
        fn = st.encode
        prompt = _query_prompt(st) if query else _document_prompt(st)
        if prompt:
            kwargs["prompt"] = prompt
    with torch.inference_mode(), _autocast(device, bf16):
        emb = fn(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            **kwargs,
        )
    return emb.float().to(device)


def _top_k(
    queries: torch.Tensor, docs: torch.Tensor, k: int, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by dot product, in query chunks: (scores, indices) as numpy."""
    k = min(k, docs.shape[0])
    scores, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start : start + chunk] @ docs.T
        top = torch.topk(sims, k, dim=1)
        scores.append(top.values.cpu().numpy())
        indices.append(top.indices.cpu().numpy())
    if not scores:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate(scores), np.concatenate(indices)


def brute_force_top_k(
    model: SentenceTransformer | BiEncoder,
    data: Judgments,
    product_ids: Sequence[str],
    split: str,
    query_ids: Sequence[str],
    k: int,
    batch_size: int = 256,
    bf16: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the products for the split's queries: (scores, indices into product_ids)."""
    st = _st(model)
    was_training = st.training
    try:
        docs = _encode(
            st, [data.texts[p] for p in product_ids], query=False, batch_size=batch_size, bf16=bf16
        )
        queries = _encode(
            st,
            [data.queries[split][q] for q in query_ids],
            query=True,
            batch_size=batch_size,
            bf16=bf16,
        )
    finally:
        st.train(was_training)
    return _top_k(queries, docs, k)


# --------------------------------------------------------------------------- validation


def _relevant_qrels(data: Judgments, split: str) -> dict[str, dict[str, float]]:
    """Judgments of the split's queries (with a text) that have >= 1 relevant product in the catalog."""
    queries = data.queries.get(split, {})
    out = {}
    for qid, judged in data.qrels.get(split, {}).items():
        if qid not in queries:
            continue
        if any(g >= data.threshold and pid in data.texts for pid, g in judged.items()):
            out[qid] = {pid: g for pid, g in judged.items() if pid in data.texts}
    return out


def validation_setup(
    data: Judgments,
    split: str = "validation",
    max_queries: int | None = None,
    extra_products: int | None = None,
    seed: int = 0,
) -> tuple[list[str], list[str] | None, str]:
    """Validation queries and catalog, chosen once for a whole run.

    Args:
        data: The judgments.
        split: Split to validate on.
        max_queries: Seeded sample of at most this many queries with a relevant product.
        extra_products: Rank against the products judged for those queries plus this many
            random others; None = the whole catalog.
        seed: Sampling seed.

    Returns:
        (query ids, catalog product ids or None for the whole catalog, a description).

    Raises:
        ShopsearchError: No query of the split has a relevant product.
    """
    qrels = _relevant_qrels(data, split)
    if not qrels:
        raise ShopsearchError(
            f"no {split} query has a relevant product (grade >= {data.threshold}) in the catalog: "
            f"validation needs some; re-import the benchmark with a {split} split"
        )
    rng = random.Random(seed)
    qids = sorted(qrels)
    if max_queries is not None and len(qids) > max_queries:
        qids = sorted(rng.sample(qids, max_queries))
    if extra_products is None or extra_products >= len(data.texts):
        return (
            qids,
            None,
            f"{len(qids)} {split} queries ranked against the whole catalog ({len(data.texts)} products)",
        )
    judged = sorted({pid for q in qids for pid in qrels[q]})
    judged_set = set(judged)
    others = [pid for pid in data.texts if pid not in judged_set]
    picked = rng.sample(others, min(extra_products, len(others)))
    catalog = judged + sorted(picked)
    desc = (
        f"{len(qids)} {split} queries ranked against a sampled catalog of {len(catalog)} products "
        f"({len(judged)} judged for them + {len(picked)} random others; whole catalog: "
        f"{len(data.texts)}) - optimistic next to the full catalog, use it to compare checkpoints"
    )
    return qids, catalog, desc


def validation_recall(
    model: SentenceTransformer | BiEncoder,
    data: Judgments,
    split: str = "validation",
    k: int = VAL_K,
    max_queries: int | None = None,
    catalog_ids: Sequence[str] | None = None,
    batch_size: int = 256,
    bf16: bool = True,
) -> float:
    """Mean Recall@k of brute-force retrieval over the queries with >= 1 relevant product.

    Encodes the products (``catalog_ids``, or the whole catalog) and the queries, ranks by dot
    product of the normalised vectors on the model's device and scores with
    :func:`evaluation.metrics.evaluate`.

    Args:
        model: A SentenceTransformer or a BiEncoder.
        data: The judgments.
        split: Split whose queries are used.
        k: Recall cut-off.
        max_queries: Seeded sample (seed 0) of at most this many queries; None = all.
        catalog_ids: Products to rank; None = all of ``data.texts``.
        batch_size: Encoding batch size.
        bf16: Encode under bfloat16 autocast on CUDA.

    Raises:
        ShopsearchError: No query of the split has a relevant product.
    """
    st = _st(model)
    qrels = _relevant_qrels(data, split)
    if not qrels:
        raise ShopsearchError(
            f"no {split} query has a relevant product (grade >= {data.threshold})"
        )
    qids = sorted(qrels)
    if max_queries is not None and len(qids) > max_queries:
        qids = sorted(random.Random(0).sample(qids, max_queries))
    pids = list(data.texts) if catalog_ids is None else [p for p in catalog_ids if p in data.texts]
    if not pids:
        raise ShopsearchError("validation catalog is empty")
    scores, indices = brute_force_top_k(st, data, pids, split, qids, k, batch_size, bf16)
    run = {
        qid: {pids[int(i)]: float(s) for s, i in zip(scores[row], indices[row], strict=True)}
        for row, qid in enumerate(qids)
    }
    metric = f"recall@{k}"
    per_query = evaluate(
        {q: qrels[q] for q in qids}, run, [metric], data.threshold, data.gain_offset
    )
    return float(mean_scores(per_query)[metric])


# --------------------------------------------------------------------------- hard negatives


def mine_hard_negatives(
    model: SentenceTransformer | BiEncoder,
    data: Judgments,
    query_ids: Iterable[str],
    split: str = "train",
    depth: int = HARD_NEGATIVE_DEPTH,
    batch_size: int = 256,
    bf16: bool = True,
) -> dict[str, list[str]]:
    """Each query's top unjudged products by the model, brute-force over the whole catalog.

    Args:
        model: The (base) model that ranks.
        data: The judgments (catalog texts, queries, qrels).
        query_ids: Queries of ``split`` to mine for.
        split: Split the queries and their judgments come from.
        depth: Ranks looked at per query (plus the query's judged products, skipped).
        batch_size: Encoding batch size.
        bf16: Encode under bfloat16 autocast on CUDA.

    Returns:
        query_id -> product ids, best first, none of them judged (any grade) for the query.
    """
    st = _st(model)
    qids = [q for q in dict.fromkeys(query_ids) if q in data.queries.get(split, {})]
    pids = list(data.texts)
    if not qids or not pids:
        return {}
    judged = {q: set(data.qrels.get(split, {}).get(q, {})) for q in qids}
    k = depth + max(len(j) for j in judged.values())
    _, indices = brute_force_top_k(st, data, pids, split, qids, k, batch_size, bf16)
    out: dict[str, list[str]] = {}
    for row, qid in enumerate(qids):
        ranked = (pids[int(i)] for i in indices[row])
        out[qid] = [p for p in ranked if p not in judged[qid]][:depth]
    return out


# --------------------------------------------------------------------------- training


def check_out_dir(out_dir: Path, what: str = "model") -> None:
    """Refuses an output folder that exists and is not empty (training never overwrites)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ShopsearchError(
            f"output folder {out_dir} exists and is not empty: give a new folder for the trained "
            f"{what} (training never overwrites a model)"
        )


def _training_pairs(
    data: Judgments, config: RetrieverTrainConfig, log: Callable[[str], Any]
) -> list[Pair]:
    if "train" not in data.qrels or "train" not in data.queries:
        raise ShopsearchError("the judgments have no train split")
    source = data
    if config.train_fraction < 1.0:
        source = data.subset("train", config.train_fraction, seed=config.seed)
    queries = source.queries["train"]
    pairs = [(q, p) for q, p in source.relevant_pairs("train") if q in queries]
    pairs.sort()  # a stable order whatever the dict order, before seeded sampling / shuffling
    if config.max_pairs is not None and len(pairs) > config.max_pairs:
        pairs = sorted(random.Random(config.seed).sample(pairs, config.max_pairs))
    need = 2 * config.batch_size
    if len(pairs) < need:
        sel = ""
        if config.train_fraction < 1.0 or config.max_pairs is not None:
            sel = f" (after train_fraction={config.train_fraction}, max_pairs={config.max_pairs})"
        raise ShopsearchError(
            f"only {len(pairs)} relevant (query, product) pairs in the train split{sel}: need at least "
            f"{need} (2 x batch_size {config.batch_size}); label more queries or lower batch_size"
        )
    n_queries = len({q for q, _ in pairs})
    log(f"training pairs: {len(pairs)} from {n_queries} train queries")
    return pairs


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _optimizer(st: SentenceTransformer, config: RetrieverTrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in st.named_parameters():
        if not param.requires_grad:
            continue
        # biases and LayerNorm weights (all 1-d) are not decayed
        if param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs: dict[str, Any] = {"lr": config.lr}
    if _model_device(st).type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _features(
    st: SentenceTransformer, texts: list[str], prompt: str | None, task: str | None, device
) -> dict:
    from sentence_transformers.util import batch_to_device

    kwargs: dict[str, Any] = {}
    if task is not None:
        kwargs["task"] = task
    preprocess = getattr(st, "preprocess", None)
    if preprocess is not None:
        features = preprocess(texts, prompt=prompt, **kwargs)
    else:  # sentence-transformers < 6
        if prompt:
            texts = [prompt + t for t in texts]
        features = st.tokenize(texts, **kwargs)
    return batch_to_device(features, device)


def mnrl_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float = MNRL_SCALE,
) -> torch.Tensor:
    """MultipleNegativesRankingLoss: cross-entropy of cosine x scale; query i's positive is doc i.

    Args:
        queries: (B, d) query embeddings.
        docs: (B + extra, d) document embeddings; the first B are the positives in order.
        mask: Optional (B, B + extra) bool, True where a doc must not count as a negative
            of that query (another relevant product of it); the positive itself is never masked.
        scale: Temperature inverse.
    """
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    d = torch.nn.functional.normalize(docs.float(), dim=-1)
    logits = q @ d.T * scale
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(q.shape[0], device=q.device)
    return torch.nn.functional.cross_entropy(logits, labels)


def _false_negative_mask(
    batch: list[Pair], doc_ids: list[str], relevant: dict[str, set[str]], device: torch.device
) -> torch.Tensor | None:
    columns: dict[str, list[int]] = {}
    for j, pid in enumerate(doc_ids):
        columns.setdefault(pid, []).append(j)
    cells: list[tuple[int, int]] = []
    for i, (qid, pid) in enumerate(batch):
        for other in relevant.get(qid, set()) | {pid}:
            cells.extend((i, j) for j in columns.get(other, ()) if j != i)
    if not cells:
        return None
    mask = torch.zeros((len(batch), len(doc_ids)), dtype=torch.bool)
    rows, cols = zip(*cells, strict=True)
    mask[list(rows), list(cols)] = True
    return mask.to(device, non_blocking=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def train_retriever(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    config: RetrieverTrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> TrainReport:
    """Fine-tunes the bi-encoder with in-batch negatives; keeps the best model in ``out_dir``.

    Validation Recall@100 is measured before training (the baseline, and the base model is
    saved then) and every ``eval_every`` steps / each epoch; every better check overwrites the
    saved model. ``out_dir`` always ends up holding a loadable model: the base model when
    training never beat the baseline. Also writes ``out_dir/logs`` (TensorBoard) and
    ``out_dir/train_report.json``.

    Args:
        data: Judgments with train and validation splits and the catalog texts.
        out_dir: New (or empty) folder for the model.
        config: Options; None = defaults.
        progress: Show a tqdm progress bar.
        log: Called with one-line messages.

    Raises:
        ShopsearchError: ``out_dir`` not empty, too few training pairs, no validation query
            with a relevant product, bad options or a model that cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    config = config or RetrieverTrainConfig()
    config.check()
    out = Path(out_dir).expanduser()
    check_out_dir(out, "retriever")
    started = time.perf_counter()
    pairs = _training_pairs(data, config, log)
    val_qids, val_catalog, val_desc = validation_setup(
        data, "validation", config.val_queries, config.val_catalog, seed=config.seed
    )
    val_data = Judgments(
        data.texts,
        {**data.queries, "validation": {q: data.queries["validation"][q] for q in val_qids}},
        {**data.qrels, "validation": {q: data.qrels["validation"][q] for q in val_qids}},
        data.threshold,
        data.gain_offset,
    )
    log(f"validation: {val_desc}")

    _seed_everything(config.seed)
    device = torch.device(pick_device(config.device))
    base_path = resolve_model_path(config.base_model)
    hf_logging.disable_progress_bar()
    try:
        st = SentenceTransformer(str(base_path), device=str(device), local_files_only=True)
    except Exception as exc:
        raise ShopsearchError(f"cannot load model from {base_path}: {exc}") from exc
    # never above the model's own limit (its position embeddings may end there)
    st.max_seq_length = min(config.max_seq_length, st.max_seq_length or config.max_seq_length)
    use_bf16 = config.bf16 and device.type == "cuda"
    q_prompt, d_prompt = _query_prompt(st), _document_prompt(st)
    router = _has_router(st)
    log(
        f"model {base_path} on {device}{' (bf16 autocast)' if use_bf16 else ''}, "
        f"max_seq_length {st.max_seq_length}"
        + (f", query prompt {q_prompt!r}" if q_prompt else "")
        + (f", document prompt {d_prompt!r}" if d_prompt else "")
    )

    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(out / "logs"))

    def validate() -> tuple[float, float]:
        t0 = time.perf_counter()
        value = validation_recall(
            st, val_data, "validation", VAL_K, catalog_ids=val_catalog, bf16=config.bf16
        )
        st.train()
        return value, time.perf_counter() - t0

    def save() -> None:
        st.save(str(out), create_model_card=False)

    baseline, eval_s = validate()
    log(f"baseline validation recall@{VAL_K}: {baseline:.4f} ({eval_s:.1f}s)")
    writer.add_scalar(f"val/recall@{VAL_K}", baseline, 0)
    save()  # the folder always holds a loadable model, the base one until beaten

    hard: dict[str, list[str]] = {}
    if config.hard_negatives:
        t0 = time.perf_counter()
        hard = mine_hard_negatives(st, data, {q for q, _ in pairs}, "train", bf16=config.bf16)
        st.train()
        log(
            f"mined hard negatives for {len(hard)} queries from the top {HARD_NEGATIVE_DEPTH} of "
            f"{len(data.texts)} products ({time.perf_counter() - t0:.1f}s)"
        )
    relevant: dict[str, set[str]] = {}
    for qid, pid in data.relevant_pairs("train"):
        relevant.setdefault(qid, set()).add(pid)

    epochs_batches = [
        build_batches(pairs, config.batch_size, config.seed + e) for e in range(config.epochs)
    ]
    total_steps = sum(len(b) for b in epochs_batches)
    warmup = int(total_steps * config.warmup_ratio)
    optimizer = _optimizer(st, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup, total_steps))
    rng = random.Random(config.seed)
    train_queries = data.queries["train"]
    log(
        f"{config.epochs} epoch(s) x ~{len(epochs_batches[0])} steps of {config.batch_size} pairs"
        f"{f' + {config.hard_negatives} hard negatives each' if config.hard_negatives else ''}, "
        f"lr {config.lr}, warm-up {warmup} steps"
    )

    best, best_step = baseline, 0
    history: list[dict[str, Any]] = [
        {
            "step": 0,
            "epoch": 0,
            "pairs_seen": 0,
            f"recall@{VAL_K}": baseline,
            "loss": None,
            "lr": 0.0,
            "eval_seconds": round(eval_s, 2),
            "best": True,
        }
    ]
    step = pairs_seen = 0
    bad_checks = 0
    train_s = 0.0  # wall time in training steps (validation excluded)
    seg_start = time.perf_counter()
    loss_sum, loss_n = 0.0, 0  # since the last validation
    loss_acc, acc_n = torch.zeros((), device=device), 0  # on the device, read every LOG_EVERY
    stop_reason = "completed"
    last_eval_step = 0
    st.train()
    bar = tqdm(
        total=total_steps, disable=not progress, desc="train", unit="step", dynamic_ncols=True
    )

    def flush_loss() -> None:
        """Reads the summed loss off the device (a sync) and logs its mean."""
        nonlocal loss_acc, acc_n, loss_sum, loss_n
        if not acc_n:
            return
        total = float(loss_acc)
        loss_sum += total
        loss_n += acc_n
        mean = total / acc_n
        writer.add_scalar("train/loss", mean, step)
        elapsed = train_s + time.perf_counter() - seg_start
        bar.set_postfix(
            loss=f"{mean:.3f}",
            lr=f"{scheduler.get_last_lr()[0]:.2e}",
            pairs_s=f"{pairs_seen / elapsed:.0f}" if elapsed > 0 else "-",
        )
        loss_acc, acc_n = torch.zeros((), device=device), 0

    def check(epoch: int) -> bool:
        """Validates; returns True when training should stop (patience)."""
        nonlocal best, best_step, bad_checks, loss_sum, loss_n, last_eval_step, train_s, seg_start
        flush_loss()
        train_s += time.perf_counter() - seg_start
        value, secs = validate()
        improved = value > best + 1e-9
        if improved:
            best, best_step, bad_checks = value, step, 0
            save()
        else:
            bad_checks += 1
        lr = scheduler.get_last_lr()[0]
        mean_loss = loss_sum / loss_n if loss_n else None
        history.append(
            {
                "step": step,
                "epoch": epoch,
                "pairs_seen": pairs_seen,
                f"recall@{VAL_K}": value,
                "loss": mean_loss,
                "lr": lr,
                "eval_seconds": round(secs, 2),
                "best": improved,
            }
        )
        writer.add_scalar(f"val/recall@{VAL_K}", value, step)
        writer.flush()
        loss_txt = f"{mean_loss:.4f}" if mean_loss is not None else "-"
        log(
            f"step {step}/{total_steps} epoch {epoch}: val recall@{VAL_K} {value:.4f} "
            f"(best {best:.4f} @ step {best_step}), train loss {loss_txt}, {secs:.1f}s"
            + (" - saved" if improved else f" - no gain ({bad_checks}/{config.patience})")
        )
        loss_sum, loss_n = 0.0, 0
        last_eval_step = step
        seg_start = time.perf_counter()
        return bad_checks >= config.patience

    stop = False
    for epoch, batches in enumerate(epochs_batches, start=1):
        for batch_idx in batches:
            batch = [pairs[i] for i in batch_idx]
            q_texts = [train_queries[q][:MAX_QUERY_CHARS] for q, _ in batch]
            doc_ids = [p for _, p in batch]
            if hard:
                for qid, _ in batch:
                    cands = hard.get(qid, [])
                    doc_ids.extend(rng.sample(cands, min(config.hard_negatives, len(cands))))
            d_texts = [data.texts[p] for p in doc_ids]
            mask = _false_negative_mask(batch, doc_ids, relevant, device)
            q_feat = _features(st, q_texts, q_prompt, "query" if router else None, device)
            d_feat = _features(st, d_texts, d_prompt, "document" if router else None, device)
            fwd_kwargs_q = {"task": "query"} if router else {}
            fwd_kwargs_d = {"task": "document"} if router else {}
            with _autocast(device, config.bf16):
                q_emb = st(q_feat, **fwd_kwargs_q)["sentence_embedding"]
                d_emb = st(d_feat, **fwd_kwargs_d)["sentence_embedding"]
            loss = mnrl_loss(q_emb, d_emb, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(st.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_acc += loss.detach()  # no sync per step: read every LOG_EVERY steps
            acc_n += 1
            step += 1
            pairs_seen += len(batch)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            bar.update(1)
            if step % LOG_EVERY == 0:
                flush_loss()
            if config.eval_every is not None and step % config.eval_every == 0 and check(epoch):
                stop, stop_reason = True, "early_stopping"
                break
            if (
                config.time_budget_s is not None
                and time.perf_counter() - started > config.time_budget_s
            ):
                stop_reason = "time_budget"
                log(f"time budget of {config.time_budget_s:g}s reached at step {step}")
                if step != last_eval_step:
                    check(epoch)
                stop = True
                break
        if stop:
            break
        if config.eval_every is None and check(epoch):
            stop, stop_reason = True, "early_stopping"
            break
    if not stop and step != last_eval_step:
        check(config.epochs)
    bar.close()
    writer.close()

    improved = best_step > 0
    if not improved:
        log(
            f"training never beat the baseline validation recall@{VAL_K} ({baseline:.4f}): "
            f"{out} holds the base model unchanged"
        )
    seconds = time.perf_counter() - started
    report = TrainReport(
        best_step=best_step,
        best_metric=best,
        baseline_metric=baseline,
        steps=step,
        pairs_seen=pairs_seen,
        seconds=round(seconds, 2),
        pairs_per_s=round(pairs_seen / train_s, 2) if train_s else 0.0,
        history=history,
        stopped_early=stop_reason == "early_stopping",
        out_dir=str(out),
        improved=improved,
        stop_reason=stop_reason,
        validation={
            "description": val_desc,
            "queries": len(val_qids),
            "catalog": len(val_catalog) if val_catalog is not None else len(data.texts),
            "whole_catalog": val_catalog is None,
        },
    )
    payload = {**asdict(report), "config": asdict(config), "base_model_path": str(base_path)}
    (out / "train_report.json").write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    log(
        f"done: {step} steps, {pairs_seen} pairs at {report.pairs_per_s:.1f} pairs/s; "
        f"best val recall@{VAL_K} {best:.4f} at step {best_step} (baseline {baseline:.4f}); "
        f"stop: {stop_reason}; model in {out}"
    )
    return report

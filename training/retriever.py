"""Fine-tunes the bi-encoder on the shop's judged (query, product) pairs.

Trained with sentence-transformers' ``SentenceTransformerTrainer`` and
``MultipleNegativesRankingLoss``: each query's relevant product against the other products of its
batch (in-batch negatives; the ``NO_DUPLICATES`` batch sampler keeps a query or a product from
appearing twice in a batch) plus, optionally, mined hard negatives as extra columns. The trainer
owns AdamW with weight decay, warm-up and decay, clipping and bf16 on CUDA; validation Recall@100
(:class:`RecallEvaluator`, on ``evaluation.metrics``) drives early stopping and picks the
checkpoint kept. ``out_dir`` ends up holding a sentence-transformers folder that
``BiEncoder(out_dir)`` (or ``SentenceTransformer(out_dir)``) loads: the best checkpoint, or the
starting model when training never beat it. With ``lora_rank`` only a LoRA adapter on the
attention projections is trained and ``out_dir`` holds the adapter folder instead
(:mod:`inference.adapters`; ``BiEncoder(out_dir)`` opens base + adapter).

With a ``teacher`` (a trained cross-encoder) the loss is ``MarginMSELoss`` instead (Hofstaetter
et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation", arXiv:2010.02666): each (query, positive, hard negatives) row carries the
teacher's logit margins ``teacher(q, pos) - teacher(q, neg_i)`` and the student's margins of
``scale * cosine`` are fitted to them by mean squared error. ``scale`` puts the student's margins
on the teacher's units before training (:func:`margin_scale`: the ratio of the two margins'
spreads on a sample of the rows), so that the loss asks the student to reorder, not to shrink or
stretch every margin: a cross-encoder trained with BCE on graded labels can give small margins,
and a fixed MNRL-like scale of 20 then has the student collapse its own to fit them
(``CHANGELOG.md``, 2026-12-07). The hard negatives come from the base model's dense top or, with
``negatives_index``, from an index's hybrid results (what serving retrieves and the teacher
reranks). Mining and labelling happen before training and are reported apart
(``details["label_seconds"]``); the time budget counts training alone. Seeding, the time budget, the report and the logs
are :mod:`training.common`'s, shared with the reranker.

Needs the ``train`` extra (``datasets``, ``accelerate``); imported only when training.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import evaluate, mean_scores
from inference import adapters
from inference.models import pick_device, resolve_model_path
from retrieval.encoder import MAX_QUERY_CHARS, BiEncoder
from training import common as trainkit
from training.common import TrainReport, check_out_dir, seed_everything
from training.config import RetrieverTrainConfig
from training.noise import TypoNoise

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "RetrieverTrainConfig",
    "TrainReport",
    "brute_force_top_k",
    "check_out_dir",
    "label_margins",
    "mine_hard_negatives",
    "mine_index_negatives",
    "recall_evaluator",
    "seed_everything",
    "train_retriever",
    "validation_recall",
    "validation_setup",
]

#: MultipleNegativesRankingLoss scale (sentence-transformers' default: cosine * 20).
MNRL_SCALE = 20.0
#: Hard negatives are drawn from this many of the base model's top products per query.
HARD_NEGATIVE_DEPTH = 50
#: Validation metric for early stopping.
VAL_K = 100
METRIC = f"recall@{VAL_K}"

Pair = tuple[str, str]


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
    fn = st.encode_query if query else st.encode_document  # they add the model's prompts
    with torch.inference_mode(), _autocast(device, bf16):
        emb = fn(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
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


def mine_index_negatives(
    index: str | os.PathLike[str],
    data: Judgments,
    query_ids: Iterable[str],
    split: str = "train",
    depth: int = HARD_NEGATIVE_DEPTH,
) -> dict[str, list[str]]:
    """Each query's top unjudged products in an index's hybrid results (what serving retrieves).

    Args:
        index: An embedded index directory (``shopsearch index build``) of the same catalog.
        data: The judgments.
        query_ids: Queries of ``split`` to mine for.
        split: Split the queries and their judgments come from.
        depth: Hits retrieved per query (the judged ones are then skipped).

    Returns:
        query_id -> product ids, best first, none judged for the query and all in the catalog.

    Raises:
        ShopsearchError: No index at ``index``.
    """
    from retrieval.store import IndexLocation
    from training.candidates import reranker_candidates

    qids = [q for q in dict.fromkeys(query_ids) if q in data.queries.get(split, {})]
    if not qids:
        return {}
    got = reranker_candidates(IndexLocation(path=Path(index)), data, qids, depth)
    judged = data.qrels.get(split, {})
    return {
        q: [p for p in pids if p not in judged.get(q, {}) and p in data.texts]
        for q, pids in got.items()
    }


def scaled_dot(a: torch.Tensor, b: torch.Tensor, scale: float = MNRL_SCALE) -> torch.Tensor:
    """``scale`` times the row-wise dot product (the cosine of normalised embeddings): the
    student's score that MarginMSE fits to the teacher's logit margins. Shapes ``(n, d)`` ->
    ``(n,)``."""
    return scale * (a * b).sum(dim=-1)


#: Rows of the training set :func:`margin_scale` encodes (a seeded sample).
SCALE_SAMPLE = 512


@torch.inference_mode()
def margin_scale(
    model: Any, dataset: Any, n_negatives: int, sample: int = SCALE_SAMPLE, seed: int = 0
) -> float:
    """The student's score scale for MarginMSE: the teacher's margins' standard deviation over
    the starting model's dot-product margins', on a seeded sample of the labelled rows.

    Matching the spreads (not a least-squares fit, which a teacher that disagrees with the
    student drives to 0) leaves the loss with the margins' order and relative size to teach.

    Args:
        model: The student (``SentenceTransformer``) before training.
        dataset: :func:`label_margins`'s output (``anchor``, ``positive``, ``negative_i``,
            ``label``).
        n_negatives: Negatives per row.
        sample: Rows encoded (each three or more texts).
        seed: The sample's seed.

    Returns:
        The scale (> 0); :data:`MNRL_SCALE` when either spread is 0 (too few rows).
    """
    rows = np.random.default_rng(seed).permutation(len(dataset))[:sample].tolist()
    part = dataset.select(rows)
    teacher = np.asarray(part["label"], dtype=np.float64).reshape(len(rows), -1)

    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode(texts, convert_to_tensor=True, show_progress_bar=False)

    q = encode(part["anchor"])
    pos = (q * encode(part["positive"])).sum(dim=-1)
    student = np.stack(
        [
            (pos - (q * encode(part[f"negative_{i + 1}"])).sum(dim=-1)).cpu().numpy()
            for i in range(n_negatives)
        ],
        axis=1,
    ).astype(np.float64)
    t, c = float(teacher.std()), float(student.std())
    return t / c if t > 0 and c > 0 else MNRL_SCALE


def label_margins(
    teacher: Any, dataset: Any, n_negatives: int, log: Callable[[str], Any] = print
) -> tuple[Any, dict[str, float]]:
    """Adds the teacher's margins to a :func:`training_dataset` as its ``label`` column.

    Every distinct (anchor, text) pair is scored once by the teacher (a loaded
    :class:`rerank.cross_encoder.Reranker`: raw logits).

    Args:
        teacher: Has ``score_pairs(pairs) -> np.ndarray`` of logits.
        dataset: ``anchor``, ``positive``, ``negative_1..n`` columns.
        n_negatives: ``n`` (>= 1).
        log: One-line messages.

    Returns:
        (the dataset with ``label``: a float per row for one negative, else a list of ``n``
        floats, ``teacher(anchor, positive) - teacher(anchor, negative_i)``; the figures:
        ``label_seconds``, ``teacher_pairs`` scored, ``mean_margin``).
    """
    t0 = time.perf_counter()
    anchors = dataset["anchor"]
    columns = ["positive"] + [f"negative_{i + 1}" for i in range(n_negatives)]
    texts = {c: dataset[c] for c in columns}
    unique = list(
        dict.fromkeys((a, texts[c][row]) for c in columns for row, a in enumerate(anchors))
    )
    log(f"teacher: scoring {len(unique)} distinct (query, product) pairs")
    logits = teacher.score_pairs(unique)
    score = dict(zip(unique, (float(x) for x in logits), strict=True))
    margins = [
        [
            score[(a, texts["positive"][row])] - score[(a, texts[f"negative_{i + 1}"][row])]
            for i in range(n_negatives)
        ]
        for row, a in enumerate(anchors)
    ]
    labels: list[Any] = [m[0] for m in margins] if n_negatives == 1 else margins
    seconds = time.perf_counter() - t0
    flat = np.asarray(margins, dtype=np.float64)
    figures = {
        "label_seconds": round(seconds, 2),
        "teacher_pairs": float(len(unique)),
        "teacher_pairs_per_s": round(len(unique) / seconds, 1) if seconds > 0 else 0.0,
        "mean_margin": round(float(flat.mean()), 4) if flat.size else 0.0,
    }
    log(f"teacher: {len(unique)} pairs in {seconds:.1f}s; mean margin {figures['mean_margin']:.2f}")
    return dataset.add_column("label", labels), figures


# --------------------------------------------------------------------------- training


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


def _base_evaluator_class() -> type:
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator
    return BaseEvaluator


def recall_evaluator(
    data: Judgments,
    catalog_ids: Sequence[str] | None,
    k: int = VAL_K,
    batch_size: int = 256,
    bf16: bool = True,
) -> Any:
    """A sentence-transformers evaluator of validation Recall@k (see :func:`validation_recall`).

    Returns ``{"recall@k": value}``; ``primary_metric`` is that key, higher is better. Keeps the
    seconds it has spent in ``.seconds`` (so the report can give training throughput alone).
    """
    base = _base_evaluator_class()

    class RecallEvaluator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = f"recall@{k}"
            self.greater_is_better = True
            self.seconds = 0.0

        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
            t0 = time.perf_counter()
            value = validation_recall(
                model,
                data,
                "validation",
                k,
                catalog_ids=catalog_ids,
                batch_size=batch_size,
                bf16=bf16,
            )
            self.seconds += time.perf_counter() - t0
            return {self.primary_metric: value}

    return RecallEvaluator()


def training_dataset(
    data: Judgments,
    pairs: Sequence[Pair],
    hard: dict[str, list[str]] | None,
    n_hard: int,
    seed: int,
    typo_rate: float = 0.0,
) -> Any:
    """A ``datasets.Dataset`` with ``anchor`` (query), ``positive`` and ``negative_1..n`` (texts).

    Hard negatives are drawn per pair from ``hard[qid]`` (seeded); a query with too few gets
    random catalog products it has no judgment for. With ``typo_rate`` > 0 each anchor gets
    typos (:class:`training.noise.TypoNoise`, seeded by ``seed`` and the pair's position, so
    one query's pairs get different typos).
    """
    from datasets import Dataset

    queries = data.queries["train"]
    noise = TypoNoise(typo_rate, seed)
    columns: dict[str, list[str]] = {
        "anchor": [
            noise(queries[q][:MAX_QUERY_CHARS], i) if typo_rate else queries[q][:MAX_QUERY_CHARS]
            for i, (q, _) in enumerate(pairs)
        ],
        "positive": [data.texts[p] for _, p in pairs],
    }
    if hard and n_hard:
        rng = random.Random(seed)
        all_pids = sorted(data.texts)
        judged = data.qrels.get("train", {})
        negatives: list[list[str]] = []
        for qid, _ in pairs:
            cands = hard.get(qid, [])
            chosen = rng.sample(cands, min(n_hard, len(cands)))
            while len(chosen) < n_hard:
                pid = all_pids[rng.randrange(len(all_pids))]
                if pid not in judged.get(qid, {}) and pid not in chosen:
                    chosen.append(pid)
            negatives.append([data.texts[p] for p in chosen])
        for i in range(n_hard):
            columns[f"negative_{i + 1}"] = [row[i] for row in negatives]
    return Dataset.from_dict(columns)


def _margin_mse() -> type:
    """sentence-transformers' ``MarginMSELoss``, any release."""
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.losses import MarginMSELoss
    return MarginMSELoss


def _imports() -> tuple[Any, Any, Any, Any]:
    """(SentenceTransformerTrainer, its TrainingArguments, MNRL, BatchSamplers), any release."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:  # sentence-transformers >= 6
        from sentence_transformers.base.sampler import BatchSamplers
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers
    return (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        MultipleNegativesRankingLoss,
        BatchSamplers,
    )


def _column_settings(st: SentenceTransformer, columns: Sequence[str]) -> dict[str, Any]:
    """Trainer arguments for models with query/document prompts or a query/document Router."""
    extra: dict[str, Any] = {}
    q_prompt, d_prompt = _query_prompt(st), _document_prompt(st)
    if q_prompt or d_prompt:
        extra["prompts"] = {c: (q_prompt if c == "anchor" else d_prompt) or "" for c in columns}
    if _has_router(st):
        extra["router_mapping"] = {c: ("query" if c == "anchor" else "document") for c in columns}
    return extra


def train_retriever(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    config: RetrieverTrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> TrainReport:
    """Fine-tunes the bi-encoder with in-batch negatives; keeps the best model in ``out_dir``.

    Validation Recall@100 is measured before training (the baseline; the starting model is saved
    then, so ``out_dir`` always holds a loadable model) and every ``eval_every`` steps / each
    epoch; the best checkpoint that beats the baseline replaces it at the end. Also writes
    ``out_dir/logs`` (TensorBoard) and ``out_dir/train_report.json``.

    Args:
        data: Judgments with train and validation splits and the catalog texts.
        out_dir: New (or empty) folder for the model.
        config: Options; None = defaults.
        progress: Show the trainer's progress bar.
        log: Called with one-line messages.

    Raises:
        ShopsearchError: ``out_dir`` not empty, too few training pairs, no validation query
            with a relevant product, bad options, a model that cannot be loaded, or the
            ``train`` extra missing.
    """
    started = time.perf_counter()
    config = config or RetrieverTrainConfig()
    config.check()
    out = Path(out_dir).expanduser()
    check_out_dir(out, "retriever")
    trainkit.require_train_extra()
    from sentence_transformers import SentenceTransformer

    trainer_cls, args_cls, mnrl_cls, samplers = _imports()
    trainkit.quiet_libraries()

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

    seed_everything(config.seed)
    device = pick_device(config.device)
    base_path = resolve_model_path(config.base_model)
    try:
        st = SentenceTransformer(str(base_path), device=device, local_files_only=True)
    except Exception as exc:
        raise ShopsearchError(f"cannot load model from {base_path}: {exc}") from exc
    # never above the model's own limit (its position embeddings may end there)
    st.max_seq_length = min(config.max_seq_length, st.max_seq_length or config.max_seq_length)
    log(f"model {base_path} on {device}, max_seq_length {st.max_seq_length}")

    hard: dict[str, list[str]] = {}
    prep_started = time.perf_counter()
    threads = torch.get_num_threads()  # opening an index or a reranker sets every core's
    if config.hard_negatives and config.negatives_index is not None:
        hard = mine_index_negatives(config.negatives_index, data, {q for q, _ in pairs}, "train")
        log(
            f"mined hard negatives for {len(hard)} queries from the top {HARD_NEGATIVE_DEPTH} "
            f"hybrid hits of {config.negatives_index} ({time.perf_counter() - prep_started:.1f}s)"
        )
    elif config.hard_negatives:
        t0 = time.perf_counter()
        hard = mine_hard_negatives(st, data, {q for q, _ in pairs}, "train", bf16=config.bf16)
        log(
            f"mined hard negatives for {len(hard)} queries from the top {HARD_NEGATIVE_DEPTH} of "
            f"{len(data.texts)} products ({time.perf_counter() - t0:.1f}s)"
        )
    dataset = training_dataset(
        data, pairs, hard, config.hard_negatives, config.seed, typo_rate=config.typo_rate
    )
    distil: dict[str, float] = {}
    if config.teacher is not None:
        from rerank.cross_encoder import Reranker

        teacher = Reranker.load(config.teacher, device=device, threads=threads)
        dataset, distil = label_margins(teacher, dataset, config.hard_negatives, log)
        del teacher
        distil["margin_scale"] = round(
            margin_scale(st, dataset, config.hard_negatives, seed=config.seed), 4
        )
        log(
            f"student score: {distil['margin_scale']:.2f} x cosine (the teacher's margin spread "
            "over the starting model's)"
        )
        distil["prep_seconds"] = round(time.perf_counter() - prep_started, 2)
    torch.set_num_threads(threads)

    lora: dict[str, Any] | None = None
    if config.lora_rank:
        lora = adapters.add_lora(
            st, adapters.BI_ENCODER, config.lora_rank, config.lora_scale_alpha, config.lora_dropout
        )
        log(
            f"LoRA rank {lora['rank']} (alpha {lora['alpha']:g}) on {'/'.join(lora['targets'])}: "
            f"{lora['trainable_parameters']:,} of {lora['total_parameters']:,} parameters trained"
        )

    def save(model: SentenceTransformer) -> None:
        if lora is None:
            model.save(str(out), create_model_card=False)
        else:  # the adapter alone, naming its base
            adapters.save_adapter(
                model,
                out,
                adapters.BI_ENCODER,
                adapters.base_name(config.base_model),
                max_seq_length=int(model.max_seq_length),
                rank=lora["rank"],
                alpha=lora["alpha"],
                dropout=lora["dropout"],
                targets=lora["targets"],
            )

    out.mkdir(parents=True, exist_ok=True)
    save(st)  # the starting model (or a zero adapter: the same), until a checkpoint beats it

    evaluator = recall_evaluator(val_data, val_catalog, VAL_K, bf16=config.bf16)
    trainer, track, budget, early = trainkit.build_trainer(
        trainer_cls,
        args_cls,
        model=st,
        dataset=dataset,
        loss=_margin_mse()(
            st, similarity_fct=functools.partial(scaled_dot, scale=distil["margin_scale"])
        )
        if distil
        else mnrl_cls(st, scale=MNRL_SCALE),
        evaluator=evaluator,
        out=out,
        config=config,
        metric=METRIC,
        kind="retriever",
        # mining and labelling for a teacher are not training: the budget starts after them
        started=started + distil.get("prep_seconds", 0.0),
        log=log,
        progress=progress,
        # MarginMSE compares a query with its own rows only: duplicates in a batch are harmless
        batch_sampler=samplers.BATCH_SAMPLER if distil else samplers.NO_DUPLICATES,
        **_column_settings(st, [c for c in dataset.column_names if c != "label"]),
    )
    log(
        f"{config.epochs} epoch(s) of {len(dataset)} pairs in batches of {config.batch_size}"
        f"{f' + {config.hard_negatives} hard negatives each' if config.hard_negatives else ''}"
        f"{', MarginMSE to the teacher' if distil else ', MNRL'}, "
        f"lr {config.lr}, warm-up {config.warmup_ratio:.0%} of the steps"
    )
    if lora is not None:
        adapters.restore_best_checkpoint(trainer, st)
    fields = trainkit.run(trainer, out=out, track=track, budget=budget, early=early)
    if fields["best_step"]:
        save(trainer.model)
    else:
        log(
            f"training never beat the baseline validation {METRIC} "
            f"({fields['baseline_metric']:.4f}): {out} holds the starting model unchanged"
        )
    train_only = fields["train_seconds"] - evaluator.seconds
    report = TrainReport(
        model="retriever",
        metric=METRIC,
        out_dir=str(out),
        wall_seconds=round(time.perf_counter() - started, 2),
        details={
            "validation": {
                "description": val_desc,
                "queries": len(val_qids),
                "catalog": len(val_catalog) if val_catalog is not None else len(data.texts),
                "whole_catalog": val_catalog is None,
            },
            "train_pairs": len(pairs),
            "train_queries": len({q for q, _ in pairs}),
            "hard_negatives": config.hard_negatives,
            "negatives_from": config.negatives_index or ("base model" if hard else None),
            "loss": "MarginMSE" if distil else "MNRL",
            "teacher": config.teacher,
            **distil,
            "eval_seconds": round(evaluator.seconds, 2),
            "base_model_path": str(base_path),
            "lora": None
            if lora is None
            else {**lora, "adapter_bytes": adapters.adapter_bytes(out)},
        },
        **{
            **fields,
            "pairs_per_s": round(fields["pairs_trained"] / train_only, 1)
            if train_only > 0
            else 0.0,
        },
    )
    trainkit.write_report(report, config)
    log(
        f"done: {report.steps} steps, {report.pairs_trained} pairs at {report.pairs_per_s:.1f} "
        f"pairs/s; best validation {METRIC} {report.best_metric:.4f} at step {report.best_step} "
        f"(baseline {report.baseline_metric:.4f}); stopped by {report.stopped_by}; model in {out}"
    )
    return report

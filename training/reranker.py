"""Fine-tune the cross-encoder on graded (query, product) judgments.

A standard sentence-transformers ``CrossEncoder`` (``num_labels=1``, initialised from the
packaged MiniLM weights or ``base_model``, with a new head and ``classifier_dropout``), trained
by ``CrossEncoderTrainer`` with ``BinaryCrossEntropyLoss`` on pairs, per train query:

* every judged product, with the soft label ``(grade - gain_offset) / (max_grade - gain_offset)``
  clipped to [0, 1] (``max_grade`` is the highest train grade; Home Depot grades 1..3 -> 0, 0.5, 1),
  the same gains NDCG uses, scaled to a probability target;
* ``negatives_per_query`` unjudged products, label 0, drawn (once, seeded) from the query's
  stage-1 candidates (``candidates[qid]``, the caller's retrieval results) when given, else from
  the whole catalog (random negatives are easy; retrieval negatives teach more).

The trainer owns AdamW with weight decay, warm-up then linear decay, clipping and bf16 on CUDA.
Validation NDCG@10 (:func:`ndcg_evaluator`, on ``evaluation.metrics``) reranks, per validation
query, ``candidates[qid][:val_depth]`` (or, without candidates, its judged products plus random
ones up to ``val_depth``); it is measured before training (a baseline with a random head, only
recorded), then each epoch (or every ``eval_every`` steps); training stops after ``patience``
validations without a better one and the best checkpoint is what ``out_dir`` keeps: a folder
that ``CrossEncoder(out_dir)`` loads, with ``shopsearch_rerank.json`` (the blend weight,
``rerank.cross_encoder.write_settings``) beside it. With ``lora_rank`` only a LoRA adapter on the
attention projections and the new head are trained, and ``out_dir`` holds the adapter folder
(:mod:`inference.adapters`; ``Reranker.load(out_dir)`` opens base + adapter). Seeding, the time budget, the report and the logs
are :mod:`training.common`'s, shared with the retriever.

Distillation (``teacher=``, a trained reranker folder): the same pairs, but each target is the
teacher's logit for the pair (scored once, before training; fp32 on a CPU, bf16 autocast on CUDA
as the teacher serves) and the loss is sentence-transformers' ``MSELoss`` on the student's
logits: the pointwise variant of Hofstätter et al., "Improving Efficient Neural Ranking Models
with Cross-Architecture Knowledge Distillation", 2020 (arXiv 2010.02666), after Hinton et al.,
"Distilling the Knowledge in a Neural Network", 2015. Negatives get the teacher's score, not 0,
so more of them per query cost only teacher time. Validation still ranks by the grades; the
student is saved with the default blend weight, for ``shopsearch bench`` to choose (the blend
standardises scores per query, so the teacher's weight says nothing about the student's). The
time budget counts the teacher's scoring too.

Needs the ``train`` extra (``datasets``, ``accelerate``); imported only when training.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import evaluate, mean_scores
from inference import adapters
from rerank.blend import DEFAULT_RETRIEVAL_WEIGHT
from rerank.cross_encoder import Reranker, check_reranker_folder, new_cross_encoder, write_settings
from training import common as trainkit
from training.common import TrainReport, check_out_dir, seed_everything
from training.config import RerankerTrainConfig
from training.noise import TypoNoise

__all__ = [
    "RerankerTrainConfig",
    "TrainPair",
    "TrainReport",
    "check_config",
    "judged_pairs",
    "ndcg_evaluator",
    "negative_pairs",
    "seed_everything",
    "select_train_queries",
    "train_reranker",
    "validation_lists",
    "validation_ndcg",
]

#: Fewer judged train pairs than this is not worth a training run.
MIN_TRAIN_PAIRS = 16
METRIC = "ndcg@10"


def check_config(config: RerankerTrainConfig) -> None:
    """Raises ShopsearchError on an option out of range, or a teacher that is no reranker."""
    config.check()
    if config.teacher is not None:
        check_reranker_folder(config.teacher)  # one line: no model there, or an old folder


@dataclass(frozen=True)
class TrainPair:
    """One training example: a query, a product and a target in [0, 1]."""

    query_id: str
    product_id: str
    label: float


def soft_label(grade: float, gain_offset: float, max_grade: float) -> float:
    """``(grade - gain_offset) / (max_grade - gain_offset)`` clipped to [0, 1]."""
    return min(max((grade - gain_offset) / (max_grade - gain_offset), 0.0), 1.0)


def select_train_queries(data: Judgments, config: RerankerTrainConfig) -> list[str]:
    """Train query ids with text and at least one judged product in the catalog (seeded subset)."""
    queries = data.queries.get("train", {})
    qrels = data.qrels.get("train", {})
    ids = sorted(
        qid
        for qid, judged in qrels.items()
        if qid in queries and any(p in data.texts for p in judged)
    )
    if config.train_fraction < 1.0 and ids:
        keep = max(1, round(len(ids) * config.train_fraction))
        ids = sorted(random.Random(config.seed).sample(ids, keep))
    if config.max_queries is not None and len(ids) > config.max_queries:
        ids = sorted(random.Random(config.seed + 1).sample(ids, config.max_queries))
    return ids


def judged_pairs(
    data: Judgments, query_ids: Sequence[str], split: str = "train"
) -> list[TrainPair]:
    """Every judged (query, product) pair of these queries, with its soft label.

    Raises:
        ShopsearchError: No grade above ``gain_offset`` (nothing to learn).
    """
    qrels = data.qrels.get(split, {})
    grades = [g for judged in qrels.values() for g in judged.values()]
    max_grade = max(grades, default=data.gain_offset)
    if max_grade <= data.gain_offset:
        raise ShopsearchError(
            f"no {split} grade above the gain offset {data.gain_offset}: every judged pair would "
            "have label 0, nothing to learn from"
        )
    return [
        TrainPair(qid, pid, soft_label(float(grade), data.gain_offset, max_grade))
        for qid in query_ids
        for pid, grade in sorted(qrels.get(qid, {}).items())
        if pid in data.texts
    ]


def _random_unjudged(
    all_pids: Sequence[str], exclude: set[str], k: int, rng: random.Random
) -> list[str]:
    """Up to ``k`` distinct random products outside ``exclude``."""
    room = len(all_pids) - len(exclude)
    k = min(k, max(room, 0))
    chosen: list[str] = []
    seen = set(exclude)
    tries = 0
    while len(chosen) < k and tries < 50 * k + 100:
        tries += 1
        pid = all_pids[rng.randrange(len(all_pids))]
        if pid not in seen:
            seen.add(pid)
            chosen.append(pid)
    return chosen


def negative_pairs(
    data: Judgments,
    query_ids: Sequence[str],
    candidates: Mapping[str, Sequence[str]] | None,
    k: int,
    rng: random.Random,
    split: str = "train",
    all_pids: Sequence[str] | None = None,
) -> tuple[list[TrainPair], int]:
    """``k`` unjudged products per query, label 0, never a product judged for that query.

    Drawn uniformly from ``candidates[qid]`` when given; a query without (enough) unjudged
    candidates is topped up with random catalog products.

    Returns:
        The pairs and the number of them that came from the random top-up.
    """
    if all_pids is None:
        all_pids = sorted(data.texts)
    qrels = data.qrels.get(split, {})
    pairs: list[TrainPair] = []
    topped_up = 0
    for qid in query_ids:
        judged = set(qrels.get(qid, {}))
        chosen: list[str] = []
        if candidates is not None:
            pool = list(
                dict.fromkeys(
                    p for p in candidates.get(qid, ()) if p not in judged and p in data.texts
                )
            )
            chosen = rng.sample(pool, min(k, len(pool)))
        if len(chosen) < k:
            extra = _random_unjudged(all_pids, judged | set(chosen), k - len(chosen), rng)
            topped_up += len(extra)
            chosen += extra
        pairs.extend(TrainPair(qid, pid, 0.0) for pid in chosen)
    return pairs, topped_up


def validation_lists(
    data: Judgments,
    config: RerankerTrainConfig,
    candidates: Mapping[str, Sequence[str]] | None,
    rng: random.Random,
    all_pids: Sequence[str],
) -> tuple[dict[str, list[str]], int]:
    """Per validation query, the product ids to rerank; and how many came from ``candidates``."""
    queries = data.queries.get("validation", {})
    qrels = data.qrels.get("validation", {})
    ids = sorted(
        qid
        for qid, judged in qrels.items()
        if qid in queries and any(g >= data.threshold for g in judged.values())
    )
    if len(ids) > config.val_queries:
        ids = sorted(random.Random(config.seed + 2).sample(ids, config.val_queries))
    lists: dict[str, list[str]] = {}
    from_candidates = 0
    for qid in ids:
        if candidates is not None and qid in candidates:
            pids = [p for p in dict.fromkeys(candidates[qid]) if p in data.texts][
                : config.val_depth
            ]
            from_candidates += 1
        else:
            pids = [p for p in sorted(qrels[qid]) if p in data.texts][: config.val_depth]
            pids += _random_unjudged(all_pids, set(qrels[qid]), config.val_depth - len(pids), rng)
        if pids:
            lists[qid] = pids
    return lists, from_candidates


def validation_ndcg(
    scorer: Reranker | Any, data: Judgments, lists: Mapping[str, Sequence[str]]
) -> float:
    """Mean NDCG@10 of reranking each validation list (scored only over these queries).

    Args:
        scorer: A :class:`Reranker`, or a ``CrossEncoder`` (scored through a Reranker).
        data: The judgments.
        lists: Per validation query, the product ids to rerank.
    """
    if not isinstance(scorer, Reranker):
        scorer = Reranker(scorer, device=str(scorer.device), retrieval_weight=0.0)
    queries = data.queries["validation"]
    pairs = [(queries[qid], data.texts[pid]) for qid, pids in lists.items() for pid in pids]
    scores = scorer.score_pairs(pairs)
    run: dict[str, dict[str, float]] = {}
    i = 0
    for qid, pids in lists.items():
        run[qid] = {pid: float(s) for pid, s in zip(pids, scores[i : i + len(pids)], strict=True)}
        i += len(pids)
    qrels = {qid: data.qrels["validation"][qid] for qid in lists}
    per_query = evaluate(
        qrels, run, metrics=(METRIC,), threshold=data.threshold, gain_offset=data.gain_offset
    )
    return float(mean_scores(per_query)[METRIC])


def ndcg_evaluator(
    data: Judgments, lists: Mapping[str, Sequence[str]], batch_size: int = 64
) -> Any:
    """A sentence-transformers evaluator of validation NDCG@10 (see :func:`validation_ndcg`).

    Returns ``{"ndcg@10": value}``; ``primary_metric`` is that key, higher is better. Keeps the
    seconds it has spent in ``.seconds``.
    """
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    except ImportError:  # pragma: no cover - older releases
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator

    class NDCGEvaluator(BaseEvaluator):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = METRIC
            self.greater_is_better = True
            self.seconds = 0.0

        def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
            t0 = time.perf_counter()
            scorer = Reranker(
                model, device=str(model.device), batch_size=batch_size, retrieval_weight=0.0
            )
            value = validation_ndcg(scorer, data, lists)
            self.seconds += time.perf_counter() - t0
            return {METRIC: value}

    return NDCGEvaluator()


def training_dataset(
    data: Judgments, pairs: Sequence[TrainPair], seed: int, typo_rate: float = 0.0
) -> Any:
    """A shuffled ``datasets.Dataset`` with ``query``, ``text`` and ``label`` columns.

    With ``typo_rate`` > 0 each query gets typos (:class:`training.noise.TypoNoise`, seeded
    by ``seed`` and the row), so the cross-encoder learns to read misspelled queries.
    """
    from datasets import Dataset

    rows = list(pairs)
    random.Random(seed).shuffle(rows)
    queries = data.queries["train"]
    noise = TypoNoise(typo_rate, seed)
    return Dataset.from_dict(
        {
            "query": [
                noise(queries[p.query_id], i) if typo_rate else queries[p.query_id]
                for i, p in enumerate(rows)
            ],
            "text": [data.texts[p.product_id] for p in rows],
            "label": [float(p.label) for p in rows],
        }
    )


def teacher_labels(
    dataset: Any, teacher: str, device: str | None, log: Callable[[str], None] = print
) -> tuple[Any, float]:
    """``dataset`` with each ``label`` replaced by the teacher's logit for its (query, text).

    The teacher (a reranker folder) scores on torch with its saved ``max_length`` (fp32 on a
    CPU, bf16 autocast on CUDA); the queries are the dataset's own (typos included).

    Returns:
        The relabelled dataset and the seconds the teacher took.
    """
    import torch

    t0 = time.perf_counter()
    scorer = Reranker.load(
        teacher, device=device, retrieval_weight=0.0, threads=torch.get_num_threads()
    )
    pairs = list(zip(dataset["query"], dataset["text"], strict=True))
    logits = scorer.score_pairs(pairs)
    seconds = time.perf_counter() - t0
    log(
        f"rerank train: teacher {teacher} scored {len(pairs)} pairs in {seconds:.0f} s "
        f"(logits mean {float(logits.mean()):.2f}, std {float(logits.std()):.2f})"
    )
    del scorer
    return dataset.remove_columns("label").add_column("label", [float(x) for x in logits]), seconds


def train_reranker(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    candidates: Mapping[str, Sequence[str]] | None = None,
    config: RerankerTrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """Fine-tunes a cross-encoder and keeps the checkpoint with the best validation NDCG@10.

    Args:
        data: Judgments with ``train`` and ``validation`` splits.
        out_dir: New (or empty) folder for the model (a ``CrossEncoder`` folder with
            ``shopsearch_rerank.json``), ``logs/`` (TensorBoard) and ``train_report.json``.
        candidates: Stage-1 results, ``{query_id: [product_id, ...]}`` best first, for train
            queries (negatives) and validation queries (lists to rerank). None: random products.
        config: Options; None uses the defaults.
        progress: Show the trainer's progress bar.
        log: Where progress lines go.

    Raises:
        ShopsearchError: ``out_dir`` not empty, too few train pairs, no validation query, an
            option out of range, or the ``train`` extra missing.
    """
    started = time.perf_counter()
    cfg = config or RerankerTrainConfig()
    check_config(cfg)
    out = Path(out_dir).expanduser()
    check_out_dir(out, "reranker")
    trainkit.require_train_extra()
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MSELoss

    trainkit.quiet_libraries()
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    all_pids = sorted(data.texts)

    train_ids = select_train_queries(data, cfg)
    positives = judged_pairs(data, train_ids)
    if len(positives) < MIN_TRAIN_PAIRS:
        raise ShopsearchError(
            f"only {len(positives)} judged train pairs with a product text (need at least "
            f"{MIN_TRAIN_PAIRS}): check the train split, train_fraction and max_queries"
        )
    if not any(p.label > 0 for p in positives):
        raise ShopsearchError("every judged train pair has label 0: nothing to learn from")
    val_lists, val_from_candidates = validation_lists(data, cfg, candidates, rng, all_pids)
    if not val_lists:
        raise ShopsearchError(
            "no validation query with a relevant product (grade >= threshold): the validation "
            "split is needed for early stopping"
        )
    negatives_source = "retrieval" if candidates is not None else "random"
    negatives, topped_up = negative_pairs(
        data, train_ids, candidates, cfg.negatives_per_query, rng, all_pids=all_pids
    )
    log(
        f"rerank train: {len(train_ids)} queries, {len(positives)} judged pairs "
        f"+ {len(negatives)} {negatives_source} negatives; "
        f"{len(val_lists)} validation queries ({val_from_candidates} from candidates)"
    )
    if candidates is None:
        log(
            "rerank train: no candidates given, negatives are random catalog products; "
            "stage-1 retrieval results make harder, better negatives"
        )
    elif topped_up:
        log(
            f"rerank train: {topped_up} of {len(negatives)} negatives are random products "
            "(queries without enough unjudged candidates)"
        )
    dataset = training_dataset(data, positives + negatives, cfg.seed, typo_rate=cfg.typo_rate)
    teacher_seconds = 0.0
    if cfg.teacher is not None:
        dataset, teacher_seconds = teacher_labels(dataset, cfg.teacher, cfg.device, log)

    model = new_cross_encoder(
        cfg.base_model,
        dropout=cfg.dropout,
        max_length=cfg.max_length,
        device=cfg.device,
        layers=cfg.layers,
    )
    lora: dict[str, Any] | None = None
    if cfg.lora_rank:
        lora = adapters.add_lora(
            model, adapters.CROSS_ENCODER, cfg.lora_rank, cfg.lora_scale_alpha, cfg.lora_dropout
        )
        log(
            f"rerank train: LoRA rank {lora['rank']} (alpha {lora['alpha']:g}) on "
            f"{'/'.join(lora['targets'])} + the scoring head: {lora['trainable_parameters']:,} of "
            f"{lora['total_parameters']:,} parameters trained"
        )
    evaluator = ndcg_evaluator(data, val_lists, batch_size=max(64, 2 * cfg.batch_size))
    out.mkdir(parents=True, exist_ok=True)
    # the baseline (a random head) is only recorded: the first trained checkpoint is kept
    trainer, track, budget, early = trainkit.build_trainer(
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        model=model,
        dataset=dataset,
        loss=MSELoss(model) if cfg.teacher is not None else BinaryCrossEntropyLoss(model),
        evaluator=evaluator,
        out=out,
        config=cfg,
        metric=METRIC,
        kind="rerank train",
        started=started,
        log=log,
        progress=progress,
        baseline_is_bar=False,
    )
    if lora is not None:
        adapters.restore_best_checkpoint(trainer, model)
    fields = trainkit.run(trainer, out=out, track=track, budget=budget, early=early)
    best = trainer.model
    if lora is None:
        best.save_pretrained(str(out))
    else:  # the adapter and head alone, naming the base and how to rebuild it
        lora["adapter_bytes"] = adapters.save_adapter(
            best,
            out,
            adapters.CROSS_ENCODER,
            adapters.base_name(cfg.base_model),
            classifier_dropout=cfg.dropout,
            max_length=cfg.max_length,
            layers=cfg.layers,
            rank=lora["rank"],
            alpha=lora["alpha"],
            dropout=lora["dropout"],
            targets=lora["targets"],
        )
    training: dict[str, Any] = {
        "best_step": fields["best_step"],
        f"val_{METRIC}": fields["best_metric"],
    }
    if cfg.teacher is not None:
        training["teacher"] = str(cfg.teacher)
    write_settings(
        out,
        retrieval_weight=DEFAULT_RETRIEVAL_WEIGHT,
        max_length=cfg.max_length,
        base_model=cfg.base_model or "all-MiniLM-L6-v2",
        training=training,
    )
    train_only = fields["train_seconds"] - evaluator.seconds
    report = TrainReport(
        model="reranker",
        metric=METRIC,
        out_dir=str(out),
        wall_seconds=round(time.perf_counter() - started, 2),
        details={
            "train_queries": len(train_ids),
            "judged_pairs": len(positives),
            "negative_pairs": len(negatives),
            "negatives": negatives_source,
            "val_queries": len(val_lists),
            "val_from_candidates": val_from_candidates,
            "eval_seconds": round(evaluator.seconds, 2),
            "labels": "teacher" if cfg.teacher is not None else "grades",
            "teacher": cfg.teacher,
            "teacher_seconds": round(teacher_seconds, 2),
            "lora": lora,
        },
        **{
            **fields,
            "pairs_per_s": round(fields["pairs_trained"] / train_only, 1)
            if train_only > 0
            else 0.0,
        },
    )
    trainkit.write_report(report, cfg)
    log(
        f"rerank train: best {METRIC} {report.best_metric:.4f} at step {report.best_step} "
        f"(baseline {report.baseline_metric:.4f}), {report.steps} steps, {report.pairs_trained} "
        f"pairs at {report.pairs_per_s} pairs/s, stopped by {report.stopped_by}; saved to {out}"
    )
    return report

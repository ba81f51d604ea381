"""Fine-tune the cross-encoder on graded (query, product) judgments.

Training pairs, per train query:

* every judged product, with the soft label ``(grade - gain_offset) / (max_grade - gain_offset)``
  clipped to [0, 1] (``max_grade`` is the highest train grade; Home Depot grades 1..3 -> 0, 0.5, 1),
  the same gains NDCG uses, scaled to a probability target;
* ``negatives_per_query`` unjudged products, label 0, drawn afresh each epoch from the query's
  stage-1 candidates (``candidates[qid]``, the caller's retrieval results) when given, else from
  the whole catalog (random negatives are easy; retrieval negatives teach more).

Loss ``BCEWithLogitsLoss``; AdamW (no weight decay on biases and LayerNorm weights), linear
warm-up then linear decay, gradient clipping at 1.0. Validation NDCG@10 reranks, per validation
query, ``candidates[qid][:val_depth]`` (or, without candidates, its judged products plus random
ones up to ``val_depth``) and is measured before training (a baseline with a random head, only
recorded), every ``eval_every`` steps and at each epoch end; the best checkpoint is kept in
``out_dir`` and training stops after ``patience`` evaluations without improvement.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalog.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import evaluate, mean_scores
from rerank.model import CrossEncoderModel
from rerank.reranker import Reranker
from retrieval.encoder import pick_device
from retrieval.train import check_out_dir

#: Fewer judged train pairs than this is not worth a training run.
MIN_TRAIN_PAIRS = 16
METRIC = "ndcg@10"
REPORT_NAME = "train_report.json"
LOG_DIR = "logs"


@dataclass(frozen=True)
class RerankerTrainConfig:
    """Options of :func:`train_reranker`.

    Attributes:
        base_model: HF or sentence-transformers folder to start from (None: packaged MiniLM).
        epochs: Passes over the train pairs.
        batch_size: Pairs per optimiser step.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (not on biases / LayerNorm weights).
        warmup_ratio: Share of all steps spent warming up linearly from 0.
        dropout: Head dropout (the encoder keeps its own).
        max_length: Token budget per (query, product) pair.
        negatives_per_query: Unjudged products per train query per epoch, label 0.
        max_queries: Cap on train queries (a seeded sample); None keeps all.
        train_fraction: Seeded share of train queries to use (before ``max_queries``).
        eval_every: Validate every this many steps as well as at each epoch end; None: epochs only.
        val_queries: Validation queries used (a seeded sample of those with a relevant product).
        patience: Stop after this many evaluations without a better NDCG@10.
        seed: Seeds Python, NumPy and torch.
        device: Torch device; None picks CUDA when present.
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        time_budget_s: Stop training after this many seconds (the final evaluation may run past).
        pooling: ``"cls"`` or ``"mean"`` pooling before the head.
        val_depth: Candidates reranked per validation query.
    """

    base_model: str | None = None
    epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    dropout: float = 0.1
    max_length: int = 96
    negatives_per_query: int = 4
    max_queries: int | None = None
    train_fraction: float = 1.0
    eval_every: int | None = None
    val_queries: int = 300
    patience: int = 2
    seed: int = 0
    device: str | None = None
    bf16: bool = True
    time_budget_s: float | None = None
    pooling: str = "cls"
    val_depth: int = 50

    def check(self) -> None:
        """Raises ShopsearchError on an option out of range."""
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.train_fraction <= 1.0:
            problems.append(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.negatives_per_query < 0:
            problems.append(f"negatives_per_query must be >= 0, got {self.negatives_per_query}")
        if self.max_queries is not None and self.max_queries < 1:
            problems.append(f"max_queries must be >= 1 or None, got {self.max_queries}")
        if self.eval_every is not None and self.eval_every < 1:
            problems.append(f"eval_every must be >= 1 or None, got {self.eval_every}")
        if self.val_queries < 1 or self.val_depth < 1 or self.patience < 1:
            problems.append("val_queries, val_depth and patience must be >= 1")
        if self.max_length < 8:
            problems.append(f"max_length must be >= 8, got {self.max_length}")
        if self.pooling not in ("cls", "mean"):
            problems.append(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if problems:
            raise ShopsearchError("bad reranker training options: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainPair:
    """One training example: a query, a product and a target in [0, 1]."""

    query_id: str
    product_id: str
    label: float


@dataclass(frozen=True)
class TrainReport:
    """What a training run did.

    Attributes:
        best_step: Optimiser step of the saved checkpoint.
        best_metric: Its validation NDCG@10.
        baseline_metric: Validation NDCG@10 before training (random head: only a reference).
        steps: Optimiser steps taken.
        pairs_seen: Training pairs fed (with repeats over epochs).
        seconds: Wall time of the whole run.
        pairs_per_s: Training throughput (training time only, evaluations excluded).
        history: One dict per evaluation: step, epoch, ndcg@10, train_loss, seconds.
        stopped_early: True when patience ran out.
        stop_reason: ``"completed"``, ``"early_stopping"`` or ``"time_budget"``.
        out_dir: Folder of the saved model, logs and report.
        train_queries: Train queries used.
        judged_pairs: Judged train pairs (positives and graded ones).
        val_queries: Validation queries used.
        negatives: ``"retrieval"`` or ``"random"`` (where train negatives came from).
    """

    best_step: int
    best_metric: float
    baseline_metric: float
    steps: int
    pairs_seen: int
    seconds: float
    pairs_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    stop_reason: str = "completed"
    out_dir: str = ""
    train_queries: int = 0
    judged_pairs: int = 0
    val_queries: int = 0
    negatives: str = "random"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def validation_ndcg(scorer: Reranker, data: Judgments, lists: Mapping[str, Sequence[str]]) -> float:
    """Mean NDCG@10 of reranking each validation list (scored only over these queries)."""
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


def _optimizer(model: torch.nn.Module, config: RerankerTrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name:
            no_decay.append(param)  # biases and LayerNorm weights
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def _linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_best(model: CrossEncoderModel, out: Path, extra: dict[str, Any]) -> None:
    """Saves into a scratch folder, then moves the files into ``out`` (no half-written model)."""
    tmp = out / ".best.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp, extra=extra)
    for item in tmp.iterdir():
        os.replace(item, out / item.name)
    tmp.rmdir()


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
        out_dir: New (or empty) folder for the model, ``logs/`` (TensorBoard) and
            ``train_report.json``.
        candidates: Stage-1 results, ``{query_id: [product_id, ...]}`` best first, for train
            queries (negatives) and validation queries (lists to rerank). None: random products.
        config: Options; None uses the defaults.
        progress: Show a tqdm bar.
        log: Where progress lines go.

    Raises:
        ShopsearchError: ``out_dir`` not empty, too few train pairs, no validation query, or an
            option out of range.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    cfg = config or RerankerTrainConfig()
    cfg.check()
    out = Path(out_dir)
    check_out_dir(out, "reranker")
    started = time.perf_counter()
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
    log(
        f"rerank train: {len(train_ids)} queries, {len(positives)} judged pairs "
        f"+ {cfg.negatives_per_query} {negatives_source} negatives per query per epoch; "
        f"{len(val_lists)} validation queries ({val_from_candidates} from candidates)"
    )
    if candidates is None:
        log(
            "rerank train: no candidates given, negatives are random catalog products; "
            "stage-1 retrieval results make harder, better negatives"
        )

    device = pick_device(cfg.device)
    model = CrossEncoderModel.from_pretrained(
        cfg.base_model,
        dropout=cfg.dropout,
        pooling=cfg.pooling,
        max_length=cfg.max_length,  # type: ignore[arg-type]
    )
    scorer = Reranker(model, device=device, batch_size=max(64, 2 * cfg.batch_size))
    amp = cfg.bf16 and device.startswith("cuda")

    pairs_per_epoch = len(positives) + cfg.negatives_per_query * len(train_ids)
    steps_per_epoch = math.ceil(pairs_per_epoch / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = _optimizer(model, cfg)
    scheduler = _linear_schedule(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out / LOG_DIR))
    history: list[dict[str, Any]] = []
    state = {"best": -math.inf, "best_step": -1, "bad": 0, "last_eval": -1}
    step = pairs_seen = 0
    train_seconds = 0.0
    loss_sum, loss_n = 0.0, 0

    def run_eval(epoch: int) -> bool:
        """Validates, keeps the best checkpoint; True when patience has run out."""
        nonlocal loss_sum, loss_n
        model.eval()
        metric = validation_ndcg(scorer, data, val_lists)
        model.train()
        train_loss = loss_sum / loss_n if loss_n else None
        loss_sum, loss_n = 0.0, 0
        history.append(
            {
                "step": step,
                "epoch": epoch,
                METRIC: metric,
                "train_loss": train_loss,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        writer.add_scalar(f"val/{METRIC}", metric, step)
        state["last_eval"] = step
        if step == 0:
            log(f"rerank train: baseline (untrained head) {METRIC} {metric:.4f}")
            return False
        loss_text = f", train loss {train_loss:.4f}" if train_loss is not None else ""
        if metric > state["best"]:
            state.update(best=metric, best_step=step, bad=0)
            _save_best(model, out, {"training": {"best_step": step, f"val_{METRIC}": metric}})
            log(f"rerank train: step {step} {METRIC} {metric:.4f}{loss_text} (best, saved)")
        else:
            state["bad"] += 1
            log(
                f"rerank train: step {step} {METRIC} {metric:.4f}{loss_text} "
                f"(best {state['best']:.4f} at step {state['best_step']})"
            )
        return state["bad"] >= cfg.patience

    run_eval(epoch=0)
    baseline_metric = history[0][METRIC]

    stop_reason = "completed"
    bar = tqdm(total=total_steps, desc="rerank train", unit="step", disable=not progress)
    model.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            negatives, topped_up = negative_pairs(
                data, train_ids, candidates, cfg.negatives_per_query, rng, all_pids=all_pids
            )
            if epoch == 1 and candidates is not None and topped_up:
                log(
                    f"rerank train: {topped_up} of {len(negatives)} negatives are random products "
                    "(queries without enough unjudged candidates)"
                )
            examples = positives + negatives
            rng.shuffle(examples)
            for start in range(0, len(examples), cfg.batch_size):
                tick = time.perf_counter()
                batch = examples[start : start + cfg.batch_size]
                queries = [data.queries["train"][p.query_id] for p in batch]
                texts = [data.texts[p.product_id] for p in batch]
                enc = model.tokenize(queries, texts, cfg.max_length)
                enc = {k: v.to(device) for k, v in enc.items()}
                labels = torch.tensor([p.label for p in batch], dtype=torch.float32, device=device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    logits = model(**enc)
                loss = loss_fn(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                pairs_seen += len(batch)
                value = float(loss.detach())
                loss_sum += value
                loss_n += 1
                train_seconds += time.perf_counter() - tick
                writer.add_scalar("train/loss", value, step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                if cfg.eval_every and step % cfg.eval_every == 0 and run_eval(epoch):
                    stop_reason = "early_stopping"
                    break
                if (
                    cfg.time_budget_s is not None
                    and time.perf_counter() - started > cfg.time_budget_s
                ):
                    stop_reason = "time_budget"
                    log(
                        f"rerank train: time budget of {cfg.time_budget_s:.0f}s reached at step {step}"
                    )
                    break
            if stop_reason == "early_stopping":
                break
            exhausted = state["last_eval"] != step and run_eval(epoch)
            if stop_reason != "completed":
                break
            if exhausted and epoch < cfg.epochs:
                stop_reason = "early_stopping"
                break
    finally:
        bar.close()
        writer.close()

    seconds = time.perf_counter() - started
    report = TrainReport(
        best_step=int(state["best_step"]),
        best_metric=float(state["best"]),
        baseline_metric=float(baseline_metric),
        steps=step,
        pairs_seen=pairs_seen,
        seconds=round(seconds, 2),
        pairs_per_s=round(pairs_seen / train_seconds, 1) if train_seconds > 0 else 0.0,
        history=history,
        stopped_early=stop_reason == "early_stopping",
        stop_reason=stop_reason,
        out_dir=str(out),
        train_queries=len(train_ids),
        judged_pairs=len(positives),
        val_queries=len(val_lists),
        negatives=negatives_source,
    )
    (out / REPORT_NAME).write_text(
        json.dumps({**report.as_dict(), "config": asdict(cfg)}, indent=2) + "\n"
    )
    log(
        f"rerank train: best {METRIC} {report.best_metric:.4f} at step {report.best_step} "
        f"(baseline {report.baseline_metric:.4f}), {step} steps, {report.pairs_per_s} pairs/s, "
        f"{stop_reason}; saved to {out}"
    )
    return report

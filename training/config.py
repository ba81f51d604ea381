"""Every trainer's options, one dataclass each, and their defaults: the one place they are set.

* :class:`TrainConfig` - what both model trainings take (sentence-transformers' trainers:
  epochs, batch, AdamW, warm-up, validation cadence, early stopping, seed, device, time budget,
  typos); :class:`RetrieverTrainConfig` and :class:`RerankerTrainConfig` add their own.
* :class:`PersonalTrainConfig` - the fusion model's training; :class:`LogTrainConfig` - learning
  it from a search log.

Nothing here imports torch, numpy or the trainers: the CLI reads its defaults from these
classes, so ``shopsearch train --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import ShopsearchError
from rerank.defaults import DEFAULT_RERANK_DEPTH

#: Smallest propensity an inverse weight divides by (weights are at most 1 / this).
DEFAULT_CLIP = 0.05


def default(config: type, name: str) -> Any:
    """The default of field ``name`` of a config class (what the CLI shows and passes)."""
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{config.__name__} has no field {name!r} with a default")


@dataclass(frozen=True)
class TrainConfig:
    """What both model trainings (bi-encoder and cross-encoder) take.

    Attributes:
        base_model: Folder to start from; None = the packaged all-MiniLM-L6-v2.
        epochs: Passes over the training pairs.
        batch_size: Pairs per optimiser step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay (the trainer's: not on biases and LayerNorm weights).
        warmup_ratio: Share of the steps with a linear warm-up; then linear decay to 0.
        train_fraction: Keep a seeded fraction of the train queries (with all their pairs).
        eval_every: Steps between validations (and checkpoints); None = once per epoch.
        patience: Stop after this many validations without a better metric.
        seed: Seeds Python, NumPy and torch, the batching and the samples.
        device: "cpu", "cuda", ...; None = CUDA if available.
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        time_budget_s: Stop (after one last validation and checkpoint) once the call has run
            this long (loading, mining or teacher scoring, and validation included).
        typo_rate: Share of query letters given a typo in training (swap, drop or neighbouring
            key; :mod:`training.noise`), seeded with ``seed``; 0 = off.
        lora_rank: Train a LoRA adapter of this rank on the attention projections instead of
            all weights, and save the adapter folder (:mod:`inference.adapters`); None = full
            fine-tuning.
        lora_alpha: LoRA scale numerator (updates scaled by ``alpha / rank``); None = 2 x rank.
        lora_dropout: Dropout on the adapter's input.
    """

    base_model: str | None = None
    epochs: int = 1
    batch_size: int = 32
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    train_fraction: float = 1.0
    eval_every: int | None = None
    patience: int = 2
    seed: int = 0
    device: str | None = None
    bf16: bool = True
    time_budget_s: float | None = None
    typo_rate: float = 0.0
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.1

    #: Smallest batch the training can learn from.
    MIN_BATCH = 1
    #: How the error message names this training.
    WHAT = "training"

    def problems(self) -> list[str]:
        """What is out of range, one message per option (empty when all is well)."""
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < self.MIN_BATCH:
            problems.append(f"batch_size must be >= {self.MIN_BATCH} (got {self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 < self.train_fraction <= 1:
            problems.append(f"train_fraction must be in (0, 1] (got {self.train_fraction})")
        if self.eval_every is not None and self.eval_every < 1:
            problems.append(f"eval_every must be >= 1 or None (got {self.eval_every})")
        if self.patience < 1:
            problems.append(f"patience must be >= 1 (got {self.patience})")
        if not 0.0 <= self.typo_rate <= 0.5:
            problems.append(f"typo_rate must be in [0, 0.5] (got {self.typo_rate})")
        if self.lora_rank is not None and self.lora_rank < 1:
            problems.append(f"lora_rank must be >= 1 or None (got {self.lora_rank})")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            problems.append(f"lora_alpha must be > 0 or None (got {self.lora_alpha})")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        return problems

    @property
    def lora_scale_alpha(self) -> float:
        """The LoRA alpha used: ``lora_alpha``, or 2 x ``lora_rank``."""
        if self.lora_alpha is not None:
            return float(self.lora_alpha)
        return 2.0 * float(self.lora_rank or 0)

    def check(self) -> None:
        """Raises ShopsearchError naming every option out of range."""
        problems = self.problems()
        if problems:
            raise ShopsearchError(f"bad {self.WHAT} options: " + "; ".join(problems))


@dataclass(frozen=True)
class RetrieverTrainConfig(TrainConfig):
    """Options of :func:`training.retriever.train_retriever` (see :class:`TrainConfig`).

    Attributes:
        batch_size: Pairs per step; every other product of the batch is a negative (bigger is
            better).
        max_pairs: Cap on training pairs (a seeded sample); None = all.
        hard_negatives: Per pair, this many products from the base model's top
            ``HARD_NEGATIVE_DEPTH`` for the query, never a judged one, as extra negative columns
            of the loss (drawn once, seeded); 0 = off.
        val_queries: Cap on validation queries (a seeded sample); None = all.
        val_catalog: Validation ranks the products judged for the validation queries plus this
            many random others; None = the whole catalog.
        max_seq_length: Token cap for queries and products, at most the base model's own (the
            saved model keeps it).
        teacher: A cross-encoder folder: distil it instead of learning from in-batch negatives
            (``MarginMSELoss``, Hofstaetter et al. 2020, arXiv:2010.02666): each pair's
            ``hard_negatives`` (>= 1) are labelled with the teacher's logit margins
            ``teacher(q, pos) - teacher(q, neg)`` before training (not counted in the time
            budget); None = in-batch negatives (MNRL).
        negatives_index: Mine the hard negatives from this index's hybrid results (what
            serving retrieves) instead of the base model's dense top; None = the base model.
    """

    batch_size: int = 64
    lr: float = 5e-5
    max_pairs: int | None = None
    hard_negatives: int = 0
    teacher: str | None = None
    negatives_index: str | None = None
    val_queries: int | None = 500
    val_catalog: int | None = 20000
    max_seq_length: int = 64

    MIN_BATCH = 2  # in-batch negatives: a batch of one has none
    WHAT = "training"

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.max_pairs is not None and self.max_pairs < 1:
            problems.append(f"max_pairs must be >= 1 or None (got {self.max_pairs})")
        if self.hard_negatives < 0:
            problems.append(f"hard_negatives must be >= 0 (got {self.hard_negatives})")
        if self.teacher is not None and self.hard_negatives < 1:
            problems.append(
                "a teacher labels margins to hard negatives: give hard_negatives >= 1 "
                "(--hard-negatives N)"
            )
        if self.negatives_index is not None and self.hard_negatives < 1:
            problems.append(
                "negatives_index mines hard negatives: give hard_negatives >= 1 (--hard-negatives N)"
            )
        if self.val_queries is not None and self.val_queries < 1:
            problems.append(f"val_queries must be >= 1 or None (got {self.val_queries})")
        if self.val_catalog is not None and self.val_catalog < 0:
            problems.append(f"val_catalog must be >= 0 or None (got {self.val_catalog})")
        if self.max_seq_length < 8:
            problems.append(f"max_seq_length must be >= 8 (got {self.max_seq_length})")
        return problems


@dataclass(frozen=True)
class RerankerTrainConfig(TrainConfig):
    """Options of :func:`training.reranker.train_reranker` (see :class:`TrainConfig`).

    Attributes:
        dropout: ``classifier_dropout``: dropout before the head (the encoder keeps its own).
        max_length: Token budget per (query, product) pair.
        negatives_per_query: Unjudged products per train query, label 0 (the teacher's score
            when distilling), drawn once, seeded.
        max_queries: Cap on train queries (a seeded sample); None keeps all.
        val_queries: Validation queries used (a seeded sample of those with a relevant product).
        val_depth: Candidates reranked per validation query (what serving reranks).
        layers: Keep only the base's first this many transformer layers (a faster, smaller
            cross-encoder; :func:`rerank.cross_encoder.new_cross_encoder`); None keeps all.
        teacher: A trained reranker folder to distil from: targets are its logits (MSE)
            instead of the graded labels (BCE); None trains on the grades.
    """

    dropout: float = 0.1
    max_length: int = 96
    negatives_per_query: int = 4
    max_queries: int | None = None
    val_queries: int = 300
    val_depth: int = DEFAULT_RERANK_DEPTH
    layers: int | None = None
    teacher: str | None = None

    WHAT = "reranker training"

    def problems(self) -> list[str]:
        problems = super().problems()
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.negatives_per_query < 0:
            problems.append(f"negatives_per_query must be >= 0 (got {self.negatives_per_query})")
        if self.max_queries is not None and self.max_queries < 1:
            problems.append(f"max_queries must be >= 1 or None (got {self.max_queries})")
        if self.layers is not None and self.layers < 1:
            problems.append(f"layers must be >= 1 or None (got {self.layers})")
        if self.val_queries < 1:
            problems.append(f"val_queries must be >= 1 (got {self.val_queries})")
        if self.val_depth < 1:
            problems.append(f"val_depth must be >= 1 (got {self.val_depth})")
        if self.max_length < 8:
            problems.append(f"max_length must be >= 8 (got {self.max_length})")
        return problems


@dataclass(frozen=True)
class PersonalTrainConfig:
    """Options of :func:`training.personal.train_personal` (the fusion model)."""

    hidden: int = 32
    dropout: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 1e-3
    epochs: int = 40
    batch_size: int = 512
    patience: int = 5
    val_fraction: float = 0.15
    seed: int = 0
    #: "bce": pointwise, each example weighted; "listwise": a softmax over each search's list
    #: with the interacted products as targets, each weighted by ``label * weight`` (with
    #: inverse-propensity weights this is the IPW listwise loss of Ai et al., SIGIR 2018).
    loss: str = "bce"
    groups_per_batch: int = 64


@dataclass(frozen=True)
class LogTrainConfig:
    """Options of :func:`training.from_log.train_from_log`.

    Attributes:
        val_days: The log's last days validate (early stopping); the rest trains.
        correct: Correct for position bias (False: the naive model).
        clip: Smallest propensity divided by (inverse weights are at most ``1 / clip``).
        max_rank: Ranks whose examination is estimated (deeper shown products are dropped).
        flush_s: Profiles and popularity are replayed in steps of this many seconds, as a
            live shop would have had them.
        click_evidence: Give the model the log's clicks over expected clicks per (query,
            product) (``query_coec``, ``query_exposure``); False leaves them 0 (an ablation).
        bootstrap: Resamples of the examination curve's bootstrap interval (0: none; see
            :func:`training.from_log.interval_from_lessons`).
        model: Options of the fusion model's training.
    """

    val_days: float = 7.0
    correct: bool = True
    clip: float = DEFAULT_CLIP
    max_rank: int = 10
    flush_s: float = 3600.0
    click_evidence: bool = True
    bootstrap: int = 200
    model: PersonalTrainConfig = field(default_factory=lambda: PersonalTrainConfig(loss="listwise"))

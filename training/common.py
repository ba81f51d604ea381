"""What both trainings share: seeding, the time budget, the report, logs and the trainer's settings.

The retriever (:mod:`training.retriever`) and the reranker (:mod:`training.reranker`) are
trained by sentence-transformers' trainers (``SentenceTransformerTrainer``,
``CrossEncoderTrainer``: the HF ``Trainer`` underneath). The trainer owns the optimiser (AdamW, no decay on biases and LayerNorm
weights), the schedule (linear warm-up, linear decay), gradient clipping, bf16 on CUDA,
checkpoints and loading the best one at the end. This module adds, once for both:

* :func:`seed_everything`;
* :func:`training_arguments`: the one set of trainer settings (evaluate and save per epoch or
  every ``eval_every`` steps, keep the best checkpoint by the validation metric);
* :class:`TimeBudget`: a callback that stops cleanly at ``--max-minutes`` (one last evaluation and
  checkpoint, so the best model is still kept);
* :class:`Tracker`: a callback that counts the pairs trained, records every validation (with the
  baseline before training) and writes the progress lines;
* :class:`BaselineAwareEarlyStopping`: transformers' early stopping, blind to the baseline;
* :func:`run`: trains, with TensorBoard logs in ``OUT/logs`` (when tensorboard is installed),
  removes the checkpoints and returns the :class:`TrainReport` fields;
* :class:`TrainReport` and :func:`write_report` (``OUT/train_report.json``).

Their options share one base, :class:`training.config.TrainConfig` (in a module of its own,
light to import: the CLI shows its defaults).

Nothing here imports ``datasets``/``accelerate`` at module import time: they are the ``train``
extra, and only the trainings need them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback

from core.errors import ShopsearchError

REPORT_NAME = "train_report.json"
LOG_DIR = "logs"
#: Checkpoints live here during training and are removed once the best model is saved.
CHECKPOINT_DIR = "checkpoints"
#: Training steps between loss / learning-rate log lines.
LOG_EVERY = 10


@dataclass(frozen=True)
class TrainReport:
    """What a training run did (both models).

    Attributes:
        model: ``"retriever"`` or ``"reranker"``.
        metric: The validation metric (``"recall@100"``, ``"ndcg@10"``).
        out_dir: Folder of the saved model.
        pairs_trained: Training pairs fed to the model, repeats over epochs included.
        steps: Optimiser steps.
        epochs: Epochs run (a fraction when stopped inside one).
        wall_seconds: Wall time of the whole call (loading, mining, validation included).
        train_seconds: Time in the trainer (training steps and validations).
        pairs_per_s: ``pairs_trained / train_seconds``.
        baseline_metric: Validation metric before training.
        best_metric: Validation metric of the saved model.
        best_step: Step of the saved model (0: training never beat the baseline; the saved
            model is then the starting one).
        best_per_epoch: Best validation metric measured in each epoch run.
        stopped_by: ``"completed"``, ``"early_stopping"`` or ``"time_budget"``.
        history: One dict per validation (step, epoch, metric, train loss, seconds).
        details: Model-specific facts (validation set, train queries, negatives ...).
    """

    model: str
    metric: str
    out_dir: str
    pairs_trained: int
    steps: int
    epochs: float
    wall_seconds: float
    train_seconds: float
    pairs_per_s: float
    baseline_metric: float
    best_metric: float
    best_step: int
    best_per_epoch: tuple[float, ...]
    stopped_by: str
    history: tuple[dict[str, Any], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        """True when the saved model beat the baseline."""
        return self.best_step > 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (non-finite floats as None)."""
        return _jsonable({**asdict(self), "improved": self.improved})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def write_report(report: TrainReport, config: Any = None) -> Path:
    """Writes ``OUT/train_report.json`` (the report, and the config when given)."""
    payload = report.as_dict()
    if config is not None:
        payload["config"] = _jsonable(asdict(config))
    path = Path(report.out_dir) / REPORT_NAME
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (CUDA included): the one seeding function."""
    from transformers import set_seed

    set_seed(seed)


def check_out_dir(out_dir: Path, what: str = "model") -> None:
    """Refuses an output folder that exists and is not empty (training never overwrites)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ShopsearchError(
            f"output folder {out_dir} exists and is not empty: give a new folder for the trained "
            f"{what} (training never overwrites a model)"
        )


def require_train_extra() -> None:
    """Raises ShopsearchError when ``datasets`` or ``accelerate`` (the ``train`` extra) is missing.

    TensorBoard is optional: without it the logs are skipped (see :func:`run`).
    """
    import importlib.util

    missing = [m for m in ("datasets", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ShopsearchError(
            f"training needs {' and '.join(missing)}: pip install -e '.[train]' (or carry their "
            "wheels, see scripts/gpu_train.py)"
        )


def _use_cpu(device: str | None) -> bool:
    import torch

    return device == "cpu" or (device is None and not torch.cuda.is_available())


def training_arguments(
    args_cls: type,
    out: Path,
    *,
    metric: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    eval_every: int | None,
    seed: int,
    device: str | None,
    bf16: bool,
    progress: bool,
    **extra: Any,
) -> Any:
    """The trainer settings both trainings use.

    AdamW (the trainer's: weight decay but not on biases and LayerNorm weights), linear warm-up
    over ``warmup_ratio`` of the steps then linear decay, gradient clipping at 1; validation and a
    checkpoint every epoch (or every ``eval_every`` steps); the best checkpoint by ``metric`` is
    loaded at the end. Checkpoints hold only the model (no optimiser state).

    Args:
        args_cls: ``SentenceTransformerTrainingArguments`` or ``CrossEncoderTrainingArguments``.
        out: The model folder; checkpoints go to ``out/checkpoints``.
        metric: Evaluator metric key (without the ``eval_`` prefix), higher is better.
        device: ``"cpu"`` forces the CPU; None or a CUDA device uses CUDA when present.
        bf16: bfloat16 mixed precision on CUDA (ignored on CPU).
        extra: More arguments for ``args_cls`` (``batch_sampler`` ...).
    """
    import transformers

    strategy = "steps" if eval_every else "epoch"
    cpu = _use_cpu(device)
    if int(transformers.__version__.split(".")[0]) >= 5:
        extra.setdefault("warmup_steps", warmup_ratio)  # a float in [0, 1): a share of all steps
    else:  # pragma: no cover - transformers 4
        extra.setdefault("warmup_ratio", warmup_ratio)
    return args_cls(
        output_dir=str(out / CHECKPOINT_DIR),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=eval_every,
        save_steps=eval_every,
        eval_on_start=True,  # the baseline
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        save_total_limit=1,  # the best (kept by load_best_model_at_end) and the latest
        save_only_model=True,
        logging_steps=LOG_EVERY,
        report_to="none",  # TensorBoard is added by run(), into OUT/logs
        disable_tqdm=not progress,
        seed=seed,
        data_seed=seed,
        use_cpu=cpu,
        bf16=bf16 and not cpu,
        dataloader_pin_memory=not cpu,
        **extra,
    )


class TimeBudget(TrainerCallback):
    """Stops training cleanly once ``seconds`` have passed since ``started``.

    At the step where the budget runs out it asks the trainer for one last evaluation and
    checkpoint, then to stop; the trainer then loads the best checkpoint as usual.
    """

    def __init__(
        self,
        seconds: float | None,
        started: float | None = None,
        log: Callable[[str], Any] | None = None,
    ) -> None:
        self.seconds = seconds
        self.started = started
        self.log = log
        self.fired = False
        self.fired_at = -1

    def on_train_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is None or self.fired:
            return control
        if time.perf_counter() - (self.started or 0.0) >= self.seconds:
            self.fired, self.fired_at = True, state.global_step
            if self.log is not None:
                self.log(
                    f"time budget of {self.seconds:g} s reached at step {state.global_step}: "
                    "one last validation, then stop"
                )
            control.should_training_stop = True
            control.should_evaluate = True
            control.should_save = True
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.fired and state.global_step == self.fired_at:
            control.should_evaluate = False  # already evaluated and saved at this step
            control.should_save = False
        return control


class Tracker(TrainerCallback):
    """Counts pairs, records every validation and writes one progress line per validation.

    With ``baseline_is_bar`` the pre-training evaluation (``eval_on_start``) is the best metric
    to beat, so a checkpoint is kept only when it beats the starting model (the retriever);
    without, the baseline is only recorded (the reranker, whose starting head is random).
    """

    def __init__(
        self, metric: str, log: Callable[[str], Any], kind: str, baseline_is_bar: bool = True
    ) -> None:
        self.baseline_is_bar = baseline_is_bar
        self.metric = metric
        self.key = f"eval_{metric}"
        self.log = log
        self.kind = kind
        self.pairs = 0
        self.history: list[dict[str, Any]] = []
        self.baseline: float | None = None
        self.train_started: float | None = None
        self._loss: float | None = None

    def count(self, n: int) -> None:
        self.pairs += int(n)

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_started = time.perf_counter()
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = float((metrics or {}).get(self.key, float("nan")))
        step = int(state.global_step)
        elapsed = time.perf_counter() - (self.train_started or time.perf_counter())
        entry = {
            "step": step,
            "epoch": round(float(state.epoch or 0.0), 4),
            self.metric: value,
            "pairs_trained": self.pairs,
            "train_loss": self._loss if step else None,
            "seconds": round(elapsed, 2),
        }
        self.history.append(entry)
        if step == 0 and self.baseline is None:
            self.baseline = value
            if self.baseline_is_bar:
                state.best_metric = value  # checkpoints must beat the starting model
            self.log(f"{self.kind}: baseline validation {self.metric} {value:.4f}")
            return control
        best = state.best_metric if state.best_metric is not None else -math.inf
        gain = value > best
        loss = f", train loss {self._loss:.4f}" if self._loss is not None else ""
        self.log(
            f"{self.kind}: step {step} epoch {entry['epoch']:.2f}: validation {self.metric} "
            f"{value:.4f}{loss}" + (" (best)" if gain else f" (best so far {best:.4f})")
        )
        return control

    def best_per_epoch(self) -> tuple[float, ...]:
        """Best validation metric measured within each epoch (the baseline excluded)."""
        best: dict[int, float] = {}
        for h in self.history:
            if h["step"] == 0:
                continue
            epoch = max(1, math.ceil(h["epoch"] - 1e-9))
            best[epoch] = max(best.get(epoch, -math.inf), h[self.metric])
        return tuple(best[e] for e in sorted(best))


class BaselineAwareEarlyStopping(EarlyStoppingCallback):
    """The library's early stopping, blind to the baseline evaluation at step 0."""

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if state.global_step == 0:
            return control
        return super().on_evaluate(args, state, control, metrics, **kwargs)

    @property
    def stopped(self) -> bool:
        return self.early_stopping_patience_counter >= self.early_stopping_patience


def count_pairs(loss: Any, tracker: Any) -> None:
    """Counts the rows of every training batch the loss sees (``tracker.count``)."""

    def hook(module, args, kwargs):
        if not module.training:
            return None
        labels = kwargs.get("labels", args[1] if len(args) > 1 else None)
        if labels is not None and hasattr(labels, "shape") and labels.ndim > 0:
            tracker.count(labels.shape[0])
            return None
        features = kwargs.get("inputs", args[0] if args else None)
        first = next(iter(features), None) if features is not None else None
        if isinstance(first, Mapping) and first:
            tensor = next(iter(first.values()))
            tracker.count(int(tensor.shape[0]))
        return None

    loss.register_forward_pre_hook(hook, with_kwargs=True)


def no_widget_examples(model: Any) -> None:
    """No model-card widget examples (a slow pass over the data with its own progress bar)."""
    card = getattr(model, "model_card_data", None)
    if card is not None and hasattr(card, "generate_widget_examples"):
        card.generate_widget_examples = False


def build_trainer(
    trainer_cls: type,
    args_cls: type,
    *,
    model: Any,
    dataset: Any,
    loss: Any,
    evaluator: Any,
    out: Path,
    config: Any,
    metric: str,
    kind: str,
    started: float,
    log: Callable[[str], Any],
    progress: bool,
    baseline_is_bar: bool = True,
    **arguments: Any,
) -> tuple[Any, Tracker, TimeBudget, BaselineAwareEarlyStopping]:
    """One sentence-transformers trainer with the shared settings and callbacks.

    Args:
        trainer_cls: ``SentenceTransformerTrainer`` or ``CrossEncoderTrainer``.
        args_cls: Its training-arguments class.
        model: The model to train.
        dataset: The training ``datasets.Dataset``.
        loss: The loss (built on ``model``).
        evaluator: The validation evaluator (its metric is ``metric``).
        out: Output folder (checkpoints and logs under it).
        config: A trainer config with ``epochs``, ``batch_size``, ``lr``, ``weight_decay``,
            ``warmup_ratio``, ``eval_every``, ``seed``, ``device``, ``bf16``, ``patience`` and
            ``time_budget_s``.
        metric: The metric early stopping and the best checkpoint follow.
        kind: How progress lines name this training.
        started: ``time.perf_counter()`` when the command started (the time budget's origin).
        log: Progress lines.
        progress: Show the trainer's progress bar.
        baseline_is_bar: Keep a checkpoint only when it beats the starting model.
        arguments: More training arguments (a batch sampler, column settings ...).

    Returns:
        (trainer, tracker, time budget, early stopping), for :func:`run`.
    """
    args = training_arguments(
        args_cls,
        out,
        metric=metric,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        eval_every=config.eval_every,
        seed=config.seed,
        device=config.device,
        bf16=config.bf16,
        progress=progress,
        **arguments,
    )
    track = Tracker(metric, log, kind, baseline_is_bar=baseline_is_bar)
    budget = TimeBudget(config.time_budget_s, started, log)
    early = BaselineAwareEarlyStopping(early_stopping_patience=config.patience)
    count_pairs(loss, track)
    no_widget_examples(model)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[track, budget, early],
    )
    return trainer, track, budget, early


def run(
    trainer: Any,
    *,
    out: Path,
    track: Any,
    budget: Any,
    early: Any,
) -> dict[str, Any]:
    """Trains (TensorBoard in ``out/logs`` when installed), removes the checkpoints.

    Returns:
        ``pairs_trained``, ``steps``, ``epochs``, ``train_seconds``, ``pairs_per_s``,
        ``baseline_metric``, ``best_metric``, ``best_step``, ``best_per_epoch``, ``stopped_by``,
        ``history`` (the model in ``trainer.model`` is the best one, or the last when none beat
        the baseline: then ``best_step`` is 0).
    """
    import importlib.util

    from transformers.trainer_callback import PrinterCallback

    writer = None
    if importlib.util.find_spec("tensorboard") is not None:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        writer = SummaryWriter(log_dir=str(out / LOG_DIR))
        trainer.add_callback(TensorBoardCallback(tb_writer=writer))
    else:
        track.log(f"{track.kind}: tensorboard is not installed: no logs in {out / LOG_DIR}")
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # no raw log dicts on stdout: Tracker logs
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        if writer is not None:
            writer.close()
    train_seconds = time.perf_counter() - t0
    state = trainer.state
    best_step = int(state.best_global_step or 0)
    if best_step and state.best_model_checkpoint is None:
        best_step = 0  # defensive: a best step whose checkpoint was not kept
    baseline = track.baseline if track.baseline is not None else float("nan")
    best = float(state.best_metric) if best_step else baseline
    if budget.fired:
        stopped_by = "time_budget"
    elif early.stopped and state.global_step < state.max_steps:  # not at the last step anyway
        stopped_by = "early_stopping"
    else:
        stopped_by = "completed"
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return {
        "pairs_trained": track.pairs,
        "steps": int(state.global_step),
        "epochs": round(float(state.epoch or 0.0), 4),
        "train_seconds": round(train_seconds, 2),
        "pairs_per_s": round(track.pairs / train_seconds, 1) if train_seconds > 0 else 0.0,
        "baseline_metric": baseline,
        "best_metric": best,
        "best_step": best_step,
        "best_per_epoch": track.best_per_epoch(),
        "stopped_by": stopped_by,
        "history": tuple(track.history),
    }


def quiet_libraries() -> None:
    """No "Loading weights" bars or per-checkpoint chatter from transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover - the train extra is checked before
        pass
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

"""``shopsearch train retriever|reranker|personal``: fit the models on labelled data or logs."""

from __future__ import annotations

from pathlib import Path

import click

from shopsearch.cli.options import (
    device_option,
    index_options,
    profiles_option,
    progress_option,
    stderr_log,
)


def _judgments(data: Path):
    from evaluation.data import judgments_from, load_benchmark

    bench = load_benchmark(data)
    for problem in bench.problems:
        click.echo(f"data: {problem}", err=True)
    return judgments_from(bench)


def trainer_options(lr: float, batch_size: int, min_batch: int, batch_help: str):
    """The options every trainer shares (epochs, batch, AdamW, validation cadence, time
    budget, seed, device, progress), with each model's own defaults."""
    options = [
        click.option(
            "--epochs",
            default=1,
            show_default=True,
            type=click.IntRange(1),
            help="Passes over the training pairs.",
        ),
        click.option(
            "--batch-size",
            default=batch_size,
            show_default=True,
            type=click.IntRange(min_batch),
            help=batch_help,
        ),
        click.option(
            "--lr", default=lr, show_default=True, type=float, help="Peak learning rate (AdamW)."
        ),
        click.option(
            "--weight-decay",
            default=0.01,
            show_default=True,
            type=float,
            help="AdamW weight decay.",
        ),
        click.option(
            "--eval-every",
            default=None,
            type=click.IntRange(1),
            help="Steps between validations (default: each epoch).",
        ),
        click.option(
            "--max-minutes",
            default=None,
            type=click.FloatRange(0.1),
            help="Stop training after this long, keeping the best checkpoint.",
        ),
        click.option(
            "--typo-rate",
            default=0.0,
            show_default=True,
            type=click.FloatRange(0, 0.5),
            help="Train on queries with typos: each letter swapped, dropped or replaced by a "
            "neighbouring key with this probability (seeded; 0: queries as written).",
        ),
        click.option("--seed", default=0, show_default=True, type=int, help="Random seed."),
        device_option,
        progress_option,
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _summary(what: str, metric: str, report, out: Path) -> str:
    """One line: the validation metric before and after, the pairs trained and their rate."""
    return (
        f"{what}: validation {metric} {report.baseline_metric:.4f} -> {report.best_metric:.4f} "
        f"(best at step {report.best_step}); {report.pairs_trained} pairs in "
        f"{report.wall_seconds:.0f} s ({report.pairs_per_s:.1f} pairs/s); saved to {out}"
    )


@click.group("train")
def train_group() -> None:
    """Fine-tune the retriever or reranker on labelled data, or learn personalization from a log."""


@train_group.command("retriever")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--base-model",
    default=None,
    help="Starting bi-encoder folder (default: the packaged all-MiniLM-L6-v2).",
)
@trainer_options(
    lr=5e-5,
    batch_size=64,
    min_batch=2,
    batch_help="Pairs per step (in-batch negatives: larger is better).",
)
@click.option(
    "--hard-negatives",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Mined hard negatives per pair (0: in-batch only).",
)
@click.option(
    "--max-pairs",
    default=None,
    type=click.IntRange(1),
    help="Use at most this many training pairs (a seeded sample).",
)
@click.option(
    "--val-catalog",
    default=20000,
    show_default=True,
    type=click.IntRange(0),
    help="Products ranked in validation besides the judged ones (0: whole catalog).",
)
def train_retriever_cmd(
    data: Path,
    out: Path,
    base_model,
    epochs,
    batch_size,
    lr,
    weight_decay,
    hard_negatives,
    max_pairs,
    val_catalog,
    eval_every,
    max_minutes,
    typo_rate,
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the bi-encoder on DATA's train split (in-batch negatives); best checkpoint to OUT."""
    from training.retriever import RetrieverTrainConfig, train_retriever

    config = RetrieverTrainConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        hard_negatives=hard_negatives,
        max_pairs=max_pairs,
        val_catalog=val_catalog or None,
        eval_every=eval_every,
        time_budget_s=max_minutes * 60 if max_minutes else None,
        typo_rate=typo_rate,
        seed=seed,
        device=device,
    )
    report = train_retriever(_judgments(data), out, config, progress=progress, log=stderr_log)
    click.echo(_summary("retriever", "Recall@100", report, out))


@train_group.command("reranker")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@index_options
@click.option(
    "--base-model",
    default=None,
    help="Starting BERT folder (default: the packaged all-MiniLM-L6-v2 weights).",
)
@trainer_options(lr=3e-5, batch_size=32, min_batch=1, batch_help="Pairs per step.")
@click.option(
    "--dropout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Dropout before the scoring head (classifier_dropout).",
)
@click.option(
    "--negatives",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Unjudged retrieved products per query (label 0, or the teacher's score with "
    "--teacher; drawn once).",
)
@click.option(
    "--max-queries",
    default=None,
    type=click.IntRange(1),
    help="Use at most this many train queries (a seeded sample).",
)
@click.option(
    "--layers",
    default=None,
    type=click.IntRange(1),
    help="Keep only the base model's first N transformer layers: a smaller, faster "
    "cross-encoder (default: all).",
)
@click.option(
    "--val-queries",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Validation queries reranked at each check.",
)
@click.option(
    "--teacher",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Distil from this trained reranker: learn its scores (MSE on logits) instead of the "
    "grades; with --layers, a faster student. Validation still uses the grades.",
)
def train_reranker_cmd(
    data: Path,
    out: Path,
    location,
    base_model,
    epochs,
    batch_size,
    lr,
    weight_decay,
    dropout,
    negatives,
    max_queries,
    layers,
    val_queries,
    teacher,
    eval_every,
    max_minutes,
    typo_rate,
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the cross-encoder on DATA (graded pairs + negatives retrieved from --index).

    With --teacher, distil: the same pairs, the teacher's scores as targets (MSE on logits);
    --max-minutes then counts the teacher's scoring too."""
    from training.candidates import train_reranker_on_index
    from training.reranker import RerankerTrainConfig

    config = RerankerTrainConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dropout=dropout,
        negatives_per_query=negatives,
        max_queries=max_queries,
        layers=layers,
        val_queries=val_queries,
        teacher=teacher,
        eval_every=eval_every,
        time_budget_s=max_minutes * 60 if max_minutes else None,
        typo_rate=typo_rate,
        seed=seed,
        device=device,
    )
    report = train_reranker_on_index(
        _judgments(data), out, location, config, progress=progress, log=stderr_log
    )
    click.echo(_summary("reranker", "NDCG@10", report, out))


@train_group.command("personal")
@click.argument(
    "log_path", metavar="LOG", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@index_options
@click.option(
    "--reranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The cross-encoder serving will use (its scores are the relevance the model reads).",
)
@click.option(
    "--rerank-depth",
    default=50,
    show_default=True,
    type=click.IntRange(2, 1000),
    help="Relevance candidates per query (what serving reranks).",
)
@click.option(
    "--val-days",
    default=7.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="The log's last days validate (early stopping); the rest trains.",
)
@click.option(
    "--no-correction",
    is_flag=True,
    help="Train the naive model: clicks vs shown-not-clicked, no position-bias correction.",
)
@click.option(
    "--clip",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0.001, 1),
    help="Smallest propensity an inverse-propensity weight divides by.",
)
@click.option(
    "--no-click-evidence",
    is_flag=True,
    help="Leave out the log's clicks over expected clicks per (query, product) as features.",
)
@profiles_option("Events of shoppers erased there with forget-user are left out.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@device_option
def train_personal_cmd(
    log_path: Path,
    out: Path,
    location,
    reranker,
    rerank_depth,
    val_days,
    no_correction,
    clip,
    no_click_evidence,
    profiles,
    seed,
    device,
) -> None:
    """Learn personalization from LOG (impressions and interactions) into OUT.

    Position bias is estimated from the log itself (regression-EM) and corrected with clipped
    inverse-propensity weights; OUT gets the model and report.json/.md/propensity.png.
    """
    from rerank.pipeline import SearchPipeline
    from training.from_log import LogTrainConfig, train_personal_from_log
    from training.personal import PersonalTrainConfig

    config = LogTrainConfig(
        val_days=val_days,
        correct=not no_correction,
        clip=clip,
        click_evidence=not no_click_evidence,
        model=PersonalTrainConfig(loss="listwise", seed=seed),
    )
    with SearchPipeline.open(
        location.path,
        reranker=reranker,
        device=device,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
    ) as pipeline:
        report = train_personal_from_log(
            log_path,
            pipeline,
            out,
            config,
            depth=rerank_depth,
            log=stderr_log,
            profiles=profiles,
        )
    click.echo(
        f"personal: {report.train_searches} training and {report.val_searches} validation "
        f"searches; validation IPS-DCG@10 of the interactions {report.baseline_val_ips_dcg:.4f} -> "
        f"{report.best_val_ips_dcg:.4f}; saved to {out} (report.md beside it)"
    )


COMMANDS = [train_group]

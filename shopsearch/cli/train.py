"""``shopsearch train retriever|reranker``: fine-tune the two models on labelled data."""

from __future__ import annotations

from pathlib import Path

import click

from shopsearch.cli.options import device_option, index_options, progress_option, stderr_log


def _judgments(data: Path):
    from evaluation.data import judgments_from, load_benchmark

    bench = load_benchmark(data)
    for problem in bench.problems:
        click.echo(f"data: {problem}", err=True)
    return judgments_from(bench)


@click.group("train")
def train_group() -> None:
    """Fine-tune the bi-encoder (retriever) or the cross-encoder (reranker) on labelled data."""


@train_group.command("retriever")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--base-model",
    default=None,
    help="Starting bi-encoder folder (default: the packaged all-MiniLM-L6-v2).",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the relevant training pairs.",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(2),
    help="Pairs per step (in-batch negatives: larger is better).",
)
@click.option(
    "--lr", default=5e-5, show_default=True, type=float, help="Peak learning rate (AdamW)."
)
@click.option(
    "--weight-decay", default=0.01, show_default=True, type=float, help="AdamW weight decay."
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
@click.option(
    "--eval-every",
    default=None,
    type=click.IntRange(1),
    help="Steps between validations (default: each epoch).",
)
@click.option(
    "--max-minutes",
    default=None,
    type=click.FloatRange(0.1),
    help="Stop training after this long, keeping the best checkpoint.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@device_option
@progress_option
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
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the bi-encoder on DATA's train split (in-batch negatives); best checkpoint to OUT."""
    from retrieval.train import RetrieverTrainConfig, train_retriever

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
        seed=seed,
        device=device,
    )
    report = train_retriever(
        _judgments(data), out, config, progress=progress, log=lambda m: click.echo(m, err=True)
    )
    click.echo(
        f"retriever: validation Recall@100 {report.baseline_metric:.4f} -> {report.best_metric:.4f} "
        f"(best at step {report.best_step}); {report.pairs_seen} pairs in {report.seconds:.0f} s "
        f"({report.pairs_per_s:.1f} pairs/s); saved to {out}"
    )


@train_group.command("reranker")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@index_options
@click.option(
    "--base-model",
    default=None,
    help="Starting BERT folder (default: the packaged all-MiniLM-L6-v2 weights).",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the training pairs.",
)
@click.option(
    "--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Pairs per step."
)
@click.option(
    "--lr", default=3e-5, show_default=True, type=float, help="Peak learning rate (AdamW)."
)
@click.option(
    "--weight-decay", default=0.01, show_default=True, type=float, help="AdamW weight decay."
)
@click.option(
    "--dropout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Dropout before the scoring head.",
)
@click.option(
    "--negatives",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Unjudged retrieved products per query per epoch (label 0).",
)
@click.option(
    "--max-queries",
    default=None,
    type=click.IntRange(1),
    help="Use at most this many train queries (a seeded sample).",
)
@click.option(
    "--val-queries",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Validation queries reranked at each check.",
)
@click.option(
    "--eval-every",
    default=None,
    type=click.IntRange(1),
    help="Steps between validations (default: each epoch).",
)
@click.option(
    "--max-minutes",
    default=None,
    type=click.FloatRange(0.1),
    help="Stop training after this long, keeping the best checkpoint.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@device_option
@progress_option
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
    val_queries,
    eval_every,
    max_minutes,
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the cross-encoder on DATA (graded pairs + negatives retrieved from --index)."""
    from rerank.candidates import train_reranker_on_index
    from rerank.train import RerankerTrainConfig

    config = RerankerTrainConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dropout=dropout,
        negatives_per_query=negatives,
        max_queries=max_queries,
        val_queries=val_queries,
        eval_every=eval_every,
        time_budget_s=max_minutes * 60 if max_minutes else None,
        seed=seed,
        device=device,
    )
    report = train_reranker_on_index(
        _judgments(data), out, location, config, progress=progress, log=stderr_log
    )
    click.echo(
        f"reranker: validation NDCG@10 {report.baseline_metric:.4f} -> {report.best_metric:.4f} "
        f"(best at step {report.best_step}); {report.pairs_seen} pairs in {report.seconds:.0f} s "
        f"({report.pairs_per_s:.1f} pairs/s); saved to {out}"
    )


COMMANDS = [train_group]

"""``shopsearch train retriever|reranker|ranker|personal``: fit the models on labelled data or logs."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from rerank.defaults import DEFAULT_RERANK_DEPTH
from shopsearch.cli.options import (
    device_option,
    index_options,
    profiles_option,
    progress_option,
    pseudonym_key,
    stderr_log,
)
from training.config import (
    LogTrainConfig,
    PersonalTrainConfig,
    RerankerTrainConfig,
    RetrieverTrainConfig,
    TrainConfig,
    default,
)


def _judgments(data: Path):
    from evaluation.data import judgments_from, load_benchmark

    bench = load_benchmark(data)
    for problem in bench.problems:
        click.echo(f"data: {problem}", err=True)
    return judgments_from(bench)


def trainer_options(config: type[TrainConfig], batch_help: str):
    """The options every trainer shares (epochs, batch, AdamW, validation cadence, time
    budget, typos, seed, device, progress), with the defaults of the model's ``config`` class.

    The command receives them as ``trainer``, a dict of :class:`~training.config.TrainConfig`
    fields (``--max-minutes`` as ``time_budget_s``), and ``progress``.
    """
    options = [
        click.option(
            "--epochs",
            default=default(config, "epochs"),
            show_default=True,
            type=click.IntRange(1),
            help="Passes over the training pairs.",
        ),
        click.option(
            "--batch-size",
            default=default(config, "batch_size"),
            show_default=True,
            type=click.IntRange(config.MIN_BATCH),
            help=batch_help,
        ),
        click.option(
            "--lr",
            default=default(config, "lr"),
            show_default=True,
            type=float,
            help="Peak learning rate (AdamW).",
        ),
        click.option(
            "--weight-decay",
            default=default(config, "weight_decay"),
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
            default=default(config, "typo_rate"),
            show_default=True,
            type=click.FloatRange(0, 0.5),
            help="Train on queries with typos: each letter swapped, dropped or replaced by a "
            "neighbouring key with this probability (seeded; 0: queries as written).",
        ),
        click.option(
            "--seed",
            default=default(config, "seed"),
            show_default=True,
            type=int,
            help="Random seed.",
        ),
        device_option,
        progress_option,
    ]

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(
            *args,
            epochs,
            batch_size,
            lr,
            weight_decay,
            eval_every,
            max_minutes,
            typo_rate,
            seed,
            device,
            **kwargs,
        ):
            trainer = {
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "weight_decay": weight_decay,
                "eval_every": eval_every,
                "time_budget_s": max_minutes * 60 if max_minutes else None,
                "typo_rate": typo_rate,
                "seed": seed,
                "device": device,
            }
            return fn(*args, trainer=trainer, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


#: ``--lora R``, the same for the retriever and the reranker (inference/adapters.py).
_lora_option = click.option(
    "--lora",
    default=None,
    type=click.IntRange(1),
    help="Train a LoRA adapter of this rank on the attention projections instead of all "
    "weights (peft); OUT then holds a small adapter folder that names the base model "
    "(raise --lr, e.g. 5e-4).",
)


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
    RetrieverTrainConfig, batch_help="Pairs per step (in-batch negatives: larger is better)."
)
@click.option(
    "--hard-negatives",
    default=default(RetrieverTrainConfig, "hard_negatives"),
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
    default=default(RetrieverTrainConfig, "val_catalog"),
    show_default=True,
    type=click.IntRange(0),
    help="Products ranked in validation besides the judged ones (0: whole catalog).",
)
@_lora_option
@click.option(
    "--teacher",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Distil this trained cross-encoder (MarginMSE on its logit margins to the "
    "--hard-negatives, labelled before training and outside --max-minutes) instead of "
    "in-batch negatives.",
)
@click.option(
    "--index",
    "negatives_index",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Mine the --hard-negatives from this index's hybrid results (what serving retrieves) "
    "instead of the base model's dense top.",
)
def train_retriever_cmd(
    data: Path,
    out: Path,
    base_model,
    lora,
    hard_negatives,
    max_pairs,
    val_catalog,
    teacher,
    negatives_index,
    trainer: dict,
    progress: bool,
) -> None:
    """Fine-tune the bi-encoder on DATA's train split (in-batch negatives, or --teacher's margins);
    best checkpoint to OUT."""
    from training.retriever import train_retriever

    config = RetrieverTrainConfig(
        base_model=base_model,
        hard_negatives=hard_negatives,
        max_pairs=max_pairs,
        val_catalog=val_catalog or None,
        lora_rank=lora,
        teacher=teacher,
        negatives_index=negatives_index,
        **trainer,
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
@trainer_options(RerankerTrainConfig, batch_help="Pairs per step.")
@click.option(
    "--dropout",
    default=default(RerankerTrainConfig, "dropout"),
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Dropout before the scoring head (classifier_dropout).",
)
@click.option(
    "--negatives",
    default=default(RerankerTrainConfig, "negatives_per_query"),
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
    default=default(RerankerTrainConfig, "val_queries"),
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
@_lora_option
def train_reranker_cmd(
    data: Path,
    out: Path,
    location,
    base_model,
    lora,
    dropout,
    negatives,
    max_queries,
    layers,
    val_queries,
    teacher,
    trainer: dict,
    progress: bool,
) -> None:
    """Fine-tune the cross-encoder on DATA (graded pairs + negatives retrieved from --index).

    With --teacher, distil: the same pairs, the teacher's scores as targets (MSE on logits);
    --max-minutes then counts the teacher's scoring too."""
    from training.candidates import train_reranker_on_index

    config = RerankerTrainConfig(
        base_model=base_model,
        dropout=dropout,
        negatives_per_query=negatives,
        max_queries=max_queries,
        layers=layers,
        val_queries=val_queries,
        teacher=teacher,
        lora_rank=lora,
        **trainer,
    )
    report = train_reranker_on_index(
        _judgments(data), out, location, config, progress=progress, log=stderr_log
    )
    click.echo(_summary("reranker", "NDCG@10", report, out))


@train_group.command("ranker")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@index_options
@click.option(
    "--reranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The cross-encoder serving will use: its logit becomes a feature (serve the ranker "
    "with the same --reranker).",
)
@click.option(
    "--depth",
    default=DEFAULT_RERANK_DEPTH,
    show_default=True,
    type=click.IntRange(2, 1000),
    help="Candidates per query: the lists trained on (what serving ranks: --rerank-depth).",
)
@click.option(
    "--rounds",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Boosting rounds (trees) at most; early stopping on validation NDCG@10 picks fewer.",
)
@click.option(
    "--learning-rate",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="LightGBM's shrinkage.",
)
@click.option(
    "--num-leaves",
    default=7,
    show_default=True,
    type=click.IntRange(2),
    help="Leaves per tree.",
)
@click.option(
    "--without",
    "dropped",
    multiple=True,
    type=click.Choice(["retrieval", "cross", "lexical", "product"]),
    help="Leave a feature group out (repeatable): an ablation.",
)
@click.option("--seed", default=13, show_default=True, type=int, help="Random seed.")
@device_option
def train_ranker_cmd(
    data: Path,
    out: Path,
    location,
    reranker,
    depth,
    rounds,
    learning_rate,
    num_leaves,
    dropped,
    seed,
    device,
) -> None:
    """Train the learned final stage (LightGBM lambdarank) on DATA into OUT.

    The lists are --index's top --depth candidates of each train and validation query (scored
    by --reranker when given), their features the ones serving computes (rerank/ltr.py), the
    labels DATA's grades; training stops early on the validation split's NDCG@10. Serve it
    with 'shopsearch search|serve --ranker OUT'."""
    from training.ranker import RankerTrainConfig, train_ranker_on_index

    config = RankerTrainConfig(
        depth=depth,
        rounds=rounds,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        dropped=tuple(dropped),
        seed=seed,
    )
    report = train_ranker_on_index(
        _judgments(data), out, location, reranker, config, log=stderr_log, device=device
    )
    click.echo(
        f"ranker: validation NDCG@10 over the candidates {report.baseline_ndcg10:.4f} -> "
        f"{report.best_ndcg10:.4f} ({report.best_iteration} trees, {report.train_queries} "
        f"training lists); saved to {out}"
    )


@train_group.command("personal")
@click.argument("log_path", metavar="LOG", type=click.Path(exists=True, path_type=Path))
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
    default=DEFAULT_RERANK_DEPTH,
    show_default=True,
    type=click.IntRange(2, 1000),
    help="Relevance candidates per query (what serving reranks).",
)
@click.option(
    "--val-days",
    default=default(LogTrainConfig, "val_days"),
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
    default=default(LogTrainConfig, "clip"),
    show_default=True,
    type=click.FloatRange(0.001, 1),
    help="Smallest propensity an inverse-propensity weight divides by.",
)
@click.option(
    "--no-click-evidence",
    is_flag=True,
    help="Leave out the log's clicks over expected clicks per (query, product) as features.",
)
@click.option(
    "--bootstrap",
    default=default(LogTrainConfig, "bootstrap"),
    show_default=True,
    type=click.IntRange(0),
    help="Resamples of the examination curve's 95% bootstrap interval (searches resampled; "
    "0: none). A curve wider than 0.25 at any of ranks 2-5 is warned about.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Serve the model even if it does not beat relevance-only ranking on the validation "
    "searches (without it, such a model is saved marked beats_baseline: false and serving "
    "refuses it).",
)
@profiles_option("Events of shoppers erased there with forget-user are left out.")
@click.option(
    "--seed",
    default=default(PersonalTrainConfig, "seed"),
    show_default=True,
    type=int,
    help="Random seed.",
)
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
    bootstrap,
    force,
    profiles,
    seed,
    device,
) -> None:
    """Learn personalization from LOG (impressions and interactions) into OUT.

    LOG is the shop's event log (Parquet or JSON Lines) or the service's search log folder
    (serve --search-log): its served pages and the clicks posted with their search_id;
    anonymous searches are left out.

    Position bias is estimated from the log itself (regression-EM), with a bootstrap
    interval per rank, and corrected with clipped inverse-propensity weights; OUT gets the
    model and report.json/.md/propensity.png. Shown products outside today's candidates (a log
    of another engine) are scored exactly and kept. A model that does not beat relevance-only
    ranking on validation is refused by serving unless trained with --force.
    """
    from rerank.pipeline import SearchPipeline
    from training.from_log import train_personal_from_log

    config = LogTrainConfig(
        val_days=val_days,
        correct=not no_correction,
        clip=clip,
        click_evidence=not no_click_evidence,
        bootstrap=bootstrap,
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
            key=pseudonym_key(),
            force=force,
        )
    verdict = (
        ""
        if report.beats_baseline
        else (
            " (does NOT beat relevance-only; served anyway: --force)"
            if report.forced
            else " (does NOT beat relevance-only: serving refuses it; --force to override)"
        )
    )
    click.echo(
        f"personal: {report.train_searches} training and {report.val_searches} validation "
        f"searches; validation IPS-DCG@10 of the interactions {report.baseline_val_ips_dcg:.4f} -> "
        f"{report.best_val_ips_dcg:.4f}{verdict}; saved to {out} (report.md beside it)"
    )
    if report.curve_warning:
        click.echo(f"personal: warning: {report.curve_warning}")


COMMANDS = [train_group]

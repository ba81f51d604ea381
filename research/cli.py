"""Research commands of ``shopsearch``: the sample catalog, the demo, the benchmarks, the simulator.

They are registered into the ``shopsearch`` group through the ``shopsearch.commands`` entry
points in ``research/pyproject.toml`` (so they exist only where ``shopsearch-research`` is
installed); like the core commands, each parses its options, calls the library and prints.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from research.bench_depth import DEFAULT_DEPTHS, MAX_DEPTH, MIN_DEPTH  # cheap to import too
from research.bench_faults import SCENARIOS  # the standard library only: cheap to import
from shopsearch.cli import UserError
from shopsearch.cli.options import backend_options, device_option, stderr_log

docs_option = click.option(
    "--docs",
    "docs_page",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report into this documentation page (docs/benchmarks/...), between "
    "markers keyed by the report's name: a re-run replaces its own block.",
)


def _publish_text(docs_page: Path | None, key: str, text: str, machine: str | None = None) -> None:
    """``text`` into its documentation page (``--docs``) as the block ``key``, with the command
    line and the machine (None: this one's description); nothing without a page."""
    if docs_page is None:
        return
    from research.bench_speed import machine_description
    from research.docs import command_line, publish

    page = publish(docs_page, key, text, command_line(), machine or machine_description())
    click.echo(f"wrote the report into {page}", err=True)


def _publish(docs_page: Path | None, report_md: Path) -> None:
    """The report the command wrote (``NAME.md``: block ``NAME``) into its page (``--docs``)."""
    if docs_page is not None:
        _publish_text(docs_page, report_md.stem, report_md.read_text())


@click.command("sample-catalog")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--n", "n", default=2000, show_default=True, type=click.IntRange(1), help="Number of products."
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same catalog)."
)
def sample_catalog(out: Path, n: int, seed: int) -> None:
    """Write a realistic synthetic catalog to OUT (.parquet, .csv or .jsonl)."""
    from catalog.sample import write_sample_catalog

    path = write_sample_catalog(out, n=n, seed=seed)
    click.echo(f"wrote {n} products to {path}")


@click.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-run"),
    show_default=True,
    help="Where the sample catalog and index go.",
)
@click.option(
    "--n",
    "n",
    default=2000,
    show_default=True,
    type=click.IntRange(10),
    help="Products in the sample catalog.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Sample catalog seed.")
@click.option(
    "-k", "k", default=5, show_default=True, type=click.IntRange(1, 100), help="Results per query."
)
def demo_cmd(workdir: Path, n: int, seed: int, k: int) -> None:
    """The main job end to end: sample catalog -> embedded index -> a few searches."""
    from research.jobs import demo_steps

    for block in demo_steps(workdir, n=n, seed=seed, k=k):
        click.echo(block)


def _parse_variants(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, str | None]]:
    """("torch", "onnx:int8") -> [("torch", None), ("onnx", "int8")]; else a usage error."""
    from core.errors import ShopsearchError
    from inference.backend import check_backend

    out = []
    for value in values:
        backend, _, quantize = value.partition(":")
        try:
            check_backend(backend, quantize or None)
        except ShopsearchError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
        out.append((backend, quantize or None))
    return out


@click.command("bench")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench"),
    show_default=True,
    help="Where indexes (one per model, reused) and the report go.",
)
@click.option(
    "--retriever",
    "retriever_model",
    default=None,
    help="Fine-tuned bi-encoder folder (adds the dense/hybrid fine-tuned stages).",
)
@click.option(
    "--reranker",
    "reranker_model",
    default=None,
    help="Cross-encoder folder (adds the reranked stage).",
)
@click.option(
    "--base-model",
    default=None,
    help="Zero-shot bi-encoder (default: the packaged all-MiniLM-L6-v2).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default="test",
    show_default=True,
    help="Which split's queries to score.",
)
@click.option(
    "--candidates",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Hybrid hits the reranker reorders.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    callback=_parse_variants,
    help="BACKEND[:int8] scored beside the fp32 torch stages, paired-tested against them "
    "(repeatable, e.g. --variant onnx:int8).",
)
@device_option
@docs_option
def bench_cmd(
    data: Path,
    workdir: Path,
    retriever_model: str | None,
    reranker_model: str | None,
    base_model: str | None,
    split: str,
    candidates: int,
    variants: list[tuple[str, str | None]],
    device: str | None,
    docs_page: Path | None,
) -> None:
    """Score every stage on DATA's test split: Recall@10/50/100, P@10, NDCG@10, MRR@10, Judged@10, latency."""
    from research.bench_quality import run_quality_benchmark

    report = run_quality_benchmark(
        data,
        workdir,
        retriever_model=retriever_model,
        reranker_model=reranker_model,
        base_model=base_model,
        split=split,
        candidates=candidates,
        device=device,
        variants=[v for v in variants if v != ("torch", None)],
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report.markdown())
    click.echo(
        f"\nwrote {workdir / 'bench.json'}, {workdir / 'bench.md'}, {workdir / 'recall.png'} ({report.seconds:.0f} s)"
    )
    _publish(docs_page, workdir / "bench.md")


def _parse_seeds(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """--seeds "0,1,2" -> [0, 1, 2]; anything else is a usage error."""
    try:
        return [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give integers separated by commas") from None


def simulation_options(fn):
    """What the simulator reads: the two indexes, the reranker, and the shoppers' parameters."""
    options = [
        click.option(
            "--zero-shot-index",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Index built with the zero-shot model (the simulator clusters its vectors).",
        ),
        click.option(
            "--index",
            "tuned_index",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Index of the retriever in use (the result lists shoppers see).",
        ),
        click.option(
            "--reranker",
            "reranker_model",
            required=True,
            help="Cross-encoder folder (the relevance-only ranking shoppers see).",
        ),
        click.option(
            "--strength",
            default=1.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Weight of the latent preference in the utility.",
        ),
        click.option(
            "--users",
            default=1500,
            show_default=True,
            type=click.IntRange(10),
            help="Simulated shoppers (per seed).",
        ),
        click.option(
            "--pool",
            default=800,
            show_default=True,
            type=click.IntRange(20),
            help="Real queries the shoppers search (validation + test splits).",
        ),
        click.option(
            "--examine-eta",
            default=1.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Position bias: rank r is examined with probability 1 / r ** eta.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("simulate")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@simulation_options
@click.option("--seed", default=0, show_default=True, type=int, help="Simulator seed.")
@click.option(
    "--noise",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of shoppers who click at random.",
)
def simulate_cmd(
    data: Path,
    out: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    seed: int,
    strength: float,
    noise: float,
    users: int,
    pool: int,
    examine_eta: float,
) -> None:
    """Write a simulated event log (and, apart, the true utilities) over DATA's catalog and queries."""
    from research.jobs import run_simulation

    sim = run_simulation(
        data,
        out,
        zero_shot_index,
        tuned_index,
        reranker_model,
        seed=seed,
        strength=strength,
        noise=noise,
        users=users,
        pool=pool,
        examine_eta=examine_eta,
        log=stderr_log,
    )
    click.echo(
        f"wrote {out}: {sim.events.height} events ({out / 'events.parquet'}); true utilities for evaluation only in "
        f"{out / 'utility.parquet'}; held-out period from {sim.split_ts:.0f} (epoch s)"
    )


@click.command("bench-typo")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench"),
    show_default=True,
    help="Where indexes (shared with `bench`) and typo.json / typo.md go.",
)
@click.option("--retriever", "retriever_model", default=None, help="Fine-tuned bi-encoder folder.")
@click.option(
    "--reranker", "reranker_model", default=None, help="Cross-encoder folder (adds the pipeline)."
)
@click.option("--base-model", default=None, help="Zero-shot bi-encoder (default: packaged).")
@click.option(
    "--candidates",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Hybrid hits the reranker reorders.",
)
@click.option(
    "--noise-queries",
    default=None,
    type=click.IntRange(1),
    help="Score the robustness curve on a seeded sample of this many test queries.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the noise.")
@device_option
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(["fusion", "stages", "robustness", "corrector", "training"]),
    help="Run only this part (repeat for several; default: all but training). Without fusion, "
    "the weights recorded with the index are used; the report is then typo-<parts>.md.",
)
@click.option(
    "--against-retriever",
    default=None,
    help="The bi-encoder trained like --retriever but without --typo-rate: adds part "
    "'training' (augmented against plain, paired tests; dense, hybrid, and the pipeline when "
    "--against-reranker is given too).",
)
@click.option(
    "--against-reranker",
    default=None,
    help="The plain cross-encoder to compare --reranker (typo-augmented) with in part 'training'.",
)
@docs_option
def bench_typo_cmd(
    data: Path,
    workdir: Path,
    retriever_model: str | None,
    reranker_model: str | None,
    base_model: str | None,
    candidates: int,
    noise_queries: int | None,
    seed: int,
    device: str | None,
    parts: tuple[str, ...],
    against_retriever: str | None,
    against_reranker: str | None,
    docs_page: Path | None,
) -> None:
    """Typo tolerance on DATA: fusion weights chosen on validation and recorded with the index;
    every stage with and without spelling correction (all queries, out-of-vocabulary ones);
    robustness to 0/5/10/20% typing noise; the corrector's precision; with --against-retriever,
    typo-augmented against plain training."""
    from research.bench_typo import DEFAULT_PARTS, report_name, run_typo_benchmark

    parts = parts or DEFAULT_PARTS
    if (against_retriever or against_reranker) and "training" not in parts:
        parts += ("training",)
    report = run_typo_benchmark(
        data,
        workdir,
        retriever_model=retriever_model,
        reranker_model=reranker_model,
        base_model=base_model,
        candidates=candidates,
        noise_queries=noise_queries,
        seed=seed,
        device=device,
        parts=parts,
        plain_retriever=against_retriever,
        plain_reranker=against_reranker,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report.markdown())
    name = report_name(parts)
    click.echo(f"\nwrote {workdir / name}.json and .md ({report.seconds:.0f} s)")
    _publish(docs_page, workdir / f"{name}.md")


@click.command("bench-synonyms")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Index of DATA's catalog with a spelling vocabulary (its recorded fusion is used).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/synonyms"),
    show_default=True,
    help="Where synonyms.json / synonyms.md and the mined list synonyms-mined.txt go.",
)
@device_option
@docs_option
def bench_synonyms_cmd(
    data: Path, index: Path, workdir: Path, device: str | None, docs_page: Path | None
) -> None:
    """Synonyms on DATA: a list mined from the training split (a documented, deterministic
    rule), its weight chosen on validation, BM25 and hybrid with and without it on the test
    split (paired randomization tests)."""
    from research.bench_synonyms import REPORT, run_synonym_benchmark

    report = run_synonym_benchmark(
        data, index, workdir, device=device, log=lambda m: click.echo(m, err=True)
    )
    click.echo(report.markdown())
    click.echo(f"\nwrote {workdir / REPORT}.json and .md ({report.seconds:.0f} s)")
    _publish(docs_page, workdir / f"{REPORT}.md")


def _parse_depths(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """--depths "10,20,50" -> [10, 20, 50] (the default depth added); else one line, exit 2."""
    from core.errors import ShopsearchError
    from research.bench_depth import parse_depths

    try:
        return parse_depths(value)
    except ShopsearchError as exc:
        raise UserError(f"--depths {value!r}: {exc}") from None


@click.command("bench-depth")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Index of DATA's catalog (built with --backend/--quantize's query tower).",
)
@click.option(
    "--reranker", "reranker_model", required=True, help="Cross-encoder folder (its blend weight)."
)
@backend_options
@click.option(
    "--depths",
    default=",".join(map(str, DEFAULT_DEPTHS)),
    show_default=True,
    callback=_parse_depths,
    help=f"Rerank depths, comma-separated, each in [{MIN_DEPTH}, {MAX_DEPTH}]; the pipeline's "
    "default depth (the baseline of the paired tests) is always added.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default="test",
    show_default=True,
    help="Which split's queries to score.",
)
@click.option(
    "--latency-queries",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="Queries whose whole search is timed at each depth.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-depth"),
    show_default=True,
    help="Where depth.json, depth.md and depth.png go.",
)
@device_option
@docs_option
def bench_depth_cmd(
    data: Path,
    index: Path,
    reranker_model: str,
    backend: str,
    quantize: str | None,
    depths: list[int],
    split: str,
    latency_queries: int,
    workdir: Path,
    device: str | None,
    docs_page: Path | None,
) -> None:
    """NDCG@10 and latency at each rerank depth: one retrieval per query, its top d scored as a
    search at depth d scores them, each depth paired-tested against the default; Recall@100 is
    the same at every depth."""
    from research.bench_depth import run_depth_benchmark

    report = run_depth_benchmark(
        data,
        index,
        reranker_model,
        workdir,
        depths=depths,
        backend=backend,
        quantize=quantize,
        split=split,
        latency_queries=latency_queries,
        device=device,
        log=stderr_log,
    )
    click.echo(report.markdown())
    click.echo(
        f"\nwrote {workdir / 'depth.json'}, {workdir / 'depth.md'}, {workdir / 'depth.png'} "
        f"({report.seconds:.0f} s)"
    )
    _publish(docs_page, workdir / "depth.md")


@click.command("bench-personal")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@simulation_options
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/personal"),
    show_default=True,
    help="Where simulations, profile stores and the report go.",
)
@click.option(
    "--seeds",
    default="201,202,203",
    show_default=True,
    callback=_parse_seeds,
    help="Simulator seeds, comma-separated (the defaults were never used to develop the code).",
)
@click.option(
    "--noise",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of noisy users in the robustness run (0: skip it).",
)
@click.option(
    "--no-click-evidence",
    is_flag=True,
    help="Ablation: train and score without the log's clicks over expected clicks per "
    "(query, product).",
)
@docs_option
def bench_personal_cmd(
    data: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    workdir: Path,
    seeds: list[int],
    noise: float,
    strength: float,
    users: int,
    pool: int,
    examine_eta: float,
    no_click_evidence: bool,
    docs_page: Path | None,
) -> None:
    """Personalized vs relevance-only ranking on simulated shoppers' held-out sessions."""
    from research.jobs import run_personal_benchmark

    report = run_personal_benchmark(
        data,
        zero_shot_index,
        tuned_index,
        reranker_model,
        workdir,
        seeds=seeds,
        noise=noise,
        strength=strength,
        users=users,
        pool=pool,
        examine_eta=examine_eta,
        click_evidence=not no_click_evidence,
        log=stderr_log,
    )
    click.echo(report.markdown())
    click.echo(
        f"\nwrote {workdir / 'personalization.json'} and {workdir / 'personalization.md'} ({report.seconds:.0f} s)"
    )
    _publish(docs_page, workdir / "personalization.md")


@click.command("bench-index")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-index"),
    show_default=True,
    help="Where the benchmark index and report go.",
)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Parquet/CSV with a 'query' column (default: queries made from titles).",
)
@click.option(
    "--n-queries",
    default=300,
    show_default=True,
    type=click.IntRange(10),
    help="Queries timed per mode.",
)
@click.option(
    "--encoder-sample",
    default=4000,
    show_default=True,
    type=click.IntRange(100),
    help="Products encoded for the encoder-alone baseline.",
)
@click.option(
    "--model", default=None, help="Bi-encoder folder (default: the packaged all-MiniLM-L6-v2)."
)
@click.option(
    "--reranker",
    "reranker_model",
    default=None,
    help="Cross-encoder folder: adds rerank 10/20/50/100 and hybrid + rerank 50 latency.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    callback=_parse_variants,
    help="BACKEND[:int8] to run, repeatable, side by side in one run (e.g. --variant torch "
    "--variant onnx:int8); default: torch.",
)
@click.option(
    "--quantize-vectors",
    type=click.Choice(["int8"]),
    default=None,
    help="Also build the catalog with Qdrant's int8 scalar quantization of the stored vectors "
    "(rescored with fp32), from the first build's vectors (not re-encoded), and report its "
    "latency, Recall@100 against exact search over the fp32 vectors, memory and disk.",
)
@click.option(
    "--memory-only",
    is_flag=True,
    help="Build nothing: measure only the memory of a search process over the indexes an "
    "earlier run left in WORKDIR, with its queries (WORKDIR/search-memory-<time>.json).",
)
@click.option(
    "--search-only",
    is_flag=True,
    help="Build nothing: measure the indexes an earlier run left in WORKDIR again, with its "
    "queries: latency and Recall@100 against exact per mode, and a search process's memory "
    "(WORKDIR/search-<time>.json, .md). For a query-time change on indexes slow to build.",
)
@device_option
@docs_option
def bench_index_cmd(
    catalog: Path,
    workdir: Path,
    queries_file: Path | None,
    n_queries: int,
    encoder_sample: int,
    model: str | None,
    reranker_model: str | None,
    variants: list[tuple[str, str | None]],
    quantize_vectors: str | None,
    memory_only: bool,
    search_only: bool,
    device: str | None,
    docs_page: Path | None,
) -> None:
    """Measure indexing items/s (vs the encoder alone) and query latency p50/p99 at k=100.

    Each dense and hybrid latency comes with its Recall@100 against exact search (same queries,
    mode and filter), and exact search is timed too (WORKDIR/speed.json, speed.md). Several
    --variant run one after another, each in a fresh process."""
    from research.bench_speed import run_isolated, side_by_side
    from research.jobs import run_index_benchmark, run_search_benchmark

    if memory_only and search_only:
        raise click.UsageError(
            "--memory-only and --search-only: give one (--search-only measures the memory too)"
        )
    reports = []
    isolated = len(variants) > 1  # each variant in a process of its own (run_isolated)
    for backend, quantize in variants or [("torch", None)]:
        where = workdir / f"{backend}{quantize or ''}" if isolated else workdir
        stderr_log(f"== {backend}{' ' + quantize if quantize else ''} -> {where}")
        options = {
            "queries_file": queries_file,
            "n_queries": n_queries,
            "encoder_sample": encoder_sample,
            "model": model,
            "device": device,
            "backend": backend,
            "quantize": quantize,
            "log": stderr_log,
        }
        if memory_only or search_only:
            search = (
                partial(run_isolated, run_search_benchmark) if isolated else run_search_benchmark
            )
            measured, file, table = search(catalog, where, memory_only=memory_only, **options)
            if table is None:
                click.echo(f"search process memory of {', '.join(measured)}: {file}")
            else:
                click.echo(table.read_text())
                click.echo(f"{', '.join(measured)} measured again: {file}, table: {table}")
            continue
        run = partial(run_isolated, run_index_benchmark) if isolated else run_index_benchmark
        report = run(
            catalog,
            where,
            reranker=reranker_model,
            quantize_vectors=quantize_vectors,
            **options,
        )
        reports.append(report)
        click.echo("\n".join(report.lines()))
        click.echo(f"report: {where / 'speed.json'}, table: {where / 'speed.md'}")
        if len(variants) <= 1:
            _publish(docs_page, where / "speed.md")
    if len(reports) > 1:
        table = "\n".join(side_by_side(reports))
        (workdir / "compare.md").write_text(table + "\n")
        click.echo("\n" + table)
        click.echo(f"table: {workdir / 'compare.md'}")
        _publish(docs_page, workdir / "compare.md")


@click.command("bench-faults")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-faults"),
    show_default=True,
    help="Where faults.json and faults.md go (scratch data under WORKDIR/scratch, removed after).",
)
@click.option(
    "--n",
    "n",
    default=300,
    show_default=True,
    type=click.IntRange(20),
    help="Products in the sample catalog.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the catalog, the event log, the kill moments and the damage.",
)
@click.option(
    "--model", default=None, help="Bi-encoder folder (default: the packaged all-MiniLM-L6-v2)."
)
@click.option(
    "--kills",
    default=8,
    show_default=True,
    type=click.IntRange(1, 50),
    help="SIGKILLs during builds.",
)
@click.option(
    "--promotions",
    default=5,
    show_default=True,
    type=click.IntRange(1, 50),
    help="Builds promoted while reader processes search.",
)
@click.option(
    "--readers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 8),
    help="Reader processes searching during the promotions.",
)
@click.option(
    "--segment-files",
    default=4,
    show_default=True,
    type=click.IntRange(0, 50),
    help="Largest shard files damaged (each truncated, then garbled).",
)
@click.option(
    "--events",
    "n_events",
    default=30000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Events in the log whose ingest is killed.",
)
@click.option(
    "--ingest-kills",
    default=2,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Ingests killed with SIGKILL and run again.",
)
@click.option(
    "--memory-sizes",
    default="5000,20000,50000",
    show_default=True,
    callback=_parse_seeds,
    help="Catalog sizes (comma-separated) whose indexing peak memory is measured.",
)
@click.option(
    "--memory-segment",
    default=10000,
    show_default=True,
    type=click.IntRange(1000),
    help="Products per segment in the memory scenario's segmented builds.",
)
@click.option(
    "--only",
    "scenarios",
    multiple=True,
    type=click.Choice(SCENARIOS),
    help="Run only this scenario (repeat for several; default: all eight).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Keep WORKDIR/scratch (indexes, logs, damaged copies) for inspection.",
)
@docs_option
def bench_faults_cmd(
    workdir: Path,
    n: int,
    seed: int,
    model: str | None,
    kills: int,
    promotions: int,
    readers: int,
    segment_files: int,
    n_events: int,
    ingest_kills: int,
    memory_sizes: list[int],
    memory_segment: int,
    scenarios: tuple[str, ...],
    keep: bool,
    docs_page: Path | None,
) -> None:
    """Crash, concurrency and damage scenarios on a sample index and profile store, counted."""
    from research.bench_faults import run_fault_benchmark

    report = run_fault_benchmark(
        workdir,
        n_products=n,
        seed=seed,
        model=model,
        kills=kills,
        promotions=promotions,
        readers=readers,
        segment_files=segment_files,
        n_events=n_events,
        ingest_kills=ingest_kills,
        memory_sizes=memory_sizes,
        memory_segment=memory_segment,
        scenarios=scenarios or None,
        keep=keep,
        log=stderr_log,
    )
    click.echo(report.markdown())
    click.echo(
        f"wrote {workdir / 'faults.json'} and {workdir / 'faults.md'} ({report.seconds:.0f} s)"
    )
    _publish(docs_page, workdir / "faults.md")


@click.command("bench-storefront")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/storefront"),
    show_default=True,
    help="Where the sample catalog, its index (built once, reused) and the reports go.",
)
@click.option(
    "--products",
    default=55_000,
    show_default=True,
    type=click.IntRange(100),
    help="Sample-catalog size (55,000 is the issue's sample catalog; try 1,000,000).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Sample-catalog seed.")
@click.option(
    "--index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An index of the sample catalog to use instead of building one in --workdir.",
)
@click.option(
    "--model",
    default=None,
    help="Bi-encoder folder for the index built here (default: the packaged MiniLM); a small "
    "one makes a 1M-product index buildable on a CPU.",
)
@click.option(
    "--hd",
    "hd_data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The imported Home Depot benchmark (runs/hd): adds it to the diversity part.",
)
@click.option(
    "--hd-index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An index of the Home Depot catalog (with --hd).",
)
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(["sort", "diversity", "latency"]),
    help="Run only this part (repeatable; default: all three).",
)
@click.option(
    "--queries",
    "latency_queries",
    default=300,
    show_default=True,
    type=click.IntRange(10),
    help="Title queries of the latency part.",
)
@click.option(
    "--repeats",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the latency queries.",
)
@docs_option
def bench_storefront_cmd(
    workdir: Path,
    products: int,
    seed: int,
    index: Path | None,
    model: str | None,
    hd_data: Path | None,
    hd_index: Path | None,
    parts: tuple[str, ...],
    latency_queries: int,
    repeats: int,
    docs_page: Path | None,
) -> None:
    """Facets, sort and diversity: how relevant a price sort stays, diversity against NDCG@10
    (Home Depot and the sample catalog), and the latency they add at --products products."""
    from research.bench_storefront import PARTS, run_storefront_benchmark

    if (hd_data is None) != (hd_index is None):
        raise UserError("give --hd and --hd-index together (the benchmark and its index)")
    report = run_storefront_benchmark(
        workdir,
        products=products,
        seed=seed,
        index=index,
        model=model,
        hd_data=hd_data,
        hd_index=hd_index,
        parts=parts or PARTS,
        latency_queries=latency_queries,
        repeats=repeats,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report.markdown())
    click.echo(f"\nwrote {workdir}/storefront-*.md and storefront.json ({report.seconds:.0f} s)")
    for part in report.parts:
        _publish(docs_page, workdir / f"storefront-{part}.md")


@click.command("bench-rules")
@click.argument("index", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--rules", "n_rules", default=1000, show_default=True, type=click.IntRange(2), help="Rules."
)
@click.option(
    "--queries",
    "n_queries",
    default=200,
    show_default=True,
    type=click.IntRange(1),
    help="Queries (title words of random products; half of the rules are on them).",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Timed passes over the queries (after one untimed).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds queries and rules.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="Intra-op CPU threads of the query tower (default: physical cores).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the table."
)
@docs_option
def bench_rules_cmd(
    index: Path,
    n_rules: int,
    n_queries: int,
    rounds: int,
    seed: int,
    threads: int | None,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """What N merchandising rules add to each search on INDEX: p50/p99 with and without them,
    interleaved in one run (the rules go to a temporary directory, not the index's)."""
    import json

    from research.bench_rules import REPORT_KEY, run

    cost = run(index, n_rules, n_queries, rounds, seed, threads)
    report = cost.markdown()
    click.echo(json.dumps(cost.as_dict()) if as_json else report)
    _publish_text(docs_page, REPORT_KEY, report)


@click.command("bench-searchlog")
@click.argument("index", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--queries",
    "n_queries",
    default=200,
    show_default=True,
    type=click.IntRange(1),
    help="Queries (title words of random products).",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Timed passes over the queries, each query with the log on and off.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the queries.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="Intra-op CPU threads of the query tower (default: physical cores).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the table."
)
@docs_option
def bench_searchlog_cmd(
    index: Path,
    n_queries: int,
    rounds: int,
    seed: int,
    threads: int | None,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """What the search log costs a search on INDEX: POST /search p50/p99 with the log on and
    off, interleaved in one run (the log goes to a temporary folder)."""
    import json

    from research.bench_searchlog import REPORT_KEY, run

    cost = run(index, n_queries, rounds, seed, threads)
    report = cost.markdown()
    click.echo(json.dumps(cost.as_dict()) if as_json else report)
    _publish_text(docs_page, REPORT_KEY, report)


@click.command("bench-update")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-update"),
    show_default=True,
    help="Where the sample catalog, its index (reused) and the report go.",
)
@click.option(
    "--n", "n", default=55_000, show_default=True, type=click.IntRange(100), help="Products."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Sample catalog seed.")
@click.option(
    "--batch",
    "batches",
    multiple=True,
    type=click.IntRange(1),
    help="Batch sizes of the throughput phase (repeat; default 1000, 5000, 20000).",
)
@click.option(
    "--stream-batch",
    default=5000,
    show_default=True,
    type=click.IntRange(1),
    help="Batch size the updater process streams while searches run.",
)
@click.option(
    "--seconds",
    default=20.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Length of each throughput run and of each search phase.",
)
@click.option(
    "--queries", default=200, show_default=True, type=click.IntRange(1), help="Distinct queries."
)
@click.option("--model", default=None, help="Bi-encoder folder (default: the packaged MiniLM).")
@click.option(
    "--tiny",
    is_flag=True,
    help="Index with a one-layer 384-dimension model built here (MiniLM's vector size, much "
    "faster to embed) instead of --model.",
)
@click.option(
    "--from-index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An embedded index of this sample catalog to copy instead of building one.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Intra-op threads of the searcher's query tower (the updater gets the other core).",
)
@click.option(
    "--qps",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Searches a second in both search phases (0: back to back).",
)
@docs_option
def bench_update_cmd(
    workdir: Path,
    n: int,
    seed: int,
    batches: tuple[int, ...],
    stream_batch: int,
    seconds: float,
    queries: int,
    model: str | None,
    from_index: Path | None,
    threads: int,
    tiny: bool,
    qps: float,
    docs_page: Path | None,
) -> None:
    """Live price/stock updates: products/s, and search p99 while they stream vs alone."""
    from research.bench_update import DEFAULT_BATCHES, run_update_benchmark

    report = run_update_benchmark(
        workdir,
        n=n,
        seed=seed,
        batches=batches or DEFAULT_BATCHES,
        stream_batch=stream_batch,
        seconds=seconds,
        queries=queries,
        model=model,
        from_index=from_index,
        threads=threads,
        tiny=tiny,
        qps=qps,
    )
    click.echo(report.markdown())
    click.echo(f"wrote {workdir / 'updates.md'} and {workdir / 'updates.json'}")
    _publish(docs_page, workdir / "updates.md")


@click.command("bench-profiles")
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Choice(["sqlite", "postgresql", "redis"]),
    help="A store to measure (repeat; default all three).",
)
@click.option(
    "--users", default=10_000, show_default=True, type=click.IntRange(1), help="Shoppers stored."
)
@click.option(
    "--events-per-user", default=20, show_default=True, type=click.IntRange(1), help="History."
)
@click.option(
    "--items", default=20_000, show_default=True, type=click.IntRange(100), help="Products."
)
@click.option(
    "--candidates", default=50, show_default=True, type=click.IntRange(1), help="Popularity ids."
)
@click.option(
    "--reads", default=2_000, show_default=True, type=click.IntRange(10), help="Per phase."
)
@click.option(
    "--write-rate",
    default=1_000.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Events/s of the paced writer process.",
)
@click.option(
    "--write-batch", default=10, show_default=True, type=click.IntRange(1), help="Per ingest."
)
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Each phase reads for at least this long (and --reads reads).",
)
@click.option(
    "--postgres",
    default=None,
    help="A scratch PostgreSQL URL (its shopsearch schema is dropped); default: a throw-away "
    "server (needs PostgreSQL installed).",
)
@click.option(
    "--redis",
    default=None,
    help="A scratch Redis URL (flushed); default: a throw-away redis-server.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the history.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@docs_option
def bench_profiles_cmd(
    stores: tuple[str, ...],
    users: int,
    events_per_user: int,
    items: int,
    candidates: int,
    reads: int,
    write_rate: float,
    write_batch: int,
    seconds: float,
    postgres: str | None,
    redis: str | None,
    seed: int,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """Profile read p50/p99 (profile + popularity of the candidates) of the SQLite, PostgreSQL
    and Redis stores, idle and while another process ingests events: the measurement behind
    the shared profile store's choice."""
    import dataclasses
    import json
    import os

    from research.bench_profiles import REPORT_KEY, STORES, Workload, markdown, run

    workload = Workload(
        users=users,
        events_per_user=events_per_user,
        items=items,
        candidates=candidates,
        reads=reads,
        write_batch=write_batch,
        write_rate=write_rate,
        seconds=seconds,
        seed=seed,
    )
    load = os.getloadavg()[0]
    results = run(stores or STORES, workload, postgres=postgres, redis=redis)
    report = markdown(results, workload, load)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results]))
    else:
        click.echo(report)
    _publish_text(docs_page, REPORT_KEY, report)


@click.command("bench-interleave")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--change",
    "changes",
    multiple=True,
    type=click.FloatRange(-1.0),
    help="B is A changed by this, one pair each (repeat; default -0.5 -0.2 -0.1 0.1 0.2 0.5): "
    "below 0 removes that share of A's errors (better), above 0 adds that much noise (worse).",
)
@click.option(
    "--reference",
    default=0.6,
    show_default=True,
    type=click.FloatRange(0.0),
    help="A's noise (its scores: relevance + this * N(0,1)).",
)
@click.option(
    "--distractors",
    default=20,
    show_default=True,
    type=click.IntRange(10),
    help="Random unjudged catalog products among each query's candidates.",
)
@click.option(
    "--max-searches",
    default=100_000,
    show_default=True,
    type=click.IntRange(20),
    help="Largest simulated sample per method and run.",
)
@click.option(
    "--runs", default=20, show_default=True, type=click.IntRange(1), help="Runs per pair."
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["train", "validation", "test", "all"]),
    help="Which queries of the benchmark.",
)
@click.option(
    "--queries",
    "max_queries",
    default=None,
    type=click.IntRange(1),
    help="At most this many queries (a seeded sample; default all of the split).",
)
@click.option(
    "--noise-share",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Share of searches clicking at random (default: the simulator's).",
)
@click.option(
    "--click-spread",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0),
    help="Coefficient of variation of each search's click propensity (0: the simulator as "
    "documented).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds everything.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the table."
)
@docs_option
def bench_interleave_cmd(
    data: Path,
    changes: tuple[float, ...],
    reference: float,
    distractors: int,
    max_searches: int,
    runs: int,
    split: str,
    max_queries: int | None,
    noise_share: float | None,
    click_spread: float,
    seed: int,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """Interleaving against an A/B split on simulated shoppers over DATA (a benchmark
    directory: catalog, queries, graded qrels): does interleaving's verdict agree with the
    offline NDCG@10 difference, and how many searches does each need to reach p < 0.05?"""
    import json

    from research.bench_interleave import DEFAULT_CHANGES, REPORT_KEY, run

    bench = run(
        data,
        changes=changes or DEFAULT_CHANGES,
        reference=reference,
        distractors=distractors,
        max_searches=max_searches,
        runs=runs,
        split=None if split == "all" else split,
        max_queries=max_queries,
        noise_share=noise_share,
        click_spread=click_spread,
        seed=seed,
    )
    report = bench.markdown()
    click.echo(json.dumps(bench.as_dict()) if as_json else report)
    _publish_text(docs_page, REPORT_KEY if click_spread == 0 else f"{REPORT_KEY}-spread", report)


@click.command("bench-analytics")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-analytics"),
    show_default=True,
    help="Where the synthetic log (log/, reused when it is the same one) and the report go.",
)
@click.option(
    "--searches",
    default=10_000_000,
    show_default=True,
    type=click.IntRange(1000),
    help="Logged searches (plus the clicks, carts and purchases they draw).",
)
@click.option(
    "--days", default=30, show_default=True, type=click.IntRange(1), help="UTC days they span."
)
@click.option(
    "--segment-searches",
    default=100_000,
    show_default=True,
    type=click.IntRange(1000),
    help="Searches per Parquet segment.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the synthetic log.")
@click.option(
    "--fresh", is_flag=True, help="Generate the log again even when workdir holds the same one."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the table."
)
@docs_option
def bench_analytics_cmd(
    workdir: Path,
    searches: int,
    days: int,
    segment_searches: int,
    seed: int,
    fresh: bool,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """A full analytics report's time over N synthetic logged searches (first run in the
    process and a second one), and the log's size on disk."""
    import json

    from research.bench_analytics import run

    bench = run(workdir, searches, days, segment_searches, seed, reuse=not fresh)
    click.echo(json.dumps(bench.as_dict()) if as_json else bench.markdown())
    click.echo(f"wrote {workdir / 'analytics.md'} and {workdir / 'analytics.json'}", err=True)
    _publish(docs_page, workdir / "analytics.md")


@click.command("bench-fusion")
@click.argument(
    "data", type=click.Path(exists=True, file_okay=False, path_type=Path), default="runs/hd"
)
@click.option(
    "--index",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="An index of DATA's catalog (e.g. runs/typo-before/index-53aa51172d142c89); its "
    "recorded fusion is not used: each source's list is fetched and fused here.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/fusion"),
    show_default=True,
    help="Cached lists, the synthetic shop's catalog and index, fusion.json and fusion.md.",
)
@click.option(
    "--sample-products",
    default=2000,
    show_default=True,
    type=click.IntRange(0),
    help="Products of the synthetic shop with judgments from its category tree (0: leave it out).",
)
@click.option(
    "--min-queries",
    default=30,
    show_default=True,
    type=click.IntRange(1),
    help="A Home Depot sub-shop with fewer scored queries is left out.",
)
@click.option("--device", default=None, help="Torch device of the query tower.")
@click.option(
    "--latency-only",
    "latency_queries",
    type=click.IntRange(1),
    default=None,
    help="Instead of the quality runs, time this many test queries through the retriever with "
    "equal-weight RRF and with words-first, in turn (what the default's structural step costs).",
)
@docs_option
def bench_fusion_cmd(
    data: Path,
    index: Path,
    workdir: Path,
    sample_products: int,
    min_queries: int,
    device: str | None,
    latency_queries: int | None,
    docs_page: Path | None,
) -> None:
    """Which hybrid fusion holds across data: weighted RRF at several dense shares, each list
    alone and rules from the lists' structure, on DATA's test split, its sub-shops (by
    department, by query type) and a synthetic shop; paired tests against equal-weight RRF and
    BM25, and each rule's worst case."""
    from research.bench_fusion import LATENCY_KEY, REPORT_KEY, fusion_latency, run_fusion_benchmark

    if latency_queries is not None:
        block = fusion_latency(data, index, latency_queries)
        click.echo(block)
        _publish_text(docs_page, LATENCY_KEY, block)
        return
    report = run_fusion_benchmark(
        data,
        index,
        workdir,
        sample_products=sample_products,
        min_queries=min_queries,
        device=device,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report.markdown())
    click.echo(f"\nwrote {workdir}/fusion.md and fusion.json ({report.seconds:.0f} s)", err=True)
    _publish_text(docs_page, REPORT_KEY, report.markdown(), report.machine)


@click.command("bench-suggest")
@click.option(
    "--searches",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(100),
    help="Searches in the synthetic log (45% followed by a click).",
)
@click.option(
    "--products",
    default=20_000,
    show_default=True,
    type=click.IntRange(10),
    help="Products of the synthetic sample catalog (without --catalog).",
)
@click.option(
    "--catalog",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A catalog file instead of the sample (e.g. runs/hd/catalog.parquet).",
)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file with a 'query' column: the log's queries (e.g. runs/hd/queries.parquet, "
    "Home Depot's); default: made from the catalog's titles, brands and categories.",
)
@click.option(
    "--calls",
    default=20_000,
    show_default=True,
    type=click.IntRange(100),
    help="Timed suggest() calls (prefixes of 1 to 10 characters, 20% with a typo).",
)
@click.option(
    "--min-shoppers", default=5, show_default=True, type=click.IntRange(1), help="The guard."
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seeds the log and the prefixes."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-suggest"),
    show_default=True,
    help="Where the synthetic log goes (rewritten at each run).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the figures as JSON instead of the tables."
)
@docs_option
def bench_suggest_cmd(
    searches: int,
    products: int,
    catalog: Path | None,
    queries_file: Path | None,
    calls: int,
    min_shoppers: int,
    seed: int,
    workdir: Path,
    as_json: bool,
    docs_page: Path | None,
) -> None:
    """Search-box suggestions at scale: build time and memory of the Suggester over a
    synthetic search log, and p50/p99 of suggest() over typed prefixes (some with typos)."""
    import json

    from research.bench_suggest import REPORT_KEY, run

    bench = run(
        workdir,
        searches=searches,
        products=products,
        catalog=catalog,
        queries_file=queries_file,
        calls=calls,
        min_shoppers=min_shoppers,
        seed=seed,
    )
    report = bench.markdown()
    click.echo(json.dumps(bench.as_dict()) if as_json else report)
    _publish_text(docs_page, REPORT_KEY, report)


@click.command("bench-ltr")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("index", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/ltr"),
    show_default=True,
    help="Where the cached candidates, the models and report.md/json go.",
)
@click.option(
    "--depth",
    default=50,
    show_default=True,
    type=click.IntRange(2, 100),
    help="Candidates the learned stage reorders (the rerank depth).",
)
@click.option(
    "--reranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A trained cross-encoder: its logit becomes a feature (and an ablation without it).",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="LightGBM training threads.",
)
@click.option("--seed", default=13, show_default=True, type=int, help="Training seed.")
@click.option(
    "--train-lists",
    default=None,
    type=click.IntRange(1),
    help="Train on a seeded sample of this many training lists, of the queries the "
    "cross-encoder was not trained on (scoring every list costs ~2 ms a pair); default: all.",
)
@click.option(
    "--val-lists",
    default=None,
    type=click.IntRange(1),
    help="Early-stop on a seeded sample of this many validation lists; default: all.",
)
@click.option(
    "--reranker-threads",
    default=None,
    type=click.IntRange(1),
    help="The cross-encoder's threads (1 beside other jobs); default: the physical cores.",
)
@click.option(
    "--e2e-queries",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="Test queries timed end to end (retrieve + relevance stage); 0: none.",
)
@click.option(
    "--latency-only",
    is_flag=True,
    help="Only time the learned stage (new against its first implementation, in turn), on "
    "the test candidates and the model-full a previous run left in --workdir; its own block "
    "in --docs.",
)
@click.option(
    "--latency-baseline",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="With --latency-only: a learned ranker folder the first implementation is timed with "
    "(the stage as it was: its code and its model); default: the same model-full.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    callback=_parse_variants,
    help="BACKEND[:int8] of the same cross-encoder (exported by 'shopsearch optimize'), e.g. "
    "onnx:int8: the test lists are scored again with it, and the blend and the learned stage "
    "on its logits are paired-tested against fp32 torch. Needs --reranker; once at most.",
)
@docs_option
def bench_ltr_cmd(
    data: Path,
    index: Path,
    workdir: Path,
    depth: int,
    reranker: str | None,
    threads: int,
    seed: int,
    train_lists: int | None,
    val_lists: int | None,
    reranker_threads: int | None,
    e2e_queries: int,
    latency_only: bool,
    latency_baseline: str | None,
    variants: list[tuple[str, str | None]],
    docs_page: Path | None,
) -> None:
    """The learned final stage on DATA's test split: BM25, hybrid, hybrid + learned stage and
    its ablation without lexical features (NDCG@10, Recall@100, paired tests), feature
    importances, and the stage's latency; candidates come from INDEX (cached in --workdir)."""
    from research.bench_ltr import REPORT_KEY, run

    if len(variants) > 1:
        raise click.BadParameter("give --variant once (one other runtime per run)")
    if variants and reranker is None:
        raise click.BadParameter("--variant scores the cross-encoder another way: give --reranker")
    if latency_only:
        from research import bench_ltr_latency

        timed = bench_ltr_latency.run(
            index, workdir, depth, log=stderr_log, baseline=latency_baseline
        )
        text = timed.markdown()
        click.echo(text)
        _publish_text(docs_page, bench_ltr_latency.REPORT_KEY, text)
        return
    report = run(
        data,
        index,
        workdir,
        depth,
        reranker,
        threads,
        seed,
        log=stderr_log,
        train_lists=train_lists,
        e2e_queries=e2e_queries,
        val_lists=val_lists,
        reranker_threads=reranker_threads,
        variant=variants[0] if variants else None,
    )
    text = report.markdown()
    click.echo(text)
    _publish_text(docs_page, REPORT_KEY, text)


def _parse_models(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict:
    """--model NAME=FOLDER (repeatable) -> {name: folder}, in the order given."""
    out: dict[str, str] = {}
    for item in value:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{item!r}: give NAME=FOLDER, e.g. MNRL=models/retriever")
        if name in out:
            raise click.BadParameter(f"{name!r} given twice: give each model its own name")
        if not Path(folder).is_dir():
            raise click.BadParameter(f"{folder!r} is not a folder")
        out[name] = folder
    return out


@click.command("bench-distill")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    callback=_parse_models,
    help="NAME=FOLDER of a bi-encoder (repeatable); the first is the baseline.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/distill"),
    show_default=True,
    help="Where the indexes (one per model, reused) and report.md/json go.",
)
@docs_option
def bench_distill_cmd(
    data: Path, models: dict[str, str], workdir: Path, docs_page: Path | None
) -> None:
    """Bi-encoders of different recipes (e.g. MNRL against MarginMSE distillation) on DATA's
    test split: dense and hybrid NDCG@10 and Recall@100, paired tests against the first."""
    from research.bench_distill import REPORT_KEY, run

    report = run(data, models, workdir, log=stderr_log)
    text = report.markdown()
    click.echo(text)
    _publish_text(docs_page, REPORT_KEY, text)


COMMANDS = [
    sample_catalog,
    demo_cmd,
    bench_cmd,
    simulate_cmd,
    bench_typo_cmd,
    bench_synonyms_cmd,
    bench_depth_cmd,
    bench_personal_cmd,
    bench_index_cmd,
    bench_faults_cmd,
    bench_storefront_cmd,
    bench_rules_cmd,
    bench_searchlog_cmd,
    bench_profiles_cmd,
    bench_update_cmd,
    bench_interleave_cmd,
    bench_analytics_cmd,
    bench_suggest_cmd,
    bench_fusion_cmd,
    bench_ltr_cmd,
    bench_distill_cmd,
]

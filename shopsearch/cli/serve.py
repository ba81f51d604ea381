"""``shopsearch serve``: the HTTP search service (FastAPI on uvicorn).

One command of the CLI group (``shopsearch serve``). Every setting is an option or its
``SHOPSEARCH_*`` variable (docs/configuration.md); the command checks them, then sets those
variables for its uvicorn workers, which read them back the same way
(``ServiceSettings.from_env``). Keys come from the environment only (``SHOPSEARCH_API_KEY``,
``SHOPSEARCH_ADMIN_KEY``, ``SHOPSEARCH_QDRANT_API_KEY``, ``SHOPSEARCH_PSEUDONYM_KEY``), never
from options, so they do not show in a process list; an API or admin key that is set but blank
refuses to start. The workers' intra-op threads (``--threads``, else cores/N with ``--workers
N``) travel the same way, as ``SHOPSEARCH_THREADS``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

import click

from core.errors import ShopsearchError
from shopsearch.cli.options import (
    backend_options,
    profiles_location,
    profiles_option,
    pseudonym_key,
    rules_dir_option,
)

APP = "shopsearch.service.main:create_app_from_env"
API_KEY_ENV = "SHOPSEARCH_API_KEY"
ADMIN_KEY_ENV = "SHOPSEARCH_ADMIN_KEY"
QDRANT_API_KEY_ENV = "SHOPSEARCH_QDRANT_API_KEY"


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@click.command("serve")
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SHOPSEARCH_INDEX",
    help="Directory of the embedded (qdrant-edge) index; it must exist, and may be empty: a "
    "new build of it (the first one too) is picked up without a restart. Env: SHOPSEARCH_INDEX.",
)
@click.option(
    "--qdrant-url",
    envvar="SHOPSEARCH_QDRANT_URL",
    help="Qdrant server URL, instead of --index. Env: SHOPSEARCH_QDRANT_URL "
    "(its key: SHOPSEARCH_QDRANT_API_KEY).",
)
@click.option(
    "--collection",
    default="products",
    show_default=True,
    envvar="SHOPSEARCH_COLLECTION",
    help="Collection (alias) on a server. Env: SHOPSEARCH_COLLECTION.",
)
@click.option(
    "--reranker",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="SHOPSEARCH_RERANKER",
    help="Cross-encoder folder (default: relevance is the first stage's). "
    "Env: SHOPSEARCH_RERANKER.",
)
@click.option(
    "--ranker",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="SHOPSEARCH_RANKER",
    help="A learned final stage folder (shopsearch train ranker): its score is the relevance, "
    "in place of the blend. Env: SHOPSEARCH_RANKER.",
)
@click.option(
    "--personal",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="SHOPSEARCH_PERSONAL",
    help="Personalization model folder (needs --profiles). Env: SHOPSEARCH_PERSONAL.",
)
@profiles_option("POST /events writes there and searches read it.")
@click.option(
    "--search-log",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="SHOPSEARCH_SEARCH_LOG",
    help="Folder for the search log (created when missing): every served search and posted "
    "event as one row, off the request's path, flushed every second, rotated to Parquet by "
    "size or UTC day; what train personal, vocabulary and the analytics read. Replicas may "
    "share it. Env: SHOPSEARCH_SEARCH_LOG.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; another than loopback without SHOPSEARCH_API_KEY is warned.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes; each opens the index (read-only) and the profile store, and "
    "runs cores/N inference threads unless --threads says otherwise.",
)
@click.option(
    "--device",
    default=None,
    envvar="SHOPSEARCH_DEVICE",
    help="Torch device for the models (default: CUDA when present). Env: SHOPSEARCH_DEVICE.",
)
@backend_options
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024),
    default=1_000_000,
    show_default=True,
    envvar="SHOPSEARCH_MAX_BODY_BYTES",
    help="Largest request body; a larger one is answered 413. Env: SHOPSEARCH_MAX_BODY_BYTES.",
)
@click.option(
    "--rerank-depth",
    type=click.IntRange(1),
    default=None,
    envvar="SHOPSEARCH_RERANK_DEPTH",
    help="Candidates the reranker reads per search (default 50; at least offset + k). "
    "Fewer is faster: see the README's rerank-depth table. Env: SHOPSEARCH_RERANK_DEPTH.",
)
@rules_dir_option
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
    envvar="SHOPSEARCH_LOG_LEVEL",
    help="Level of the service's logs (one JSON line per request at INFO). "
    "Env: SHOPSEARCH_LOG_LEVEL.",
)
@click.option(
    "--interleave-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    envvar="SHOPSEARCH_INTERLEAVE_SHARE",
    help="Share of shoppers whose searches are a team-draft interleaving of this ranker (A) "
    "and the challenger (B: --interleave-personal / --interleave-reranker / "
    "--interleave-ranker); 0: none. "
    "Env: SHOPSEARCH_INTERLEAVE_SHARE.",
)
@click.option(
    "--interleave-name",
    default=None,
    envvar="SHOPSEARCH_INTERLEAVE_NAME",
    help="The experiment's name, in the search log and 'shopsearch interleave report'. "
    "Env: SHOPSEARCH_INTERLEAVE_NAME.",
)
@click.option(
    "--interleave-personal",
    default=None,
    envvar="SHOPSEARCH_INTERLEAVE_PERSONAL",
    help="B's personalization model folder, or 'none' for B without personalization "
    "(default: A's). Env: SHOPSEARCH_INTERLEAVE_PERSONAL.",
)
@click.option(
    "--interleave-reranker",
    default=None,
    envvar="SHOPSEARCH_INTERLEAVE_RERANKER",
    help="B's cross-encoder folder, or 'none' for B without one (default: A's). "
    "Env: SHOPSEARCH_INTERLEAVE_RERANKER.",
)
@click.option(
    "--interleave-ranker",
    default=None,
    envvar="SHOPSEARCH_INTERLEAVE_RANKER",
    help="B's learned final stage folder (shopsearch train ranker), or 'none' for B with the "
    "blend (default: A's). Env: SHOPSEARCH_INTERLEAVE_RANKER.",
)
@click.option(
    "--interleave-anonymous/--no-interleave-anonymous",
    default=False,
    show_default=True,
    envvar="SHOPSEARCH_INTERLEAVE_ANONYMOUS",
    help="Interleave anonymous searches too (drawn by session or query); default: shoppers "
    "with an id only. Env: SHOPSEARCH_INTERLEAVE_ANONYMOUS.",
)
@click.option(
    "--suggest-min-shoppers",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    envvar="SHOPSEARCH_SUGGEST_MIN_SHOPPERS",
    help="Distinct shoppers a logged query needs before GET /suggest offers it (k-anonymity). "
    "Env: SHOPSEARCH_SUGGEST_MIN_SHOPPERS.",
)
def serve(
    index_dir: Path | None,
    qdrant_url: str | None,
    collection: str,
    reranker: Path | None,
    ranker: Path | None,
    personal: Path | None,
    profiles: Path | None,
    search_log: Path | None,
    host: str,
    port: int,
    workers: int,
    device: str | None,
    backend: str,
    quantize: str | None,
    threads: int | None,
    max_body_bytes: int,
    rerank_depth: int | None,
    rules_dir: Path | None,
    log_level: str,
    interleave_share: float,
    interleave_name: str | None,
    interleave_personal: str | None,
    interleave_reranker: str | None,
    interleave_ranker: str | None,
    interleave_anonymous: bool,
    suggest_min_shoppers: int,
) -> None:
    """Serve search over HTTP: /search, /events, /users/{id}, /metrics, a page at /."""
    import uvicorn

    from inference.backend import worker_threads
    from shopsearch.service.metrics import MULTIPROC_ENV
    from shopsearch.service.settings import ServiceSettings

    if index_dir is not None and qdrant_url:
        raise ShopsearchError(
            "Only one of --index or --qdrant-url should be specified "
            "(is SHOPSEARCH_QDRANT_URL set in the environment?)"
        )
    for name, folder in (
        ("--index", index_dir),
        ("--reranker", reranker),
        ("--ranker", ranker),
        ("--personal", personal),
        ("--rules-dir", rules_dir),
    ):
        if folder is not None and not folder.is_dir():
            raise ShopsearchError(f"{name} {folder}: no such directory")
    if isinstance(profiles, str):  # a postgresql:// URL: no folder to keep the key in
        from personalization.profiles_pg import require_key

        require_key(profiles, pseudonym_key())
    challenger = {
        "personal": interleave_personal,
        "reranker": interleave_reranker,
        "ranker": interleave_ranker,
    }
    for stage, value in challenger.items():
        if value is not None and value.strip().lower() not in ("", "none"):
            if not Path(value).is_dir():
                raise ShopsearchError(
                    f"--interleave-{stage} {value}: no such directory (a folder, or 'none')"
                )
            challenger[stage] = str(Path(value).resolve())
    if threads is None and workers > 1:
        # each worker searches one query at a time: the workers share the cores rather than
        # each running as many threads as there are cores (--threads, or its variable: as given)
        threads = worker_threads(workers)
    state_dir = tempfile.mkdtemp(prefix="shopsearch-serve-")
    try:
        # the keys as the environment has them: set but blank is refused, not taken as unset
        settings = ServiceSettings(
            index=str(index_dir.resolve()) if index_dir is not None else None,
            qdrant_url=qdrant_url or None,
            qdrant_api_key=os.environ.get(QDRANT_API_KEY_ENV),
            collection=collection,
            reranker=str(reranker.resolve()) if reranker is not None else None,
            ranker=str(ranker.resolve()) if ranker is not None else None,
            personal=str(personal.resolve()) if personal is not None else None,
            profiles=profiles_location(profiles),
            device=device,
            backend=backend,
            quantize=quantize,
            api_key=os.environ.get(API_KEY_ENV),
            admin_key=os.environ.get(ADMIN_KEY_ENV),
            max_body_bytes=max_body_bytes,
            state_dir=state_dir if workers > 1 else None,
            rerank_depth=rerank_depth,
            log_level=log_level,
            threads=threads,
            pseudonym_key=pseudonym_key(),
            rules_dir=str(rules_dir.resolve()) if rules_dir is not None else None,
            search_log=str(search_log.resolve()) if search_log is not None else None,
            interleave_share=interleave_share,
            interleave_name=interleave_name,
            interleave_personal=challenger["personal"],
            interleave_reranker=challenger["reranker"],
            interleave_ranker=challenger["ranker"],
            interleave_anonymous=interleave_anonymous,
            suggest_min_shoppers=suggest_min_shoppers,
        )
        if not is_loopback(host) and settings.api_key is None:
            click.echo(
                f"warning: listening on {host} without an API key: anyone who can reach it "
                f"can search and send events; set {API_KEY_ENV}",
                err=True,
            )
        # the workers read exactly these variables (ServiceSettings.from_env)
        for var in ServiceSettings.variables():
            os.environ.pop(var, None)
        os.environ.update(settings.to_env())
        if workers > 1:
            # every worker writes its metrics here and /metrics sums them
            metrics_dir = Path(state_dir) / "metrics"
            metrics_dir.mkdir()
            os.environ[MULTIPROC_ENV] = str(metrics_dir)
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,  # its lines carry the raw path (shopper ids): ours do not
            log_level=log_level.lower(),
            timeout_graceful_shutdown=10,
        )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


COMMANDS = [serve]

"""Option decorators shared by several commands: where the index is, filters, device, progress.

The command line is where ``SHOPSEARCH_*`` variables are read (click ``envvar=``, or
:func:`pseudonym_key`); the library takes their values as parameters.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import click

from core.errors import ShopsearchError
from personalization.privacy import KEY_ENV
from retrieval.filters import Filters

#: Intra-op CPU threads of the models (``--threads``; the service's ``threads`` setting).
THREADS_ENV = "SHOPSEARCH_THREADS"

INDEX_HELP = "Directory of the embedded (qdrant-edge) index."
URL_HELP = "Qdrant server URL, instead of --index (e.g. http://localhost:6333)."
PROFILES_HELP = (
    "Directory of the shopper profile store (SQLite + the pseudonym key), or a "
    "postgresql://user@host/db URL of the store several replicas share (password in "
    "PGPASSWORD; the key in SHOPSEARCH_PSEUDONYM_KEY)."
)
DEVICE_HELP = "Torch device (default: cuda when present, else cpu)."


def index_options(fn):
    """--index / --qdrant-url / --api-key / --collection, on every command that opens an index."""

    @click.option(
        "--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), help=INDEX_HELP
    )
    @click.option(
        "--qdrant-url",
        envvar="SHOPSEARCH_QDRANT_URL",
        help=URL_HELP + " Env: SHOPSEARCH_QDRANT_URL.",
    )
    @click.option(
        "--api-key",
        envvar="SHOPSEARCH_QDRANT_API_KEY",
        help="Qdrant API key. Env: SHOPSEARCH_QDRANT_API_KEY.",
    )
    @click.option(
        "--collection",
        default="products",
        show_default=True,
        help="Collection (alias) name on a server.",
    )
    @functools.wraps(fn)
    def wrapper(*args, index_dir, qdrant_url, api_key, collection, **kwargs):
        from retrieval.store import IndexLocation

        if index_dir is not None and qdrant_url:
            raise ShopsearchError(
                "Only one of --index or --qdrant-url should be specified "
                "(is SHOPSEARCH_QDRANT_URL set in the environment?)"
            )
        location = IndexLocation(
            path=index_dir, url=qdrant_url or None, api_key=api_key, collection=collection
        )
        return fn(*args, location=location, **kwargs)

    return wrapper


def filter_options(fn):
    """--filter EXPR / --category / --brand / --min-price / --max-price / --in-stock."""

    @click.option(
        "--filter",
        "where",
        default=None,
        metavar="EXPR",
        help="Filter expression over the index's filterable fields (`shopsearch info` lists "
        "them), ANDed with the options below, e.g. 'voltage >= 18 AND brand IN [DeWalt, "
        "Makita]', 'price 10 TO 50', 'NOT in_stock = false'.",
    )
    @click.option(
        "--category",
        default=None,
        help="Category path or a prefix of it, e.g. 'Tools > Power Tools'.",
    )
    @click.option(
        "--brand", "brands", multiple=True, help="Brand to keep (repeat for any of several)."
    )
    @click.option("--min-price", type=click.FloatRange(0), default=None, help="Lowest price.")
    @click.option("--max-price", type=click.FloatRange(0), default=None, help="Highest price.")
    @click.option(
        "--in-stock/--any-stock", "in_stock", default=None, help="Only products in stock."
    )
    @functools.wraps(fn)
    def wrapper(*args, where, category, brands, min_price, max_price, in_stock, **kwargs):
        filters = Filters(
            category=category,
            brands=tuple(brands) or None,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock or None,
            where=where,
        )
        return fn(*args, filters=filters, **kwargs)

    return wrapper


def backend_options(fn):
    """--backend / --quantize / --threads: how the models run (torch, or an optimized copy).

    Passes ``backend`` (torch|onnx|openvino), ``quantize`` (None|"int8") and ``threads`` (the
    intra-op CPU threads of torch, ONNX Runtime and OpenVINO; None: the physical cores) on, to
    be handed to the models' ``threads=``. A command without a ``threads`` parameter (the
    research benchmarks: until they take it) gets ``--threads`` as ``SHOPSEARCH_THREADS`` in
    the environment instead, for the processes it starts.
    """
    takes_threads = "threads" in inspect.signature(fn).parameters

    @click.option(
        "--backend",
        type=click.Choice(["torch", "onnx", "openvino"]),
        default="torch",
        show_default=True,
        envvar="SHOPSEARCH_BACKEND",
        help="How the encoder and reranker run: torch, ONNX Runtime or OpenVINO (the copy "
        "'shopsearch optimize' wrote into the model folder). Env: SHOPSEARCH_BACKEND.",
    )
    @click.option(
        "--quantize",
        type=click.Choice(["int8"]),
        default=None,
        envvar="SHOPSEARCH_QUANTIZE",
        help="Run the int8 copy (onnx/openvino only). Env: SHOPSEARCH_QUANTIZE.",
    )
    @click.option(
        "--threads",
        type=click.IntRange(1),
        default=None,
        envvar=THREADS_ENV,
        help=f"Intra-op CPU threads (default: physical cores). Env: {THREADS_ENV}.",
    )
    @functools.wraps(fn)
    def wrapper(*args, backend, quantize, threads, **kwargs):
        from inference.backend import check_backend  # imports torch: not at --help

        check_backend(backend, quantize)
        if takes_threads:
            kwargs["threads"] = threads
        elif threads is not None:
            os.environ[THREADS_ENV] = str(threads)
        return fn(*args, backend=backend, quantize=quantize, **kwargs)

    return wrapper


#: The shop's managed lists (merchandising rules, synonyms) of a server index; an embedded
#: index keeps them in its own directory.
RULES_DIR_ENV = "SHOPSEARCH_RULES_DIR"

rules_dir_option = click.option(
    "--rules-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=RULES_DIR_ENV,
    help="Directory of the shop's rules.json and synonyms.json (default: the --index "
    f"directory; needed for a --qdrant-url index). Env: {RULES_DIR_ENV}.",
)
"""--rules-dir: where merchandising rules and synonyms are kept."""

device_option = click.option("--device", default=None, help=DEVICE_HELP)
"""--device: the torch device a command's models run on."""

progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
"""--progress/--no-progress."""


class ProfilesLocation(click.ParamType):
    """A profile directory (a ``Path``) or a ``postgresql://`` URL (kept as text: a ``Path``
    would fold its ``//``)."""

    name = "DIR|URL"

    def convert(self, value, param, ctx):
        from personalization.profiles_pg import is_store_url

        if is_store_url(value):
            return value.strip()
        return click.Path(file_okay=False, path_type=Path).convert(value, param, ctx)


def profiles_location(profiles: Path | str | None) -> str | None:
    """What the service's settings keep of ``--profiles``: an absolute directory, or the URL."""
    if profiles is None or isinstance(profiles, str):
        return profiles
    return str(profiles.resolve())


def profiles_option(use: str | None = None, required: bool = False):
    """--profiles DIR|URL: the shopper profile store; ``use`` tells what this command does with
    it."""
    return click.option(
        "--profiles",
        type=ProfilesLocation(),
        required=required,
        default=None,
        help=PROFILES_HELP + (f" {use}" if use else ""),
    )


def pseudonym_key() -> str | None:
    """The profiles' pseudonym key from ``SHOPSEARCH_PSEUDONYM_KEY`` (None: the key file).

    Read here, not by the library, and never an option: a key on the command line would show
    in the process list.
    """
    return os.environ.get(KEY_ENV, "").strip() or None


def stderr_log(message: str) -> None:
    """Progress messages go to stderr, so stdout stays the command's result."""
    click.echo(message, err=True)

"""The Home Depot importer: ``train.csv`` of the Kaggle product search relevance task into a
benchmark directory (:mod:`evaluation.data`'s format), split by query, written atomically."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from core.errors import ShopsearchError
from evaluation.data import (
    CATALOG_FILE,
    EXAMPLES,
    FORMAT_VERSION,
    MANIFEST_FILE,
    QRELS_FILE,
    QUERIES_FILE,
    SPLITS,
    examples,
    member_of,
    require_columns,
)

#: Home Depot conventions (see shared/data/README.md): relevant iff grade >= 2.5; gain grade - 1.
HOMEDEPOT_THRESHOLD = 2.5
HOMEDEPOT_GAIN_OFFSET = 1.0
HOMEDEPOT_COLUMNS = ("id", "product_uid", "product_title", "search_term", "relevance")


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_homedepot` wrote.

    Attributes:
        out_dir: The benchmark directory.
        products: Catalog rows.
        queries: Distinct queries.
        qrels: Judgments after merging duplicates.
        queries_per_split: split -> number of queries.
        relevant_queries_per_split: split -> queries with a product graded >= the threshold.
        duplicate_pairs_averaged: (query, product) pairs judged more than once (grades averaged).
        seconds: Wall time of the import.
        problems: What was dropped, merged or fixed, one message per kind.
    """

    out_dir: Path
    products: int
    queries: int
    qrels: int
    queries_per_split: dict[str, int]
    relevant_queries_per_split: dict[str, int]
    duplicate_pairs_averaged: int
    seconds: float
    problems: tuple[str, ...] = ()

    @property
    def test_queries_with_relevant(self) -> int:
        """Test queries that have at least one relevant product (those the benchmark scores)."""
        return self.relevant_queries_per_split.get("test", 0)


def _query_key(text: str) -> str:
    return " ".join(text.split()).lower()


def _hash_key(key: str) -> str:
    return "q" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def query_id_for(text: str) -> str:
    """Stable id of a query: ``"q"`` + 10 hex digits of sha1 of its normalised text.

    Normalisation: whitespace collapsed and trimmed, lower-cased (so ``"Fence  Mesh"`` and
    ``"fence mesh"`` are one query).
    """
    return _hash_key(_query_key(text))


def assign_splits(
    query_ids: Sequence[str], seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, str]:
    """Deterministic split by query: shuffle the sorted distinct ids with ``default_rng(seed)``.

    The first ``round(f_train * n)`` shuffled ids go to train, the next ``round(f_val * n)`` to
    validation, the rest to test.

    Returns:
        query_id -> split name.
    """
    fractions = _check_fractions(fractions)
    ids = sorted(set(query_ids))
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_train = min(n, math.floor(fractions[0] * n + 0.5))
    n_val = min(n - n_train, math.floor(fractions[1] * n + 0.5))
    out: dict[str, str] = {}
    for position, index in enumerate(order):
        if position < n_train:
            out[ids[index]] = "train"
        elif position < n_train + n_val:
            out[ids[index]] = "validation"
        else:
            out[ids[index]] = "test"
    return out


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not 0 <= f <= 1 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise ShopsearchError(
            f"split fractions must be three numbers in [0, 1] summing to 1 "
            f"(train, validation, test), got {tuple(fractions)}"
        )
    return values  # type: ignore[return-value]


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ShopsearchError(
            f"{out_dir}: exists and is not a directory; choose another output path"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ShopsearchError(
            f"{out_dir}: directory is not empty; pass overwrite=True (--overwrite) to replace it"
        )


def _read_homedepot(csv_path: Path) -> tuple[pl.DataFrame, str]:
    if not csv_path.is_file():
        raise ShopsearchError(f"{csv_path}: file not found")
    raw = csv_path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    # latin-1 maps every byte, so decoding never fails; re-encode as UTF-8 for polars.
    text = raw.decode("latin-1")
    try:
        df = pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise ShopsearchError(f"{csv_path}: cannot parse as CSV ({exc})") from exc
    require_columns(df, HOMEDEPOT_COLUMNS[1:], str(csv_path))
    return df, digest


def _write_atomically(
    out_dir: Path, overwrite: bool, frames: dict[str, pl.DataFrame], manifest: dict
) -> None:
    """Writes the benchmark into a temporary directory beside ``out_dir``, then swaps it in.

    A directory, not a file (:func:`core.io.atomic_write` replaces files): an existing
    ``out_dir`` is moved aside first, and put back if the swap fails.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the benchmark is ordinary shared data
    try:
        for name, frame in frames.items():
            frame.write_parquet(tmp / name)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _check_out_dir(out_dir, overwrite)
        if out_dir.is_dir():
            old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            out_dir.rename(old)
            try:
                tmp.rename(out_dir)
            except OSError:
                old.rename(out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def import_homedepot(
    csv_path: str | Path,
    out_dir: str | Path,
    seed: int = 13,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    overwrite: bool = False,
) -> ImportSummary:
    """Turn the Home Depot ``train.csv`` (latin-1) into a benchmark directory.

    Catalog: every distinct ``product_uid`` (title = first ``product_title`` seen; brand null).
    Queries: one per distinct normalised ``search_term`` (see :func:`query_id_for`), split by
    query with :func:`assign_splits`. Qrels: ``relevance`` as the grade, averaged over
    duplicate (query, product) pairs. Written to a temporary directory beside ``out_dir`` and
    renamed into place.

    Raises:
        ShopsearchError: Missing file or columns, bad fractions, or a non-empty ``out_dir``
            without ``overwrite``.
    """
    started = time.perf_counter()
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    fractions = _check_fractions(fractions)
    _check_out_dir(out_dir, overwrite)
    df, digest = _read_homedepot(csv_path)
    problems: list[str] = []

    df = df.with_columns(
        pl.col("product_uid").str.strip_chars().alias("product_id"),
        pl.col("product_title").str.strip_chars().alias("title"),
        pl.col("search_term").str.replace_all(r"\s+", " ").str.strip_chars().alias("query"),
        pl.col("relevance").str.strip_chars().cast(pl.Float64, strict=False).alias("grade"),
    )
    no_id = pl.col("product_id").is_null() | (pl.col("product_id") == "")
    n_bad = df.filter(no_id).height
    if n_bad:
        problems.append(f"{csv_path.name}: {n_bad} rows have no product_uid; ignored")
        df = df.filter(~no_id)

    # Catalog: every product with a title; first title per product in file order.
    has_title = pl.col("title").is_not_null() & (pl.col("title") != "")
    titles = (
        df.filter(has_title)
        .group_by("product_id", maintain_order=True)
        .agg(pl.col("title").first(), pl.col("title").n_unique().alias("n_titles"))
    )
    conflicting = titles.filter(pl.col("n_titles") > 1)["product_id"].to_list()
    if conflicting:
        problems.append(
            f"{csv_path.name}: {len(conflicting)} product_uids carry more than one title"
            f"{examples(conflicting)}; the first title of each is kept"
        )
    untitled = df.filter(~member_of("product_id", titles["product_id"]))
    if untitled.height:
        ids = untitled["product_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{csv_path.name}: {len(ids)} product_uids never have a product_title"
            f"{examples(ids)}; they and their {untitled.height} judgments are ignored"
        )
        df = df.filter(member_of("product_id", titles["product_id"]))
    catalog = titles.select("product_id", "title", pl.lit(None, dtype=pl.Utf8).alias("brand")).sort(
        "product_id"
    )

    # Judgments need a query text and a numeric grade.
    checks = [
        (pl.col("query").is_null() | (pl.col("query") == ""), "an empty search_term"),
        (pl.col("grade").is_null() | ~pl.col("grade").is_finite(), "a non-numeric relevance"),
    ]
    for bad, what in checks:
        rows = df.filter(bad.fill_null(True))
        if rows.height:
            row_ids = rows["id"].to_list()[:EXAMPLES] if "id" in rows.columns else []
            shown = f" (id {', '.join(map(str, row_ids))})" if row_ids else ""
            problems.append(f"{csv_path.name}: {rows.height} rows have {what}{shown}; ignored")
            df = df.filter(~bad.fill_null(True))
    if df.height == 0:
        raise ShopsearchError(f"{csv_path}: no usable judgment ({'; '.join(problems)})")

    # Queries: id from the normalised text; the first spelling seen is kept as the text.
    distinct_text = df["query"].unique(maintain_order=True).to_list()
    keys = [_query_key(t) for t in distinct_text]
    query_ids = [_hash_key(k) for k in keys]
    if len(set(query_ids)) != len(set(keys)):  # pragma: no cover - a 40-bit sha1 prefix collision
        raise RuntimeError("query_id hash collision; lengthen the id in query_id_for")
    ids = pl.DataFrame(
        {"query": distinct_text, "query_id": query_ids},
        schema={"query": pl.Utf8, "query_id": pl.Utf8},
    )
    df = df.join(ids, on="query", how="left", maintain_order="left")
    spellings = df.group_by("query_id", maintain_order=True).agg(
        pl.col("query").first(), pl.col("search_term").unique(maintain_order=True).alias("forms")
    )
    merged = spellings.filter(pl.col("forms").list.len() > 1)["forms"].to_list()
    if merged:
        problems.append(
            f"{csv_path.name}: {len(merged)} queries were typed in more than one way "
            f"(case/whitespace) and merged{examples([' / '.join(f) for f in merged])}"
        )
    split_of = assign_splits(spellings["query_id"].to_list(), seed, fractions)
    queries = spellings.select(
        "query_id",
        "query",
        pl.col("query_id").replace_strict(split_of, return_dtype=pl.Utf8).alias("split"),
    ).sort("query_id")

    # Qrels: average duplicate (query, product) judgments and report them.
    qrels = df.group_by("query_id", "product_id", maintain_order=True).agg(
        pl.col("grade").mean(), pl.len().alias("n")
    )
    dup = qrels.filter(pl.col("n") > 1)
    if dup.height:
        problems.append(
            f"{csv_path.name}: {dup.height} (query, product) pairs were judged more than once; "
            f"their grades were averaged{examples(list(dup.select('query_id', 'product_id').iter_rows()))}"
        )
    qrels = qrels.select("query_id", "product_id", "grade").sort("query_id", "product_id")

    per_split = queries.group_by("split").len()
    queries_per_split = {s: 0 for s in SPLITS} | dict(per_split.iter_rows())
    relevant = (
        qrels.filter(pl.col("grade") >= HOMEDEPOT_THRESHOLD)
        .select("query_id")
        .unique()
        .join(queries, on="query_id")
        .group_by("split")
        .len()
    )
    relevant_per_split = {s: 0 for s in SPLITS} | dict(relevant.iter_rows())
    qrels_per_split = {s: 0 for s in SPLITS} | dict(
        qrels.join(queries, on="query_id").group_by("split").len().iter_rows()
    )

    manifest = {
        "format": FORMAT_VERSION,
        "source": {
            "name": "homedepot-product-search-relevance/train.csv",
            "path": str(csv_path.resolve()),
            "sha256": digest,
            "encoding": "latin-1",
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "split_fractions": dict(zip(SPLITS, fractions, strict=True)),
        "relevance_threshold": HOMEDEPOT_THRESHOLD,
        "gain_offset": HOMEDEPOT_GAIN_OFFSET,
        "query_id": "q + first 10 hex of sha1(lower-cased, whitespace-collapsed query)",
        "counts": {
            "products": catalog.height,
            "queries": queries.height,
            "qrels": qrels.height,
            "queries_per_split": queries_per_split,
            "qrels_per_split": qrels_per_split,
            "queries_with_relevant_per_split": relevant_per_split,
            "duplicate_pairs_averaged": dup.height,
        },
        "problems": problems,
    }
    _write_atomically(
        out_dir,
        overwrite,
        {CATALOG_FILE: catalog, QUERIES_FILE: queries, QRELS_FILE: qrels},
        manifest,
    )
    return ImportSummary(
        out_dir=out_dir,
        products=catalog.height,
        queries=queries.height,
        qrels=qrels.height,
        queries_per_split=queries_per_split,
        relevant_queries_per_split=relevant_per_split,
        duplicate_pairs_averaged=dup.height,
        seconds=time.perf_counter() - started,
        problems=tuple(problems),
    )

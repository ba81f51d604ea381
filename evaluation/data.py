"""The benchmark data format, its loader and validator (the Home Depot importer: ``homedepot``).

A benchmark is a directory holding:

* ``catalog.parquet``: one row per product; ``product_id`` and ``title`` required, the other
  columns of :data:`catalog.schema.KNOWN_COLUMNS` optional (extra columns are kept).
* ``queries.parquet``: ``query_id`` (str), ``query`` (str), ``split`` (``train``,
  ``validation`` or ``test``).
* ``qrels.parquet``: ``query_id``, ``product_id``, ``grade`` (float); pairs not listed are
  unjudged and count as not relevant.
* ``manifest.json``: ``relevance_threshold`` and ``gain_offset`` (required), plus provenance:
  ``source``, ``created``, ``seed``, ``split_fractions``, ``counts``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from catalog.schema import Product
from catalog.text import product_text
from core.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import Qrels

FORMAT_VERSION = "shopsearch-benchmark/v1"
SPLITS = ("train", "validation", "test")
CATALOG_FILE = "catalog.parquet"
QUERIES_FILE = "queries.parquet"
QRELS_FILE = "qrels.parquet"
MANIFEST_FILE = "manifest.json"

#: Examples a problem message quotes.
EXAMPLES = 3


@dataclass(frozen=True, eq=False)
class BenchmarkData:
    """A loaded, validated benchmark.

    Attributes:
        catalog: Products (``product_id`` unique, str).
        queries: ``query_id``, ``query``, ``split`` (ids unique, splits valid).
        qrels: ``query_id``, ``product_id``, ``grade`` (only rows naming known queries/products).
        threshold: Minimum grade of a relevant product.
        gain_offset: NDCG gain is ``max(grade - gain_offset, 0)``.
        path: The benchmark directory.
        problems: What validation dropped or fixed, one message per kind of problem.
        manifest: The parsed ``manifest.json``.
    """

    catalog: pl.DataFrame
    queries: pl.DataFrame
    qrels: pl.DataFrame
    threshold: float
    gain_offset: float
    path: Path
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> tuple[pl.DataFrame, Qrels]:
        """Queries of one split and their judgments as ``query_id -> product_id -> grade``.

        Raises:
            ShopsearchError: ``name`` is not one of train, validation, test.
        """
        if name not in SPLITS:
            raise ShopsearchError(f"unknown split {name!r}: use one of {', '.join(SPLITS)}")
        queries = self.queries.filter(pl.col("split") == name)
        rows = self.qrels.filter(pl.col("query_id").is_in(queries["query_id"].implode()))
        qrels: Qrels = {}
        for qid, pid, grade in rows.select("query_id", "product_id", "grade").iter_rows():
            qrels.setdefault(qid, {})[pid] = grade
        return queries, qrels


# ----------------------------------------------------------------------------- validation


def examples(values: Sequence[Any]) -> str:
    """`` (e.g. 'a', 'b', 'c')``: the first :data:`EXAMPLES` values, for a problem message."""
    shown = ", ".join(repr(v) for v in values[:EXAMPLES])
    return f" (e.g. {shown})" if shown else ""


def require_columns(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuses a frame without one of ``columns`` (ShopsearchError naming ``what``)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ShopsearchError(
            f"{what}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns) or 'none'}"
        )


def _as_str(df: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Cast id columns to strings (integer ids are common in exports)."""
    return df.with_columns(pl.col(c).cast(pl.Utf8) for c in columns)


def member_of(column: str, allowed: pl.Series | set[str]) -> pl.Expr:
    """Null-safe membership: a null id is never a member."""
    values = (
        allowed if isinstance(allowed, pl.Series) else pl.Series(sorted(allowed), dtype=pl.Utf8)
    )
    return pl.col(column).is_in(values.implode()).fill_null(False)


def _valid_queries(queries: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Dedupe query ids (first row kept) and drop queries with an invalid split or empty text."""
    require_columns(queries, ("query_id", "query", "split"), QUERIES_FILE)
    queries = _as_str(queries, "query_id", "query", "split")
    problems: list[str] = []
    queries = _first_of_each(queries, "query_id", QUERIES_FILE, "query", problems)
    bad_split = queries.filter(~member_of("split", set(SPLITS)))
    if bad_split.height:
        problems.append(
            f"{QUERIES_FILE}: {bad_split.height} queries have a split other than "
            f"{'/'.join(SPLITS)}{examples(bad_split['split'].to_list())}; "
            "they and their judgments are ignored"
        )
    null_id = queries.filter(pl.col("query_id").is_null() | (pl.col("query_id") == ""))
    if null_id.height:
        problems.append(f"{QUERIES_FILE}: {null_id.height} queries have no query_id; ignored")
    empty = queries.filter(pl.col("query").is_null() | (pl.col("query").str.strip_chars() == ""))
    if empty.height:
        problems.append(
            f"{QUERIES_FILE}: {empty.height} queries have an empty text"
            f"{examples(empty['query_id'].to_list())}; they and their judgments are ignored"
        )
    keep = (
        member_of("split", set(SPLITS))
        & pl.col("query_id").is_not_null()
        & (pl.col("query_id") != "")
        & pl.col("query").is_not_null()
        & (pl.col("query").str.strip_chars() != "")
    )
    return queries.filter(keep), problems


def validate_labels(
    catalog_ids: set[str], queries: pl.DataFrame, qrels: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]]:
    """Check judgments against the catalog and the queries; drop what cannot be used.

    Reports, one message per kind: duplicate query ids, queries with an invalid split or empty
    text, judgments with a missing or non-numeric grade, naming an unknown query or an unknown
    product, and duplicate (query_id, product_id) pairs (the first is kept).

    Args:
        catalog_ids: Product ids of the catalog.
        queries: ``query_id``, ``query``, ``split``.
        qrels: ``query_id``, ``product_id``, ``grade``.

    Returns:
        The cleaned qrels (``query_id`` str, ``product_id`` str, ``grade`` Float64) and the
        problem messages.

    Raises:
        ShopsearchError: A required column is missing.
    """
    valid_queries, problems = _valid_queries(queries)
    require_columns(qrels, ("query_id", "product_id", "grade"), QRELS_FILE)
    rows = _as_str(qrels, "query_id", "product_id").select(
        "query_id",
        "product_id",
        pl.col("grade").cast(pl.Utf8).alias("raw_grade"),
        pl.col("grade").cast(pl.Float64, strict=False).alias("grade"),
    )

    bad_grade = rows.filter(pl.col("grade").is_null() | ~pl.col("grade").is_finite())
    if bad_grade.height:
        raw = [str(v) if v is not None else "missing" for v in bad_grade["raw_grade"].to_list()]
        problems.append(
            f"{QRELS_FILE}: {bad_grade.height} judgments have a missing or non-numeric grade"
            f"{examples(raw)}; ignored"
        )
        rows = rows.filter(pl.col("grade").is_not_null() & pl.col("grade").is_finite())

    unknown_q = rows.filter(~member_of("query_id", valid_queries["query_id"]))
    if unknown_q.height:
        ids = unknown_q["query_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{QRELS_FILE}: {unknown_q.height} judgments name {len(ids)} query ids missing from "
            f"{QUERIES_FILE} (or ignored there){examples(ids)}; ignored"
        )
        rows = rows.filter(member_of("query_id", valid_queries["query_id"]))

    unknown_p = rows.filter(~member_of("product_id", catalog_ids))
    if unknown_p.height:
        ids = unknown_p["product_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{QRELS_FILE}: {unknown_p.height} judgments name {len(ids)} product ids missing "
            f"from {CATALOG_FILE}{examples(ids)}; ignored"
        )
        rows = rows.filter(member_of("product_id", catalog_ids))

    dup = rows.filter(pl.struct("query_id", "product_id").is_duplicated())
    if dup.height:
        pairs = dup.unique(subset=["query_id", "product_id"], maintain_order=True)
        problems.append(
            f"{QRELS_FILE}: {pairs.height} (query_id, product_id) pairs are judged more than once"
            f"{examples(list(pairs.select('query_id', 'product_id').iter_rows()))}; "
            "the first judgment of each is kept"
        )
        rows = rows.unique(subset=["query_id", "product_id"], keep="first", maintain_order=True)

    return rows.select("query_id", "product_id", "grade"), problems


def _valid_catalog(catalog: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    require_columns(catalog, ("product_id", "title"), CATALOG_FILE)
    catalog = _as_str(catalog, "product_id")
    problems: list[str] = []
    no_id = catalog.filter(pl.col("product_id").is_null() | (pl.col("product_id") == ""))
    if no_id.height:
        problems.append(f"{CATALOG_FILE}: {no_id.height} products have no product_id; ignored")
        catalog = catalog.filter(pl.col("product_id").is_not_null() & (pl.col("product_id") != ""))
    catalog = _first_of_each(catalog, "product_id", CATALOG_FILE, "product", problems)
    return catalog, problems


def _first_of_each(
    frame: pl.DataFrame, column: str, file: str, what: str, problems: list[str]
) -> pl.DataFrame:
    """The first row of each ``column`` value; a problem message when an id was repeated."""
    dup_ids = frame.filter(pl.col(column).is_duplicated())[column].unique(maintain_order=True)
    if not dup_ids.len():
        return frame
    problems.append(
        f"{file}: {dup_ids.len()} {what} ids appear on more than one row"
        f"{examples(dup_ids.to_list())}; the first row of each is kept"
    )
    return frame.unique(subset=column, keep="first", maintain_order=True)


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars/pyarrow raise many types for corrupt files
        raise ShopsearchError(f"{path}: cannot read Parquet ({exc}); rewrite the file") from exc


def _manifest_number(manifest: dict[str, Any], key: str, path: Path) -> float:
    value = manifest.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ShopsearchError(
            f"{path}: {key!r} must be a number (got {value!r}); add e.g. "
            '"relevance_threshold": 2.5, "gain_offset": 1.0'
        )
    return float(value)


def load_benchmark(path: str | Path) -> BenchmarkData:
    """Load and validate a benchmark directory.

    Problems that leave usable data (duplicates, unknown ids, bad grades) are reported in
    ``BenchmarkData.problems``; the offending rows are dropped.

    Raises:
        ShopsearchError: A file is missing or unreadable, the manifest lacks the relevance
            threshold or gain offset, or no valid judgment remains.
    """
    root = Path(path)
    if not root.is_dir():
        raise ShopsearchError(f"{root}: not a benchmark directory (it does not exist)")
    files = (CATALOG_FILE, QUERIES_FILE, QRELS_FILE, MANIFEST_FILE)
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise ShopsearchError(
            f"{root}: missing {', '.join(missing)}; a benchmark needs all of {', '.join(files)}"
        )
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShopsearchError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ShopsearchError(f"{manifest_path}: must hold a JSON object")
    threshold = _manifest_number(manifest, "relevance_threshold", manifest_path)
    gain_offset = _manifest_number(manifest, "gain_offset", manifest_path)

    catalog, problems = _valid_catalog(_read_parquet(root / CATALOG_FILE))
    raw_queries = _read_parquet(root / QUERIES_FILE)
    raw_qrels = _read_parquet(root / QRELS_FILE)
    qrels, label_problems = validate_labels(
        set(catalog["product_id"].to_list()), raw_queries, raw_qrels
    )
    problems.extend(label_problems)
    queries, _ = _valid_queries(raw_queries)
    if qrels.height == 0:
        detail = "; ".join(problems) or f"{QRELS_FILE} has no rows"
        raise ShopsearchError(f"{root}: no valid judgment remains: {detail}")
    return BenchmarkData(
        catalog=catalog,
        queries=queries,
        qrels=qrels,
        threshold=threshold,
        gain_offset=gain_offset,
        path=root,
        problems=problems,
        manifest=manifest,
    )


def judgments_from(data: BenchmarkData) -> Judgments:
    """Plain-Python judgments (with product texts by the one recipe) for trainers."""
    texts: dict[str, str] = {}
    cols = set(data.catalog.columns)
    for row in data.catalog.iter_rows(named=True):
        product = Product(
            product_id=row["product_id"],
            title=row["title"],
            brand=row.get("brand") if "brand" in cols else None,
            category=row.get("category") if "category" in cols else None,
            attributes=row.get("attributes") if isinstance(row.get("attributes"), dict) else {},
        )
        texts[product.product_id] = product_text(product)
    queries: dict[str, dict[str, str]] = {}
    qrels: dict[str, Qrels] = {}
    for split in SPLITS:
        frame, split_qrels = data.split(split)
        queries[split] = dict(
            zip(frame["query_id"].to_list(), frame["query"].to_list(), strict=True)
        )
        qrels[split] = split_qrels
    return Judgments(texts, queries, qrels, data.threshold, data.gain_offset)

"""The benchmark data format, its loader and validator, and the Home Depot importer.

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

import hashlib
import io
import json
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import Qrels

FORMAT_VERSION = "shopsearch-benchmark/v1"
SPLITS = ("train", "validation", "test")
CATALOG_FILE = "catalog.parquet"
QUERIES_FILE = "queries.parquet"
QRELS_FILE = "qrels.parquet"
MANIFEST_FILE = "manifest.json"

#: Home Depot conventions (see shared/data/README.md): relevant iff grade >= 2.5; gain grade - 1.
HOMEDEPOT_THRESHOLD = 2.5
HOMEDEPOT_GAIN_OFFSET = 1.0
HOMEDEPOT_COLUMNS = ("id", "product_uid", "product_title", "search_term", "relevance")
_EXAMPLES = 3


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


# ----------------------------------------------------------------------------- validation


def _examples(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:_EXAMPLES])
    return f" (e.g. {shown})" if shown else ""


def _require_columns(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ShopsearchError(
            f"{what}: missing column(s) {', '.join(missing)}; found {', '.join(df.columns) or 'none'}"
        )


def _as_str(df: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """Cast id columns to strings (integer ids are common in exports)."""
    return df.with_columns(pl.col(c).cast(pl.Utf8) for c in columns)


def _in(column: str, allowed: pl.Series | set[str]) -> pl.Expr:
    """Null-safe membership: a null id is never a member."""
    values = (
        allowed if isinstance(allowed, pl.Series) else pl.Series(sorted(allowed), dtype=pl.Utf8)
    )
    return pl.col(column).is_in(values.implode()).fill_null(False)


def _valid_queries(queries: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Dedupe query ids (first row kept) and drop queries with an invalid split or empty text."""
    _require_columns(queries, ("query_id", "query", "split"), QUERIES_FILE)
    queries = _as_str(queries, "query_id", "query", "split")
    problems: list[str] = []
    dup_ids = queries.filter(pl.col("query_id").is_duplicated())["query_id"].unique(
        maintain_order=True
    )
    if dup_ids.len():
        problems.append(
            f"{QUERIES_FILE}: {dup_ids.len()} query ids appear on more than one row"
            f"{_examples(dup_ids.to_list())}; the first row of each is kept"
        )
    queries = queries.unique(subset="query_id", keep="first", maintain_order=True)
    bad_split = queries.filter(~_in("split", set(SPLITS)))
    if bad_split.height:
        problems.append(
            f"{QUERIES_FILE}: {bad_split.height} queries have a split other than "
            f"{'/'.join(SPLITS)}{_examples(bad_split['split'].to_list())}; "
            "they and their judgments are ignored"
        )
    null_id = queries.filter(pl.col("query_id").is_null() | (pl.col("query_id") == ""))
    if null_id.height:
        problems.append(f"{QUERIES_FILE}: {null_id.height} queries have no query_id; ignored")
    empty = queries.filter(pl.col("query").is_null() | (pl.col("query").str.strip_chars() == ""))
    if empty.height:
        problems.append(
            f"{QUERIES_FILE}: {empty.height} queries have an empty text"
            f"{_examples(empty['query_id'].to_list())}; they and their judgments are ignored"
        )
    keep = (
        _in("split", set(SPLITS))
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
    _require_columns(qrels, ("query_id", "product_id", "grade"), QRELS_FILE)
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
            f"{_examples(raw)}; ignored"
        )
        rows = rows.filter(pl.col("grade").is_not_null() & pl.col("grade").is_finite())

    unknown_q = rows.filter(~_in("query_id", valid_queries["query_id"]))
    if unknown_q.height:
        ids = unknown_q["query_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{QRELS_FILE}: {unknown_q.height} judgments name {len(ids)} query ids missing from "
            f"{QUERIES_FILE} (or ignored there){_examples(ids)}; ignored"
        )
        rows = rows.filter(_in("query_id", valid_queries["query_id"]))

    unknown_p = rows.filter(~_in("product_id", catalog_ids))
    if unknown_p.height:
        ids = unknown_p["product_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{QRELS_FILE}: {unknown_p.height} judgments name {len(ids)} product ids missing "
            f"from {CATALOG_FILE}{_examples(ids)}; ignored"
        )
        rows = rows.filter(_in("product_id", catalog_ids))

    dup = rows.filter(pl.struct("query_id", "product_id").is_duplicated())
    if dup.height:
        pairs = dup.unique(subset=["query_id", "product_id"], maintain_order=True)
        problems.append(
            f"{QRELS_FILE}: {pairs.height} (query_id, product_id) pairs are judged more than once"
            f"{_examples(list(pairs.select('query_id', 'product_id').iter_rows()))}; "
            "the first judgment of each is kept"
        )
        rows = rows.unique(subset=["query_id", "product_id"], keep="first", maintain_order=True)

    return rows.select("query_id", "product_id", "grade"), problems


def _valid_catalog(catalog: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    _require_columns(catalog, ("product_id", "title"), CATALOG_FILE)
    catalog = _as_str(catalog, "product_id")
    problems: list[str] = []
    no_id = catalog.filter(pl.col("product_id").is_null() | (pl.col("product_id") == ""))
    if no_id.height:
        problems.append(f"{CATALOG_FILE}: {no_id.height} products have no product_id; ignored")
        catalog = catalog.filter(pl.col("product_id").is_not_null() & (pl.col("product_id") != ""))
    dup_ids = catalog.filter(pl.col("product_id").is_duplicated())["product_id"].unique(
        maintain_order=True
    )
    if dup_ids.len():
        problems.append(
            f"{CATALOG_FILE}: {dup_ids.len()} product ids appear on more than one row"
            f"{_examples(dup_ids.to_list())}; the first row of each is kept"
        )
        catalog = catalog.unique(subset="product_id", keep="first", maintain_order=True)
    return catalog, problems


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


# ----------------------------------------------------------------------------- Home Depot


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
    _require_columns(df, HOMEDEPOT_COLUMNS[1:], str(csv_path))
    return df, digest


def _write_atomically(
    out_dir: Path, overwrite: bool, frames: dict[str, pl.DataFrame], manifest: dict
) -> None:
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
            f"{_examples(conflicting)}; the first title of each is kept"
        )
    untitled = df.filter(~_in("product_id", titles["product_id"]))
    if untitled.height:
        ids = untitled["product_id"].unique(maintain_order=True).to_list()
        problems.append(
            f"{csv_path.name}: {len(ids)} product_uids never have a product_title"
            f"{_examples(ids)}; they and their {untitled.height} judgments are ignored"
        )
        df = df.filter(_in("product_id", titles["product_id"]))
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
            row_ids = rows["id"].to_list()[:_EXAMPLES] if "id" in rows.columns else []
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
            f"(case/whitespace) and merged{_examples([' / '.join(f) for f in merged])}"
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
            f"their grades were averaged{_examples(list(dup.select('query_id', 'product_id').iter_rows()))}"
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


def judgments_from(data: BenchmarkData) -> Judgments:
    """Plain-Python judgments (with product texts by the one recipe) for trainers."""
    from catalog.schema import Product
    from catalog.text import product_text

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

"""What the service's search log says to a merchandiser: one report, per UTC day.

    analytics_report(paths, since=None, until=None) -> AnalyticsReport   # over scan(paths)
    report_of(frame, ...) -> AnalyticsReport                              # over a LazyFrame
    report.to_markdown() / report.to_dict() / save_plots(report, folder)

The log (:mod:`personalization.searchlog`) has one row per served search and one per posted
interaction (``view``, ``click``, ``add_to_cart``, ``purchase``), joined by ``search_id``. The
report is computed with polars over the Parquet segments (a projection of the columns it reads;
the live JSON Lines segment is read too).

Definitions (each one a count of search rows, so the figures add up):

* **search**: one search row, that is one served page. A request for a later page (``offset >
  0``) has a ``search_id`` of its own and counts as a search of its own.
* **query**: the query as typed, normalised: lowercased, runs of white space as one space,
  trimmed. Spelling-corrected text is shown beside it, never in its place.
* **zero-result search**: a search row at ``offset`` 0 whose ``results`` list is empty.
* **rescued search**: a search row at ``offset`` 0 that spelling correction changed
  (``corrected`` not null) and that showed results.
* **click-through rate (CTR)**: searches with at least one ``click`` row / searches (the
  per-search CTR of Algolia's analytics).
* **mean click position**: mean 1-based rank of the ``click`` rows (the ``position`` the client
  sent; when it sent none, the product's rank in the search's ``results``: ``offset + i + 1``).
* **abandonment**: searches with no interaction row of any kind / searches.
* **searches per shopper**: searches per pseudonym; an anonymous search (no pseudonym) counts
  for its session; searches with neither are left out of the distribution and counted in
  ``unattributed_searches``.
* **examination curve**: ``theta_k``, the probability that a shopper looks at rank ``k``
  relative to rank 1, estimated by regression-EM (Wang et al., WSDM 2018) with
  :func:`personalization.propensity.estimate_propensities`, the estimator ``train personal``
  uses, over the window as a whole (not per day). An impression is a product shown on a
  page at rank ``k <= max_rank``; its label is 1 when the product got any interaction from that
  search. The relevance regression of the EM takes what the log keeps about each shown
  product for its query: its ``relevance`` and ``personal`` score parts (0 where the log has
  none; ``train personal`` replays richer features from the profiles, which the log alone
  cannot). Past ``max_impressions`` impressions (default 30,000: some 3,000 per rank) it runs
  on a sample of whole searches, chosen by a hash of ``search_id`` (a re-run picks the same
  ones) within a few segments spread evenly over the window (reading every segment's lists
  would cost more than the rest of the report); ``ctr_by_rank`` is over every impression.

Privacy (k-anonymity, as the suggestions use it): a query's text is listed only when at least
``min_shoppers`` distinct shoppers typed it (default :data:`MIN_SHOPPERS`, 5), counted within
the list it would appear in (a query typed by 5 shoppers but returning nothing for only one of
them is not listed among the zero-result queries). The queries below the threshold are summed
in one "rare queries" line per list (how many distinct queries, how many searches). Shoppers are
pseudonyms; an anonymous search counts for its session, and every anonymous search without a
session counts as one shopper together (so they never lift a query over the threshold). The
report holds no pseudonym.

Errors: a missing log path is a :class:`~core.errors.EventLogError`; a bad ``since``/``until``
a :class:`~core.errors.ShopsearchError` naming the field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.errors import ShopsearchError
from personalization.privacy import Pseudonymizer
from personalization.propensity import estimate_propensities
from personalization.searchlog import INTERACTIONS, forgotten_pseudonyms, log_files, scan

__all__ = [
    "MIN_SHOPPERS",
    "AnalyticsReport",
    "Bucket",
    "DayStats",
    "ExaminationCurve",
    "QueryStats",
    "RareQueries",
    "RescuedQuery",
    "ShopperDistribution",
    "ZeroResultQuery",
    "analytics_report",
    "day_window",
    "parse_day",
    "render",
    "report_of",
    "save_plots",
]

#: Distinct shoppers a query needs before its text is shown (k-anonymity; the suggestions'
#: default too).
MIN_SHOPPERS = 5
#: Ranks the examination curve covers (a first page of ten).
MAX_RANK = 10
#: Impressions the EM runs on at most (a sample of whole searches beyond it).
MAX_IMPRESSIONS = 30_000
#: The buckets of the searches-per-shopper histogram: (label, lowest, highest or None).
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("11-20", 11, 20),
    ("21-50", 21, 50),
    ("51+", 51, None),
)
#: Segments the EM's sample is read from at least (spread over the window).
SAMPLE_SEGMENTS = 4
#: What the EM's relevance regression reads per shown product (from the log's lists).
CURVE_FEATURES = ("relevance", "personal")
_ANONYMOUS = "anonymous"


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryStats:
    """One query of the top list.

    Attributes:
        query: Normalised text (lowercased, spaces collapsed).
        searches: Search rows (served pages) of the query.
        shoppers: Distinct shoppers who typed it (at least ``min_shoppers``).
        ctr: Searches with a click / searches, 0..1.
        mean_click_position: Mean 1-based rank of its clicks; None without a click.
        zero_result: Its zero-result searches (offset 0, nothing shown).
    """

    query: str
    searches: int
    shoppers: int
    ctr: float
    mean_click_position: float | None
    zero_result: int


@dataclass(frozen=True)
class ZeroResultQuery:
    """A query whose first page was empty: its text, searches and distinct shoppers."""

    query: str
    searches: int
    shoppers: int


@dataclass(frozen=True)
class RescuedQuery:
    """A query spelling correction changed and that then found results."""

    query: str
    corrected: str
    searches: int
    shoppers: int


@dataclass(frozen=True)
class RareQueries:
    """The queries of a list typed by fewer than ``min_shoppers`` shoppers, summed.

    Attributes:
        queries: Distinct queries (pairs, for the rescued list) held back.
        searches: Their searches.
    """

    queries: int = 0
    searches: int = 0


@dataclass(frozen=True)
class DayStats:
    """One UTC day.

    Attributes:
        day: ``YYYY-MM-DD`` (UTC).
        searches: Search rows (served pages).
        shoppers: Distinct shoppers (pseudonyms, else sessions, anonymous without as one).
        zero_result: Zero-result searches (offset 0, nothing shown).
        rescued: Searches a spelling correction rescued (offset 0, corrected, results).
        clicked: Searches with at least one click.
        abandoned: Searches with no interaction at all.
        ctr: ``clicked / searches``.
        abandonment: ``abandoned / searches``.
        mean_click_position: Mean rank of the day's clicks; None without a click.
    """

    day: str
    searches: int
    shoppers: int
    zero_result: int
    rescued: int
    clicked: int
    abandoned: int
    ctr: float
    abandonment: float
    mean_click_position: float | None


@dataclass(frozen=True)
class Bucket:
    """Shoppers who made a number of searches in a range (``searches``: "1", "3-5", "51+")."""

    searches: str
    shoppers: int


@dataclass(frozen=True)
class ShopperDistribution:
    """How many searches each shopper made in the window.

    Attributes:
        shoppers: Shoppers with at least one search (pseudonyms, and sessions of anonymous
            searches).
        mean: Mean searches per shopper (0 with none).
        median: Median.
        p90: 90th percentile.
        max: The most searches of one shopper.
        buckets: Shoppers per range of searches: 1, 2, 3-5, 6-10, 11-20, 21-50, 51+.
        unattributed_searches: Searches with neither pseudonym nor session (left out).
    """

    shoppers: int
    mean: float
    median: float
    p90: float
    max: int
    buckets: tuple[Bucket, ...]
    unattributed_searches: int


@dataclass(frozen=True)
class ExaminationCurve:
    """The examination probability per rank, estimated from the log (regression-EM).

    Attributes:
        theta: ``theta[k - 1]`` for ranks 1..n, relative to rank 1 (``theta[0] == 1``);
            empty when it could not be estimated (see ``note``).
        ctr_by_rank: Interacted impressions / impressions per rank, over every impression,
            for ranks 1 to the deepest one shown (at most ``max_rank``).
        impressions: Impressions per rank, over every impression (same ranks).
        sampled_impressions: Impressions the EM ran on.
        iterations: EM iterations run.
        converged: Whether the EM converged.
        features: What the EM's relevance regression read per shown product.
        note: Why ``theta`` is empty, or "".
    """

    theta: tuple[float, ...]
    ctr_by_rank: tuple[float, ...]
    impressions: tuple[int, ...]
    sampled_impressions: int
    iterations: int
    converged: bool
    features: tuple[str, ...] = CURVE_FEATURES
    note: str = ""


@dataclass(frozen=True)
class AnalyticsReport:
    """The analytics of a search log over a window.

    Attributes:
        since: First UTC day included (``YYYY-MM-DD``), None: from the start of the log.
        until: Last UTC day included, None: to its end.
        min_shoppers: Distinct shoppers a query needed to be listed.
        searches: Search rows (served pages).
        shoppers: Distinct shoppers.
        interactions: Interaction rows that answer a search of the window.
        zero_result: Zero-result searches.
        rescued: Searches a spelling correction rescued.
        ctr: Searches with a click / searches (0 with no search).
        abandonment: Searches without any interaction / searches (0 with no search).
        mean_click_position: Mean rank of the clicks; None without a click.
        distinct_queries: Distinct normalised queries.
        days: Per UTC day, in order.
        top_queries: The most searched listable queries (most searches first), at most ``top``.
        rare_queries: The queries below ``min_shoppers``, summed.
        zero_result_queries: Listable queries with zero-result searches (most first).
        rare_zero_result: The zero-result queries held back, summed.
        rescued_queries: Listable (query, corrected) pairs that correction rescued.
        rare_rescued: The rescued pairs held back, summed.
        searches_per_shopper: The distribution of searches per shopper.
        examination: The examination curve.
    """

    since: str | None
    until: str | None
    min_shoppers: int
    searches: int
    shoppers: int
    interactions: int
    zero_result: int
    rescued: int
    ctr: float
    abandonment: float
    mean_click_position: float | None
    distinct_queries: int
    days: tuple[DayStats, ...]
    top_queries: tuple[QueryStats, ...]
    rare_queries: RareQueries
    zero_result_queries: tuple[ZeroResultQuery, ...]
    rare_zero_result: RareQueries
    rescued_queries: tuple[RescuedQuery, ...]
    rare_rescued: RareQueries
    searches_per_shopper: ShopperDistribution
    examination: ExaminationCurve

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``GET /admin/analytics`` answers)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples to lists

    def to_markdown(self) -> str:
        """The report as Markdown: totals, the day table, the query lists, the curve."""
        return _markdown(self)


# -- dates --------------------------------------------------------------------------------


def parse_day(text: str | dt.date | None, field: str) -> dt.date | None:
    """A UTC day from ``YYYY-MM-DD`` (or a date); None stays None.

    Raises:
        ShopsearchError: Not a date, naming ``field``.
    """
    if text is None or isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ShopsearchError(f"{field} {text!r}: not a day; give it as YYYY-MM-DD (UTC)") from None


def day_window(since: dt.date | None, until: dt.date | None) -> tuple[float | None, float | None]:
    """The epoch-seconds window ``[since 00:00 UTC, the day after until 00:00 UTC)``: both days
    included.

    Raises:
        ShopsearchError: ``since`` after ``until``.
    """
    if since is not None and until is not None and since > until:
        raise ShopsearchError(f"since {since} is after until {until}: give since <= until")

    def start(day: dt.date) -> float:
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()

    return (
        start(since) if since is not None else None,
        start(until + dt.timedelta(days=1)) if until is not None else None,
    )


# -- computing it -------------------------------------------------------------------------


def analytics_report(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    since: str | dt.date | None = None,
    until: str | dt.date | None = None,
    *,
    top: int = 20,
    min_shoppers: int = MIN_SHOPPERS,
    max_rank: int = MAX_RANK,
    max_impressions: int = MAX_IMPRESSIONS,
    pseudonymizer: Pseudonymizer | None = None,
) -> AnalyticsReport:
    """The report of a search log's folders or segments, from UTC day ``since`` to ``until``
    (both included; ``YYYY-MM-DD`` or dates).

    Args:
        paths: Log folders (the service's ``search_log``) or segment files.
        since: First day; None: from the start.
        until: Last day; None: to the end.
        top: Most queries per list.
        min_shoppers: Distinct shoppers a query needs to be listed (k-anonymity).
        max_rank: Ranks of the examination curve.
        max_impressions: Impressions the EM runs on at most (a sample beyond).
        pseudonymizer: The key the log was written with: with it, the rows of shoppers
            tombstoned in a folder's ``forgotten.txt`` are left out even from a segment not
            rewritten yet (another replica's live one); None: the segments as they are.

    Returns:
        :class:`AnalyticsReport`.

    Raises:
        EventLogError: A path that is not a log.
        ShopsearchError: A bad day or a window that ends before it starts.
    """
    first = parse_day(since, "--since")
    last = parse_day(until, "--until")
    lo, hi = day_window(first, last)
    gone = forgotten_pseudonyms(paths, pseudonymizer)
    segments = [_without(scan(path, lo, hi), gone) for path in log_files(paths)]
    return report_of(
        _without(scan(paths, lo, hi), gone),
        segments=segments,
        since=first,
        until=last,
        top=top,
        min_shoppers=min_shoppers,
        max_rank=max_rank,
        max_impressions=max_impressions,
    )


def _without(log: pl.LazyFrame, pseudonyms: list[str]) -> pl.LazyFrame:
    if not pseudonyms:
        return log
    return log.filter(~pl.col("pseudonym").is_in(pseudonyms).fill_null(False))


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ShopsearchError(f"{name} {value}: give at least 1")


def report_of(
    log: pl.LazyFrame,
    *,
    segments: Sequence[pl.LazyFrame] | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    top: int = 20,
    min_shoppers: int = MIN_SHOPPERS,
    max_rank: int = MAX_RANK,
    max_impressions: int = MAX_IMPRESSIONS,
) -> AnalyticsReport:
    """The report of a search log already scanned (a LazyFrame of ``searchlog.SCHEMA``,
    filtered to the window); ``since``/``until`` only label it. ``segments``: the same rows
    as one frame per segment, in time order, when known: the EM's sample is then read from a
    few segments spread over the window instead of the whole log (its lists are what costs).
    The other arguments as :func:`analytics_report`."""
    for name, value in (
        ("--top", top),
        ("--min-shoppers", min_shoppers),
        ("max_rank", max_rank),
        ("max_impressions", max_impressions),
    ):
        _check_positive(name, value)
    acted = _interactions(log)
    frame = _searches(log, acted).collect()
    interactions = int(frame["interactions"].sum()) if frame.height else 0
    days = _days(frame)
    top_queries, rare, distinct = _top_queries(frame, top, min_shoppers)
    zero, rare_zero = _zero_result(frame, top, min_shoppers)
    rescued, rare_rescued = _rescued(frame, top, min_shoppers)
    n = frame.height
    clicked = int((frame["clicks"] > 0).sum()) if n else 0
    abandoned = int((frame["interactions"] == 0).sum()) if n else 0
    first_pages = frame.filter(pl.col("offset") == 0) if n else frame
    return AnalyticsReport(
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        min_shoppers=min_shoppers,
        searches=n,
        shoppers=int(frame["shopper"].n_unique()) if n else 0,
        interactions=interactions,
        zero_result=int((first_pages["n_results"] == 0).sum()) if n else 0,
        rescued=int(((first_pages["n_results"] > 0) & first_pages["corrected"].is_not_null()).sum())
        if n
        else 0,
        ctr=clicked / n if n else 0.0,
        abandonment=abandoned / n if n else 0.0,
        mean_click_position=_ratio(frame["pos_sum"].sum(), frame["pos_n"].sum()) if n else None,
        distinct_queries=distinct,
        days=days,
        top_queries=top_queries,
        rare_queries=rare,
        zero_result_queries=zero,
        rare_zero_result=rare_zero,
        rescued_queries=rescued,
        rare_rescued=rare_rescued,
        searches_per_shopper=_distribution(frame),
        examination=_examination(log, segments, frame, acted, max_rank, max_impressions),
    )


def _ratio(num: Any, den: Any) -> float | None:
    num, den = float(num or 0), float(den or 0)
    return num / den if den > 0 else None


def _normalized(column: str) -> pl.Expr:
    return (
        pl.col(column)
        .fill_null("")
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def _shopper() -> pl.Expr:
    """Who a row counts for: its pseudonym, else its session, else one shared anonymous."""
    return (
        pl.when(pl.col("pseudonym").is_not_null())
        .then(pl.lit("p:") + pl.col("pseudonym"))
        .when(pl.col("session").is_not_null() & (pl.col("session") != ""))
        .then(pl.lit("s:") + pl.col("session"))
        .otherwise(pl.lit(_ANONYMOUS))
    )


def _interactions(log: pl.LazyFrame) -> pl.DataFrame:
    """Interaction rows with their 1-based rank: the product's rank in its search's
    ``results`` (the service's record), else the client's ``position``.

    An interaction on a product its logged search did not show (a page that posted the wrong
    ``search_id``) is not that search's and is left out; one whose search is not in the log
    read (another window, another folder) is kept as posted.
    """
    rows = (
        log.filter(pl.col("event").is_in(list(INTERACTIONS)))
        .select("search_id", "event", "product_id", "position")
        .collect()
    )
    if not rows.height:
        return rows
    shown = (
        log.filter(pl.col("event") == "search")
        .select("search_id", "offset", "results")
        .join(rows.select("search_id").unique().lazy(), on="search_id", how="semi")
        .with_columns(
            rank=pl.int_ranges(
                pl.col("offset").fill_null(0) + 1,
                pl.col("offset").fill_null(0) + 1 + pl.col("results").list.len().fill_null(0),
                dtype=pl.Int32,
            )
        )
        .explode(["results", "rank"])
        .rename({"results": "product_id"})
        .group_by("search_id", "product_id")
        .agg(pl.col("rank").min())
        .collect()
    )
    logged = shown.select("search_id").unique().lazy()
    return (
        rows.lazy()
        .join(shown.lazy(), on=["search_id", "product_id"], how="left")
        .join(logged.with_columns(in_log=pl.lit(True)), on="search_id", how="left")
        .filter(pl.col("rank").is_not_null() | pl.col("in_log").is_null())
        .with_columns(position=pl.coalesce(pl.col("rank"), pl.col("position")))
        .drop("rank", "in_log")
        .collect()
    )


def _searches(log: pl.LazyFrame, interactions: pl.DataFrame) -> pl.LazyFrame:
    """One row per search: its day, shopper, query, correction, page, and what it drew."""
    per_search = (
        interactions.lazy()
        .group_by("search_id")
        .agg(
            interactions=pl.len(),
            clicks=(pl.col("event") == "click").sum(),
            pos_sum=pl.col("position").filter(pl.col("event") == "click").sum(),
            pos_n=pl.col("position").filter(pl.col("event") == "click").count(),
        )
    )
    return (
        log.filter(pl.col("event") == "search")
        .select(
            "search_id",
            day=(pl.col("timestamp") // 86400).cast(pl.Int32).cast(pl.Date),
            shopper=_shopper(),
            query=_normalized("query"),
            corrected=pl.when(pl.col("corrected").is_not_null()).then(_normalized("corrected")),
            offset=pl.col("offset").fill_null(0),
            n_results=pl.col("results").list.len().fill_null(0),
        )
        .join(per_search, on="search_id", how="left")
        .with_columns(
            pl.col("interactions", "clicks", "pos_n").fill_null(0),
            pl.col("pos_sum").fill_null(0),
        )
    )


def _days(frame: pl.DataFrame) -> tuple[DayStats, ...]:
    if not frame.height:
        return ()
    first = pl.col("offset") == 0
    days = (
        frame.group_by("day")
        .agg(
            searches=pl.len(),
            shoppers=pl.col("shopper").n_unique(),
            zero_result=(first & (pl.col("n_results") == 0)).sum(),
            rescued=(first & (pl.col("n_results") > 0) & pl.col("corrected").is_not_null()).sum(),
            clicked=(pl.col("clicks") > 0).sum(),
            abandoned=(pl.col("interactions") == 0).sum(),
            pos_sum=pl.col("pos_sum").sum(),
            pos_n=pl.col("pos_n").sum(),
        )
        .sort("day")
    )
    return tuple(
        DayStats(
            day=r["day"].isoformat(),
            searches=r["searches"],
            shoppers=r["shoppers"],
            zero_result=r["zero_result"],
            rescued=r["rescued"],
            clicked=r["clicked"],
            abandoned=r["abandoned"],
            ctr=r["clicked"] / r["searches"],
            abandonment=r["abandoned"] / r["searches"],
            mean_click_position=_ratio(r["pos_sum"], r["pos_n"]),
        )
        for r in days.iter_rows(named=True)
    )


def _split(
    table: pl.DataFrame, min_shoppers: int, top: int, order: Sequence[str]
) -> tuple[pl.DataFrame, RareQueries]:
    """The listable rows (at least ``min_shoppers``), best ``top`` by ``order``, and the rest
    summed."""
    listed = table.filter(pl.col("shoppers") >= min_shoppers)
    held = table.filter(pl.col("shoppers") < min_shoppers)
    rare = RareQueries(queries=held.height, searches=int(held["searches"].sum() or 0))
    descending = [c != "query" and c != "corrected" for c in order]
    return listed.sort(list(order), descending=descending).head(top), rare


def _top_queries(
    frame: pl.DataFrame, top: int, min_shoppers: int
) -> tuple[tuple[QueryStats, ...], RareQueries, int]:
    if not frame.height:
        return (), RareQueries(), 0
    table = frame.group_by("query").agg(
        searches=pl.len(),
        shoppers=pl.col("shopper").n_unique(),
        clicked=(pl.col("clicks") > 0).sum(),
        pos_sum=pl.col("pos_sum").sum(),
        pos_n=pl.col("pos_n").sum(),
        zero_result=((pl.col("offset") == 0) & (pl.col("n_results") == 0)).sum(),
    )
    listed, rare = _split(table, min_shoppers, top, ["searches", "query"])
    rows = tuple(
        QueryStats(
            query=r["query"],
            searches=r["searches"],
            shoppers=r["shoppers"],
            ctr=r["clicked"] / r["searches"],
            mean_click_position=_ratio(r["pos_sum"], r["pos_n"]),
            zero_result=r["zero_result"],
        )
        for r in listed.iter_rows(named=True)
    )
    return rows, rare, table.height


def _zero_result(
    frame: pl.DataFrame, top: int, min_shoppers: int
) -> tuple[tuple[ZeroResultQuery, ...], RareQueries]:
    rows = frame.filter((pl.col("offset") == 0) & (pl.col("n_results") == 0))
    if not rows.height:
        return (), RareQueries()
    table = rows.group_by("query").agg(searches=pl.len(), shoppers=pl.col("shopper").n_unique())
    listed, rare = _split(table, min_shoppers, top, ["searches", "query"])
    return tuple(ZeroResultQuery(**r) for r in listed.iter_rows(named=True)), rare


def _rescued(
    frame: pl.DataFrame, top: int, min_shoppers: int
) -> tuple[tuple[RescuedQuery, ...], RareQueries]:
    rows = frame.filter(
        (pl.col("offset") == 0) & (pl.col("n_results") > 0) & pl.col("corrected").is_not_null()
    )
    if not rows.height:
        return (), RareQueries()
    table = rows.group_by("query", "corrected").agg(
        searches=pl.len(), shoppers=pl.col("shopper").n_unique()
    )
    listed, rare = _split(table, min_shoppers, top, ["searches", "query", "corrected"])
    return tuple(RescuedQuery(**r) for r in listed.iter_rows(named=True)), rare


def _distribution(frame: pl.DataFrame) -> ShopperDistribution:
    known = frame.filter(pl.col("shopper") != _ANONYMOUS)
    unattributed = frame.height - known.height
    counts = (
        known.group_by("shopper").len()["len"].to_numpy()
        if known.height
        else np.zeros(0, dtype=np.int64)
    )
    buckets = tuple(
        Bucket(label, int(((counts >= lo) & (counts <= (hi if hi is not None else np.inf))).sum()))
        for label, lo, hi in BUCKETS
    )
    if not len(counts):
        return ShopperDistribution(0, 0.0, 0.0, 0.0, 0, buckets, unattributed)
    return ShopperDistribution(
        shoppers=len(counts),
        mean=float(counts.mean()),
        median=float(np.median(counts)),
        p90=float(np.percentile(counts, 90)),
        max=int(counts.max()),
        buckets=buckets,
        unattributed_searches=unattributed,
    )


def _examination(
    log: pl.LazyFrame,
    segments: Sequence[pl.LazyFrame] | None,
    frame: pl.DataFrame,
    acted: pl.DataFrame,
    max_rank: int,
    max_impressions: int,
) -> ExaminationCurve:
    """Impressions per rank over every search; regression-EM over a sample of them."""
    empty = ExaminationCurve((), (), (), 0, 0, False)
    if not frame.height:
        return dataclasses.replace(empty, note="no search in the window")
    # impressions per rank, from each page's interval of ranks [offset+1, offset+n]
    pages = frame.filter((pl.col("n_results") > 0) & (pl.col("offset") < max_rank))
    start = pages["offset"].to_numpy().astype(np.int64)  # 0-based first rank
    end = np.minimum(start + pages["n_results"].to_numpy().astype(np.int64), max_rank)
    delta = np.bincount(start, minlength=max_rank + 1) - np.bincount(end, minlength=max_rank + 1)
    impressions = np.cumsum(delta)[:max_rank]
    total = int(impressions.sum())
    if total == 0:
        return dataclasses.replace(empty, note="no search in the window showed a product")
    max_rank = int(np.flatnonzero(impressions)[-1]) + 1  # the deepest rank shown
    impressions = impressions[:max_rank]
    interacted = (
        acted.lazy()
        .filter(pl.col("position").is_between(1, max_rank))
        .select("search_id", "product_id", "position")
        .unique()
    )
    hits = (
        interacted.join(
            frame.lazy().select("search_id", "offset", "n_results"), on="search_id", how="semi"
        )
        .group_by("position")
        .len()
        .collect()
    )
    clicks = np.zeros(max_rank)
    clicks[hits["position"].to_numpy() - 1] = hits["len"].to_numpy()
    ctr_by_rank = tuple(
        float(c / i) if i else 0.0 for c, i in zip(clicks, impressions, strict=True)
    )
    # the EM's sample: whole searches, by a hash of their id, from evenly spaced segments
    # holding some twice the impressions it needs (at least 4 of them)
    source, covered = log, 1.0
    if segments:
        n = len(segments)
        wanted = max(min(n, SAMPLE_SEGMENTS), math.ceil(n * min(1.0, 2 * max_impressions / total)))
        picked = sorted({round(i * (n - 1) / max(1, wanted - 1)) for i in range(wanted)})
        source = pl.concat([segments[i] for i in picked], how="vertical")
        covered = len(picked) / n
    share = min(1.0, max_impressions / (total * covered))
    bound = int(share * 1_000_000)
    sample = (
        source.filter(pl.col("event") == "search")
        .filter(pl.col("offset").fill_null(0) < max_rank)
        .filter(pl.col("search_id").hash(seed=24) % 1_000_000 < bound)
        .select("search_id", "offset", "results", *CURVE_FEATURES)
        .with_columns(i=pl.int_ranges(0, pl.col("results").list.len(), dtype=pl.Int32))
        .explode(["results", "i"])
        .filter(pl.col("results").is_not_null())
        .select(
            "search_id",
            product_id=pl.col("results"),
            rank=pl.col("offset").fill_null(0) + pl.col("i") + 1,
            **{
                f: pl.col(f).list.get(pl.col("i"), null_on_oob=True).fill_null(0.0)
                for f in CURVE_FEATURES
            },
        )
        .filter(pl.col("rank") <= max_rank)
        .join(
            interacted.select("search_id", "product_id").unique().with_columns(hit=pl.lit(1.0)),
            on=["search_id", "product_id"],
            how="left",
        )
        .collect()
    )
    curve = dataclasses.replace(
        empty,
        ctr_by_rank=ctr_by_rank,
        impressions=tuple(int(i) for i in impressions),
        sampled_impressions=sample.height,
    )
    try:
        est = estimate_propensities(
            sample["rank"].to_numpy(),
            sample["hit"].fill_null(0.0).to_numpy(),
            sample.select(CURVE_FEATURES).to_numpy(),
            max_rank=max_rank,
        )
    except ShopsearchError as exc:  # no click at all
        return dataclasses.replace(curve, note=str(exc))
    return dataclasses.replace(
        curve,
        theta=tuple(float(t) for t in est.theta),
        iterations=est.iterations,
        converged=est.converged,
    )


def render(report: AnalyticsReport, fmt: str) -> str:
    """The report as text: ``md`` (:meth:`AnalyticsReport.to_markdown`) or ``json`` (indented
    :meth:`AnalyticsReport.to_dict`, with a final newline).

    Raises:
        ShopsearchError: Another format.
    """
    if fmt == "md":
        return report.to_markdown()
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2) + "\n"
    raise ShopsearchError(f"format {fmt!r}: give md or json")


# -- Markdown -----------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pos(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "(empty)"


def _rare_line(rare: RareQueries, columns: int) -> list[str]:
    if not rare.queries:
        return []
    pad = " |" * (columns - 2)
    return [f"| *rare queries ({rare.queries:,})* | {rare.searches:,} |{pad}"]


def _markdown(r: AnalyticsReport) -> str:
    window = f"{r.since or 'the start'} to {r.until or 'the end'} (UTC days, both included)"
    out = [
        "# Search analytics",
        "",
        f"From {window}. Queries are listed when at least {r.min_shoppers} distinct shoppers "
        "typed them; the others are summed in a *rare queries* line.",
        "",
        "| | |",
        "| --- | ---: |",
        f"| searches (served pages) | {r.searches:,} |",
        f"| shoppers | {r.shoppers:,} |",
        f"| distinct queries | {r.distinct_queries:,} |",
        f"| click-through rate | {_pct(r.ctr)} |",
        f"| mean click position | {_pos(r.mean_click_position)} |",
        f"| abandonment (no interaction) | {_pct(r.abandonment)} |",
        f"| zero-result searches | {r.zero_result:,} |",
        f"| rescued by spelling correction | {r.rescued:,} |",
        "",
        "## Per day",
        "",
        "| day | searches | shoppers | CTR | mean click position | abandonment | zero results "
        "| rescued |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    out += [
        f"| {d.day} | {d.searches:,} | {d.shoppers:,} | {_pct(d.ctr)} | "
        f"{_pos(d.mean_click_position)} | {_pct(d.abandonment)} | {d.zero_result:,} | "
        f"{d.rescued:,} |"
        for d in r.days
    ]
    out += [
        "",
        "## Top queries",
        "",
        "| query | searches | shoppers | CTR | mean click position | zero results |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    out += [
        f"| {_cell(q.query)} | {q.searches:,} | {q.shoppers:,} | {_pct(q.ctr)} | "
        f"{_pos(q.mean_click_position)} | {q.zero_result:,} |"
        for q in r.top_queries
    ]
    out += _rare_line(r.rare_queries, 6)
    out += ["", "## Zero-result queries", "", "| query | searches | shoppers |"]
    out += ["| --- | ---: | ---: |"]
    out += [
        f"| {_cell(q.query)} | {q.searches:,} | {q.shoppers:,} |" for q in r.zero_result_queries
    ]
    out += _rare_line(r.rare_zero_result, 3)
    out += ["", "## Rescued by spelling correction", ""]
    out += ["| query | searched as | searches | shoppers |", "| --- | --- | ---: | ---: |"]
    out += [
        f"| {_cell(q.query)} | {_cell(q.corrected)} | {q.searches:,} | {q.shoppers:,} |"
        for q in r.rescued_queries
    ]
    if r.rare_rescued.queries:
        out.append(
            f"| *rare queries ({r.rare_rescued.queries:,})* | | {r.rare_rescued.searches:,} | |"
        )
    s = r.searches_per_shopper
    out += [
        "",
        "## Searches per shopper",
        "",
        f"{s.shoppers:,} shoppers: mean {s.mean:.2f}, median {s.median:g}, p90 {s.p90:g}, "
        f"max {s.max:,}; {s.unattributed_searches:,} searches had neither pseudonym nor "
        "session.",
        "",
        "| searches | shoppers |",
        "| --- | ---: |",
    ]
    out += [f"| {b.searches} | {b.shoppers:,} |" for b in s.buckets]
    e = r.examination
    out += [
        "",
        "## Examination curve",
        "",
        "Probability that a shopper looks at each rank, relative to rank 1, by regression-EM "
        f"(the estimator of `train personal`) on {e.sampled_impressions:,} impressions, "
        f"reading {', '.join(e.features)} per shown product.",
        "",
    ]
    if e.note:
        out += [f"Not estimated: {e.note}.", ""]
    out += ["| rank | examination | CTR | impressions |", "| ---: | ---: | ---: | ---: |"]
    for k, (ctr, n) in enumerate(zip(e.ctr_by_rank, e.impressions, strict=True), start=1):
        theta = f"{e.theta[k - 1]:.3f}" if e.theta else "-"
        out.append(f"| {k} | {theta} | {_pct(ctr)} | {n:,} |")
    return "\n".join(out) + "\n"


# -- plots --------------------------------------------------------------------------------


def save_plots(report: AnalyticsReport, folder: str | os.PathLike[str]) -> list[Path]:
    """PNG plots of the report in ``folder`` (created): ``days.png`` (searches, CTR and
    abandonment per day), ``examination.png`` (the curve and CTR per rank), ``shoppers.png``
    (searches per shopper), ``queries.png`` (top queries). Needs matplotlib (the ``train``
    extra).

    Returns:
        The files written.

    Raises:
        ShopsearchError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ShopsearchError(
            "plots need matplotlib: pip install 'shopsearch[train]' (or leave out --plots)"
        ) from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    days = [d.day for d in report.days]
    ax.bar(days, [d.searches for d in report.days], color="#9bb7d4", label="searches")
    ax.set_ylabel("searches")
    ax.tick_params(axis="x", labelrotation=45)
    rates = ax.twinx()
    rates.plot(days, [d.ctr for d in report.days], "o-", color="#1f5f99", label="CTR")
    rates.plot(
        days, [d.abandonment for d in report.days], "s--", color="#b5562b", label="abandonment"
    )
    rates.set_ylim(0, 1)
    rates.set_ylabel("share of searches")
    rates.legend(loc="upper left")
    ax.set_title("Searches per UTC day")
    save(fig, "days.png")

    e = report.examination
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ranks = np.arange(1, len(e.ctr_by_rank) + 1)
    if e.theta:
        ax.plot(ranks, e.theta, "o-", label="examination (regression-EM)")
    ax.plot(ranks, e.ctr_by_rank, "s--", label="CTR per rank")
    ax.set_xlabel("rank")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Examination curve")
    save(fig, "examination.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    s = report.searches_per_shopper
    ax.bar([b.searches for b in s.buckets], [b.shoppers for b in s.buckets], color="#6a9f58")
    ax.set_xlabel("searches in the window")
    ax.set_ylabel("shoppers")
    ax.set_title("Searches per shopper")
    save(fig, "shoppers.png")

    fig, ax = plt.subplots(figsize=(6, max(2.5, 1.0 + 0.3 * len(report.top_queries))))
    queries = list(reversed(report.top_queries))
    ax.barh([q.query or "(empty)" for q in queries], [q.searches for q in queries])
    if not queries:
        ax.text(0.5, 0.5, "no query reached the threshold", ha="center", transform=ax.transAxes)
    ax.set_xlabel("searches")
    ax.set_title(f"Top queries (>= {report.min_shoppers} shoppers)")
    save(fig, "queries.png")
    return written

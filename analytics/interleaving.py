"""Which ranker won an interleaving experiment, from the service's search log.

    outcomes(log) -> polars.DataFrame        # one row per interleaved search served
    summarize(outcomes) -> list[InterleavingResult]   # one per experiment
    report(paths, experiment=, since=, until=) -> list[InterleavingResult]

An interleaved search is a search row (``event = "search"``) with an ``experiment`` name and
``teams``: the team ("A" or "B") that picked each shown product (:mod:`rerank.interleave`). A
click (an ``event = "click"`` row with the search's ``search_id``) is matched to the shown
product by ``product_id``, or by ``position`` (the 1-based rank, ``offset + i + 1``) when it
carries no product id; a product clicked twice counts once, and a click on a product the search
did not show counts for nobody. The team whose picks got more clicks wins the search; as many
clicks each is a tie; a search without a click on either team's picks says nothing and is left
out of wins, losses and ties (it is counted as ``unclicked``). This is the team-draft credit of
Radlinski, Kurup and Joachims (CIKM 2008).

Per experiment: wins (A won), losses (B won), ties, the preference
``Δ_AB = (wins + ties / 2) / (wins + losses + ties) - 0.5`` of Chapelle, Joachims, Radlinski and
Yue (TOIS 2012; > 0: A preferred), and a two-sided binomial (sign) test of ``wins`` out of
``wins + losses`` against 1/2 (``scipy.stats.binomtest``), with the 95% Wilson interval of A's
share of the decided searches. Each page is its own search (its own ``search_id``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl
from scipy.stats import binomtest

from personalization.searchlog import scan

__all__ = ["InterleavingResult", "experiments", "markdown", "outcomes", "report", "summarize"]

#: The interaction that credits a team.
CLICK = "click"


@dataclass(frozen=True)
class InterleavingResult:
    """One experiment's verdict.

    Attributes:
        experiment: The experiment's name (``interleave_name``).
        searches: Interleaved searches served (pages).
        unclicked: Of those, searches without a click on either team's picks.
        wins: Searches A won (more clicks on A's picks).
        losses: Searches B won.
        ties: Searches with clicks, as many on each team's picks.
        delta: Preference for A, ``(wins + ties/2) / (wins + losses + ties) - 0.5`` in
            [-0.5, 0.5]; None without a clicked search.
        p_value: Two-sided binomial test of wins among wins + losses against 1/2; None
            when no search was decided.
        share_a: ``wins / (wins + losses)``; None when no search was decided.
        ci_low: Lower end of the 95% Wilson interval of ``share_a``.
        ci_high: Upper end of it.
    """

    experiment: str
    searches: int
    unclicked: int
    wins: int
    losses: int
    ties: int
    delta: float | None
    p_value: float | None
    share_a: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def winner(self) -> str | None:
        """The better team, "A" or "B", when ``p_value < 0.05``; None otherwise."""
        if self.p_value is None or self.p_value >= 0.05 or self.wins == self.losses:
            return None
        return "A" if self.wins > self.losses else "B"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "winner": self.winner}


def outcomes(log: pl.LazyFrame | pl.DataFrame, clicks: pl.LazyFrame | None = None) -> pl.DataFrame:
    """Per interleaved search, the clicks each team's picks got and who won.

    Args:
        log: Rows of a search log (:data:`personalization.searchlog.SCHEMA`); its interleaved
            search rows are scored.
        clicks: Where to read the clicks from; None: ``log`` itself (pass the whole log here
            when ``log`` is a time window, so a click just after the window still counts).

    Returns:
        Columns ``experiment``, ``search_id``, ``timestamp``, ``clicks_a``, ``clicks_b``,
        ``outcome`` ("A", "B", "tie", or null without a click on either team's picks), one row
        per interleaved search, in time order.
    """
    lf = log.lazy()
    searches = lf.filter(
        (pl.col("event") == "search")
        & pl.col("experiment").is_not_null()
        & (pl.col("teams").list.len() > 0)
    ).select("experiment", "search_id", "timestamp", "offset", "results", "teams")
    shown = (
        searches.select(
            "search_id",
            "offset",
            pl.col("results").alias("product_id"),
            pl.col("teams").alias("team"),
            pl.int_ranges(0, pl.col("results").list.len()).alias("i"),
        )
        .explode("product_id", "team", "i")
        .with_columns(rank=pl.col("offset").fill_null(0) + pl.col("i") + 1)
    )
    taps = (clicks if clicks is not None else lf).filter(pl.col("event") == CLICK)
    by_id = taps.filter(pl.col("product_id").is_not_null()).select("search_id", "product_id")
    by_rank = taps.filter(pl.col("product_id").is_null() & pl.col("position").is_not_null())
    clicked = pl.concat(
        [
            shown.join(by_id, on=["search_id", "product_id"], how="semi"),
            shown.join(
                by_rank.select("search_id", pl.col("position").cast(pl.Int64).alias("rank")),
                on=["search_id", "rank"],
                how="semi",
            ),
        ]
    ).unique(["search_id", "i"])
    per_team = clicked.group_by("search_id").agg(
        clicks_a=(pl.col("team") == "A").sum(), clicks_b=(pl.col("team") == "B").sum()
    )
    out = (
        searches.select("experiment", "search_id", "timestamp")
        .join(per_team, on="search_id", how="left")
        .with_columns(pl.col("clicks_a", "clicks_b").fill_null(0).cast(pl.Int64))
        .with_columns(
            outcome=pl.when(pl.col("clicks_a") > pl.col("clicks_b"))
            .then(pl.lit("A"))
            .when(pl.col("clicks_a") < pl.col("clicks_b"))
            .then(pl.lit("B"))
            .when(pl.col("clicks_a") > 0)
            .then(pl.lit("tie"))
            .otherwise(pl.lit(None, dtype=pl.String))
        )
        .sort("timestamp", "search_id")
    )
    return out.collect()


def verdict(
    experiment: str, searches: int, wins: int, losses: int, ties: int
) -> InterleavingResult:
    """The figures of one experiment from its counts (see the module's docstring)."""
    clicked = wins + losses + ties
    delta = (wins + ties / 2) / clicked - 0.5 if clicked else None
    p_value = share = low = high = None
    if wins + losses:
        test = binomtest(wins, wins + losses, 0.5, alternative="two-sided")
        ci = test.proportion_ci(confidence_level=0.95, method="wilson")
        p_value, share, low, high = test.pvalue, wins / (wins + losses), ci.low, ci.high
    return InterleavingResult(
        experiment=experiment,
        searches=searches,
        unclicked=searches - clicked,
        wins=wins,
        losses=losses,
        ties=ties,
        delta=delta,
        p_value=None if p_value is None else float(p_value),
        share_a=share,
        ci_low=None if low is None else float(low),
        ci_high=None if high is None else float(high),
    )


def summarize(scored: pl.DataFrame) -> list[InterleavingResult]:
    """One :class:`InterleavingResult` per experiment of :func:`outcomes`' rows, by name."""
    counts = (
        scored.group_by("experiment")
        .agg(
            searches=pl.len(),
            wins=(pl.col("outcome") == "A").sum(),
            losses=(pl.col("outcome") == "B").sum(),
            ties=(pl.col("outcome") == "tie").sum(),
        )
        .sort("experiment")
    )
    return [
        verdict(r["experiment"], r["searches"], r["wins"], r["losses"], r["ties"])
        for r in counts.iter_rows(named=True)
    ]


def report(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    experiment: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[InterleavingResult]:
    """Every interleaving experiment in a search log (or the one named), judged.

    Args:
        paths: Search log folders or segment files (:func:`personalization.searchlog.scan`).
        experiment: Only this experiment; None: every one in the log.
        since: Searches served at or after this time (epoch seconds); their clicks count
            whenever they came.
        until: Searches served before this time.

    Returns:
        One result per experiment, by name; empty when the log holds no interleaved search.

    Raises:
        EventLogError: A path that is not a search log.
    """
    whole = scan(paths)
    window = whole
    if since is not None:
        window = window.filter(pl.col("timestamp") >= since)
    if until is not None:
        window = window.filter(pl.col("timestamp") < until)
    if experiment is not None:
        window = window.filter(pl.col("experiment") == experiment)
    return summarize(outcomes(window, clicks=whole))


def markdown(results: list[InterleavingResult]) -> str:
    """The results as a markdown table (A: the service's own ranker; B: the challenger)."""
    if not results:
        return "No interleaved search in the log."
    lines = [
        "| experiment | searches | unclicked | A wins | B wins | ties | Δ_AB | A's share of "
        "decided (95% CI) | p (sign test) | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        delta = f"{r.delta:+.3f}" if r.delta is not None else "n/a"
        share = (
            f"{r.share_a:.3f} ({r.ci_low:.3f}-{r.ci_high:.3f})" if r.share_a is not None else "n/a"
        )
        p = f"{r.p_value:.3g}" if r.p_value is not None else "n/a"
        word = f"{r.winner} is better" if r.winner else "no significant difference"
        lines.append(
            f"| {r.experiment} | {r.searches:,} | {r.unclicked:,} | {r.wins:,} | {r.losses:,} | "
            f"{r.ties:,} | {delta} | {share} | {p} | {word} |"
        )
    return "\n".join(lines)


def experiments(paths: Any) -> list[str]:
    """The names of the interleaving experiments a search log holds, sorted."""
    names = (
        scan(paths)
        .filter(pl.col("event") == "search")
        .select(pl.col("experiment").drop_nulls().unique())
        .collect()["experiment"]
    )
    return sorted(names.to_list())

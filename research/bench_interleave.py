"""``shopsearch bench-interleave``: does interleaving pick the better ranker, and how soon?

Simulated shoppers click on the rankings of two rankers whose offline NDCG@10 is known, served
two ways on the same simulated traffic:

* **interleaving**: every search shows a team-draft interleaving of A and B
  (:func:`rerank.interleave.team_draft`); a search is won by the team whose picks got more
  clicks (:func:`rerank.interleave.credit`), and a two-sided sign test over the decided
  searches (``scipy.stats.binomtest``) says whether one is preferred;
* **A/B split**: each search is shown A's or B's ranking (a fair coin); clicks per search of
  the two arms are compared with Welch's t-test (``scipy.stats.ttest_ind_from_stats``).

For each pair and each repeated run, the traffic is checked at a geometric grid of sample
sizes: a method "reaches p < 0.05" at the first size where its test is significant *in the
direction of the offline NDCG difference* (peeking at the grid is the same for both methods).
The report gives the median over runs of that size, how often each method's verdict at the
largest size agrees with the offline difference, and the ratio of the two medians: Chapelle,
Joachims, Radlinski and Yue ("Large-scale validation and analysis of interleaved search
evaluation", TOIS 2012) found interleaving needs one to two orders of magnitude fewer queries.

CPU-cheap: no model runs. The rankers are *noisy oracles* over a benchmark's real queries and
graded judgments (``shopsearch import homedepot`` writes one; tests pass a tiny one): for each
query, its judged products and ``distractors`` random catalog products (unjudged: relevance 0)
are scored by A as ``rel(q, p) + reference * e`` (``e ~ N(0, 1)``, one fixed draw). Each B is A
changed by ``c``, as a retrained model is its predecessor changed: ``c < 0`` removes a share
``-c`` of A's errors (``rel + (1 + c) * reference * e``: better, the same mistakes smaller);
``c > 0`` adds errors (``A + c * N(0, 1)``, a fresh draw: worse). Every ranking is computed
once. Clicks follow the project's simulator (research/simulate.py,
docs/research/simulator.md) with its defaults: rank ``r`` examined with probability
``1 / r ** examine_eta``, an examined product clicked with probability
``sigmoid(click_slope * (rel - click_offset))``, ``rel`` the judged grade scaled to 0..1;
a share ``noise_share`` of searches click examined products at ``noise_click`` whatever they
are. Shoppers here share one notion of relevance (no personal preference term): what is
compared is two relevance rankers. ``click_spread`` (default 0: the simulator as documented)
scales each search's click probabilities by a Gamma factor of mean 1 and that coefficient of
variation (capped at probability 1): shoppers who click much or little, the between-search
variance that Chapelle et al. name as what an A/B test pays for and interleaving does not.

    run(data, ...) -> InterleaveBench      # what ``bench-interleave`` runs
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest, ttest_ind_from_stats

from evaluation.data import load_benchmark
from evaluation.metrics import ndcg_at_k
from rerank.interleave import team_draft
from research.simulate import SimConfig, relevance_of

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "interleaving"
LIST_SIZE = 10
#: Team-draft flips at most one coin per two picks: 2 ** (LIST_SIZE / 2) coin patterns.
PATTERNS = 2 ** (LIST_SIZE // 2)
ALPHA = 0.05
DEFAULT_CHANGES = (-0.5, -0.2, -0.1, 0.1, 0.2, 0.5)


@dataclass(frozen=True)
class PairResult:
    """One pair of rankers: A against B (A changed by ``change``).

    Attributes:
        change: How B differs from A (< 0: a share of A's errors removed; > 0: noise added).
        ndcg_a: A's mean NDCG@10 over the simulated query pool.
        ndcg_b: B's.
        runs: Repeated runs (fresh traffic each).
        interleaving_agree: Share of runs whose interleaving verdict (more wins than losses)
            at the largest size agrees with the sign of ``ndcg_a - ndcg_b``.
        interleaving_significant: Share of runs significant (p < 0.05, right direction) at
            the largest size.
        interleaving_median: Median searches to p < 0.05 in the right direction (None: more
            than the largest size in over half the runs).
        ab_agree: As ``interleaving_agree``, for the A/B split (more clicks per search).
        ab_significant: As ``interleaving_significant``, for the A/B split.
        ab_median: As ``interleaving_median``, for the A/B split.
        delta: Mean preference ``Δ_AB`` of the interleaved runs at the largest size.
    """

    change: float
    ndcg_a: float
    ndcg_b: float
    runs: int
    interleaving_agree: float
    interleaving_significant: float
    interleaving_median: int | None
    ab_agree: float
    ab_significant: float
    ab_median: int | None
    delta: float


@dataclass(frozen=True)
class InterleaveBench:
    """The whole benchmark: its configuration and one row per pair."""

    data: str
    queries: int
    distractors: int
    reference: float
    max_searches: int
    runs: int
    noise_share: float
    click_spread: float = 0.0
    pairs: list[PairResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as markdown: a table and what it says."""

        def searches(n: int | None) -> str:
            return f"{n:,}" if n is not None else f"> {self.max_searches:,}"

        lines = [
            f"{self.queries:,} queries with graded judgments ({self.data}), each with its "
            f"judged products and {self.distractors} random catalog products; A scores "
            f"`rel + {self.reference} * e` (e ~ N(0,1), one draw), B is A changed by c: "
            "c < 0 keeps a share 1 + c of A's errors (better), c > 0 adds `c * N(0,1)` "
            "(worse); rankings computed once. Simulated clicks (the project's click model, "
            f"noise share {self.noise_share}, click spread {self.click_spread}) on up to {self.max_searches:,} searches per "
            f'method and run, {self.runs} runs per pair. "Agrees": the verdict at '
            f"{self.max_searches:,} searches has the sign of the NDCG@10 difference; "
            '"searches to p < 0.05": the median over runs of the first size (on a geometric '
            "grid) where the test is significant in that direction.",
            "",
            "| c | NDCG@10 A | NDCG@10 B | Δ NDCG | interleaving Δ_AB | interleaving "
            "agrees | interleaving searches to p < 0.05 | A/B agrees | A/B searches to "
            "p < 0.05 | A/B ÷ interleaving |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in self.pairs:
            ratio = (
                f"{p.ab_median / p.interleaving_median:.1f}x"
                if p.ab_median and p.interleaving_median
                else (
                    f"> {self.max_searches / p.interleaving_median:.0f}x"
                    if p.interleaving_median
                    else "n/a"
                )
            )
            lines.append(
                f"| {p.change:+g} | {p.ndcg_a:.4f} | {p.ndcg_b:.4f} | "
                f"{p.ndcg_a - p.ndcg_b:+.4f} | {p.delta:+.4f} | {p.interleaving_agree:.0%} | "
                f"{searches(p.interleaving_median)} | {p.ab_agree:.0%} | "
                f"{searches(p.ab_median)} | {ratio} |"
            )
        return "\n".join(lines)


class _Coins(random.Random):
    """The coin of one of the PATTERNS coin sequences (bit i: the i-th tied round)."""

    def __init__(self, pattern: int) -> None:
        super().__init__(0)
        self.pattern = pattern
        self.flips = 0

    def getrandbits(self, k: int) -> int:  # team_draft asks for one bit per tied round
        bit = (self.pattern >> self.flips) & 1
        self.flips += 1
        return bit


def grid(largest: int, start: int = 10, step: float = 1.25) -> np.ndarray:
    """Sample sizes checked: ``start``, then x``step`` each (rounded), ending at ``largest``."""
    sizes = []
    n = float(start)
    while n < largest:
        sizes.append(int(round(n)))
        n *= step
    sizes.append(largest)
    return np.unique(np.asarray(sizes, dtype=np.int64))


def _pools(
    qrels: dict[str, dict[str, float]],
    catalog: Sequence[str],
    distractors: int,
    rng: np.random.Generator,
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Per query: its candidates (judged first, then random unjudged ones) and their ``rel``."""
    qids = sorted(q for q, graded in qrels.items() if any(g > 1.0 for g in graded.values()))
    width = max(len(qrels[q]) for q in qids) + distractors if qids else 0
    rel = np.zeros((len(qids), width), dtype=np.float64)
    pools: list[list[str]] = []
    for i, q in enumerate(qids):
        judged = sorted(qrels[q])
        picked: list[str] = []
        while len(picked) < distractors:
            pid = catalog[int(rng.integers(len(catalog)))]
            if pid not in qrels[q] and pid not in picked:
                picked.append(pid)
        pools.append(judged + picked)
        rel[i, : len(judged)] = [relevance_of(qrels[q][p]) for p in judged]
    return qids, pools, rel


def _ranker(
    qids: list[str],
    pools: list[list[str]],
    rel: np.ndarray,
    qrels: dict[str, dict[str, float]],
    scored: list[np.ndarray],
    gain_offset: float,
) -> tuple[np.ndarray, float]:
    """A ranker's top LIST_SIZE per query (candidate indices; -1 pads) and mean NDCG@10."""
    top = np.full((len(qids), LIST_SIZE), -1, dtype=np.int64)
    ndcgs = []
    for i, (q, pool) in enumerate(zip(qids, pools, strict=True)):
        scores = scored[i]
        order = np.argsort(-scores, kind="stable")[:LIST_SIZE]
        top[i, : len(order)] = order
        ndcgs.append(
            ndcg_at_k(
                qrels[q],
                {p: float(s) for p, s in zip(pool, scores, strict=True)},
                LIST_SIZE,
                gain_offset,
            )
        )
    return top, float(np.mean(ndcgs)) if ndcgs else 0.0


def _interleavings(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every team-draft merge of each query's two lists: candidate indices and team (1: A),
    shapes ``(queries, PATTERNS, LIST_SIZE)`` (-1 / 0 pad)."""
    n = a.shape[0]
    ids = np.full((n, PATTERNS, LIST_SIZE), -1, dtype=np.int64)
    team_a = np.zeros((n, PATTERNS, LIST_SIZE), dtype=bool)
    for i in range(n):
        la = [str(x) for x in a[i] if x >= 0]
        lb = [str(x) for x in b[i] if x >= 0]
        for pattern in range(PATTERNS):
            merged = team_draft(la, lb, LIST_SIZE, _Coins(pattern))
            m = len(merged.ids)
            ids[i, pattern, :m] = [int(x) for x in merged.ids]
            team_a[i, pattern, :m] = [t == "A" for t in merged.teams]
    return ids, team_a


def _clicks(
    shown: np.ndarray,
    rel: np.ndarray,
    rows: np.ndarray,
    config: SimConfig,
    rng: np.random.Generator,
    spread: float = 0.0,
) -> np.ndarray:
    """Simulated clicks (bool, same shape as ``shown``: searches x LIST_SIZE)."""
    n = shown.shape[0]
    valid = shown >= 0
    r = rel[rows[:, None], np.where(valid, shown, 0)]
    ranks = np.arange(1, LIST_SIZE + 1, dtype=np.float64)
    examined = rng.random((n, LIST_SIZE)) < 1.0 / ranks**config.examine_eta
    p_click = 1.0 / (1.0 + np.exp(-config.click_slope * (r - config.click_offset)))
    noisy = rng.random(n) < config.noise_share
    p_click = np.where(noisy[:, None], config.noise_click, p_click)
    if spread > 0:  # how much this search's shopper clicks: Gamma, mean 1, CV ``spread``
        factor = rng.gamma(1.0 / spread**2, spread**2, size=n)
        p_click = np.minimum(p_click * factor[:, None], 1.0)
    return examined & valid & (rng.random((n, LIST_SIZE)) < p_click)


def _first_significant(p: np.ndarray, right: np.ndarray, sizes: np.ndarray) -> int | None:
    hit = np.flatnonzero((p < ALPHA) & right)
    return int(sizes[hit[0]]) if hit.size else None


def _median(values: list[int | None]) -> int | None:
    """The median, counting a run that never reached significance as infinitely many."""
    arr = np.sort(np.asarray([math.inf if v is None else v for v in values], dtype=np.float64))
    mid = float(np.median(arr))
    return None if math.isinf(mid) else int(round(mid))


def compare(
    rel: np.ndarray,
    top_a: np.ndarray,
    top_b: np.ndarray,
    better: int,
    sizes: np.ndarray,
    runs: int,
    config: SimConfig,
    seed: int,
    spread: float = 0.0,
) -> dict[str, Any]:
    """Interleaving and A/B on the same kind of traffic, ``runs`` times.

    Args:
        rel: ``(queries, candidates)`` relevance 0..1.
        top_a: A's top LIST_SIZE candidate indices per query.
        top_b: B's.
        better: +1 when A's offline NDCG@10 is higher, -1 when B's, 0 when equal.
        sizes: The sample sizes checked (ascending; the last is the largest).
        runs: Repetitions (fresh traffic each).
        config: The click model.
        seed: Seeds the traffic.
        spread: Coefficient of variation of the per-search click propensity (0: none).
    """
    ids, team_a = _interleavings(top_a, top_b)
    n_q, largest = rel.shape[0], int(sizes[-1])
    out: dict[str, list[Any]] = {
        k: [] for k in ("il_n", "il_ok", "il_sig", "ab_n", "ab_ok", "ab_sig", "delta")
    }
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        # interleaving
        rows = rng.integers(n_q, size=largest)
        pattern = rng.integers(PATTERNS, size=largest)
        shown, teams = ids[rows, pattern], team_a[rows, pattern]
        clicked = _clicks(shown, rel, rows, config, rng, spread)
        ca = (clicked & teams).sum(1)
        cb = (clicked & ~teams).sum(1)
        wins, losses = np.cumsum(ca > cb), np.cumsum(ca < cb)
        ties = np.cumsum((ca == cb) & (ca > 0))
        w, lo = wins[sizes - 1], losses[sizes - 1]
        p = np.asarray(
            [
                binomtest(int(x), int(x + y)).pvalue if x + y else 1.0
                for x, y in zip(w, lo, strict=True)
            ]
        )
        direction = np.sign(w - lo) == better
        out["il_n"].append(_first_significant(p, direction, sizes))
        out["il_ok"].append(bool(np.sign(w[-1] - lo[-1]) == better))
        out["il_sig"].append(bool(p[-1] < ALPHA and direction[-1]))
        decided = wins[-1] + losses[-1] + ties[-1]
        out["delta"].append((wins[-1] + ties[-1] / 2) / decided - 0.5 if decided else 0.0)
        # A/B split
        rows = rng.integers(n_q, size=largest)
        arm_a = rng.random(largest) < 0.5
        shown = np.where(arm_a[:, None], top_a[rows], top_b[rows])
        clicks = _clicks(shown, rel, rows, config, rng, spread).sum(1).astype(np.float64)
        stats = []
        for arm in (arm_a, ~arm_a):
            x = np.where(arm, clicks, 0.0)
            stats.append(
                (np.cumsum(arm)[sizes - 1], np.cumsum(x)[sizes - 1], np.cumsum(x * x)[sizes - 1])
            )
        (na, sa, qa), (nb, sb, qb) = stats
        with np.errstate(divide="ignore", invalid="ignore"):
            ma, mb = sa / na, sb / nb
            va = (qa - na * ma**2) / (na - 1)
            vb = (qb - nb * mb**2) / (nb - 1)
            t = ttest_ind_from_stats(ma, np.sqrt(va), na, mb, np.sqrt(vb), nb, equal_var=False)
        p = np.nan_to_num(np.asarray(t.pvalue, dtype=np.float64), nan=1.0)
        direction = np.sign(ma - mb) == better
        out["ab_n"].append(_first_significant(p, direction, sizes))
        out["ab_ok"].append(bool(np.sign(ma[-1] - mb[-1]) == better))
        out["ab_sig"].append(bool(p[-1] < ALPHA and direction[-1]))
    return out


def run(
    data: str | Path,
    *,
    changes: Sequence[float] = DEFAULT_CHANGES,
    reference: float = 0.6,
    distractors: int = 20,
    max_searches: int = 100_000,
    runs: int = 20,
    split: str | None = "test",
    max_queries: int | None = None,
    noise_share: float | None = None,
    click_spread: float = 0.0,
    seed: int = 0,
) -> InterleaveBench:
    """Interleaving against an A/B split on simulated clicks (see the module's docstring).

    Args:
        data: A benchmark directory (``catalog``, ``queries``, ``qrels``: what
            ``shopsearch import homedepot`` writes).
        changes: One B per value: A changed by it (see the module's docstring; >= -1).
        reference: A's noise.
        distractors: Random unjudged catalog products per query's candidates.
        max_searches: The largest sample per method and run.
        runs: Repetitions per pair.
        split: The queries' split; None: every query.
        max_queries: At most this many queries (a seeded sample); None: all.
        noise_share: Share of searches clicking at random; None: the simulator's default.
        click_spread: Coefficient of variation of each search's click propensity (0: none).
        seed: Seeds the candidates, the rankers' noise and the traffic.

    Raises:
        ShopsearchError: Not a benchmark directory, or no query with a relevant judgment.
    """
    from core.errors import ShopsearchError

    bench = load_benchmark(data)
    if split is None:
        qrels: dict[str, dict[str, float]] = {}
        for qid, pid, grade in bench.qrels.select("query_id", "product_id", "grade").iter_rows():
            qrels.setdefault(qid, {})[pid] = grade
    else:
        qrels = bench.split(split)[1]
    rng = np.random.default_rng(seed)
    if max_queries is not None and len(qrels) > max_queries:
        keep = rng.choice(sorted(qrels), size=max_queries, replace=False)
        qrels = {q: qrels[q] for q in sorted(keep)}
    catalog = bench.catalog["product_id"].to_list()
    qids, pools, rel = _pools(qrels, catalog, distractors, rng)
    if not qids:
        raise ShopsearchError(f"{data}: no query with a judged product above grade 1")
    defaults = SimConfig()
    config = SimConfig(noise_share=defaults.noise_share if noise_share is None else noise_share)
    errors = [rng.standard_normal(len(pool)) for pool in pools]
    scores_a = [rel[i, : len(pool)] + reference * errors[i] for i, pool in enumerate(pools)]
    top_a, ndcg_a = _ranker(qids, pools, rel, qrels, scores_a, bench.gain_offset)
    sizes = grid(max_searches)
    pairs = []
    for k, change in enumerate(changes):
        if change < -1:
            raise ShopsearchError(f"a change of {change}: it removes at most all errors (>= -1)")
        if change <= 0:
            scores_b = [
                rel[i, : len(pool)] + (1 + change) * reference * errors[i]
                for i, pool in enumerate(pools)
            ]
        else:
            scores_b = [a + change * rng.standard_normal(len(a)) for a in scores_a]
        top_b, ndcg_b = _ranker(qids, pools, rel, qrels, scores_b, bench.gain_offset)
        better = int(np.sign(round(ndcg_a - ndcg_b, 12)))
        got = compare(rel, top_a, top_b, better, sizes, runs, config, seed * 1000 + k, click_spread)
        pairs.append(
            PairResult(
                change=float(change),
                ndcg_a=ndcg_a,
                ndcg_b=ndcg_b,
                runs=runs,
                interleaving_agree=float(np.mean(got["il_ok"])),
                interleaving_significant=float(np.mean(got["il_sig"])),
                interleaving_median=_median(got["il_n"]),
                ab_agree=float(np.mean(got["ab_ok"])),
                ab_significant=float(np.mean(got["ab_sig"])),
                ab_median=_median(got["ab_n"]),
                delta=float(np.mean(got["delta"])),
            )
        )
    return InterleaveBench(
        data=Path(data).name,
        queries=len(qids),
        distractors=distractors,
        reference=reference,
        max_searches=max_searches,
        runs=runs,
        noise_share=config.noise_share,
        click_spread=click_spread,
        pairs=pairs,
    )

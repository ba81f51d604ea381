"""Learn personalization from a shop's own log, corrected for position bias.

    log -> impressions (what was shown, what was done)      personalization.impressions
        -> features as they were at each search (replay)    personalization.features
        -> examination per rank, estimated from the log     training.propensity
        -> the fusion model, trained with clipped IPW       training.personal (personalization.ranker)

One function, :func:`train_from_log`, used by ``shopsearch train personal`` and by the
personalization benchmark alike. Relevance comes from the caller (``rank``: the relevance-only
pipeline, so training sees the scores serving will give).

Training lists are the shown products (the top ``max_rank`` of each shown list); those among
the query's relevance-only candidates keep the relevance serving gives them, and those outside
(a log written by another engine, the usual case when a shop adopts shopsearch) are scored
exactly against the same candidates (:func:`outside_scorer`: the cross-encoder's logit for the
pair, the first stage's fused score from a deeper retrieval, standardised with the candidates'
statistics) so they are not dropped; the label of each is what the shopper did with it (purchase > add to cart > click > nothing),
each interacted product's weight is ``label / max(theta_rank, clip)``, and the loss is a
softmax over each list (the IPW listwise loss of Ai et al., "Unbiased Learning to Rank with
Unbiased Propensity Estimation", SIGIR 2018), divided by the list's number of interacted
products so the weights keep their size. Early stopping reads the validation period's
inverse-propensity-scored DCG@10. The features include what the log says about each
(query, product), as clicks over expected clicks under the same curve
(:mod:`personalization.clickstats`), counted only from lists shown before each search;
the model keeps the whole log's counts for serving. ``correct=False`` trains the naive model
(``theta = 1`` everywhere: clicks against shown-not-clicked, raw click-through rates).

Honest on a small log: the examination curve comes with a bootstrap interval per rank
(:func:`personalization.propensity.bootstrap_propensities`, searches resampled) and a warning
when it is too wide to trust (:data:`personalization.propensity.MAX_WIDTH`); a model whose
validation IPS-DCG@10 does not beat the relevance-only baseline is saved marked
``beats_baseline: false``, which :meth:`personalization.ranker.PersonalRanker.load` (and so
``serve --personal`` and ``SearchPipeline.open``) refuses unless it was trained with
``force=True`` (``train personal --force``).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from personalization.clickstats import ClickCounts, ClickStats
from personalization.events import Event, read_events
from personalization.features import FEATURE_NAMES, compute_features, with_clicks
from personalization.impressions import Impression, ImpressionStats, impressions_from_events
from personalization.ingest import without_forgotten
from personalization.personalizer import VectorLookup, recent_vectors
from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore, UserProfile
from personalization.propensity import CHECKED_RANKS, MAX_WIDTH
from personalization.ranker import PersonalRanker
from personalization.searchlog import is_search_log, log_events
from personalization.searchlog_writer import log_pseudonymizer
from rerank.pipeline import DEFAULT_RERANK_DEPTH, SearchPipeline
from retrieval.hits import RankedHit, hit_text
from retrieval.retriever import MAX_K
from training.config import LogTrainConfig
from training.personal import Group, train_personal
from training.propensity import (
    Propensities,
    PropensityInterval,
    bootstrap_propensities,
    estimate_propensities,
)

#: Ranks relevance-only: queries -> per query, its candidates with ``relevance`` set (and
#: vectors, for the similarity features), best first.
RankFn = Callable[[Sequence[str]], list[list[RankedHit]]]
#: Looks up what the features read about products (brand, category, price), as the index stores
#: it: ``ids -> {product_id: payload}`` (missing ids absent).
ItemLookup = Callable[[Sequence[str]], dict[str, dict[str, Any]]]
#: Features the examination model must not see: they describe where an item stood, or (the
#: click evidence) need the examination curve it estimates.
POSITION_FEATURES = ("rank_discount", "query_coec", "query_exposure")
#: Scores shown products that are not among their query's relevance-only candidates, on the
#: candidates' scale: ``(queries, per query its candidates as ranked, per query the ids) -> per
#: query a hit (relevance set) for each id it could score``. See :func:`outside_scorer`.
OutsideFn = Callable[
    [Sequence[str], Sequence[Sequence[RankedHit]], Sequence[Sequence[str]]], list[list[RankedHit]]
]
#: A log of more rows (shown products) than this gets fewer bootstrap resamples (at least
#: :data:`MIN_RESAMPLES`), so the interval costs about what ``bootstrap`` resamples of this many
#: rows do (a few seconds); so large a log's interval is narrow anyway.
BOOTSTRAP_ROWS = 5000
MIN_RESAMPLES = 20
_DAY = 86400.0
#: Validation must beat the relevance-only baseline by more than this IPS-DCG@10 (the early
#: stopping's own improvement threshold) for the model to count as beating it.
BEAT_MARGIN = 1e-5


@dataclass(frozen=True)
class LogTrainReport:
    """What training from a log used, skipped and learned."""

    log: ImpressionStats
    train_searches: int
    val_searches: int
    shown_products_used: int
    skipped: dict[str, int]
    propensity: list[float]
    corrected: bool
    best_val_ips_dcg: float
    baseline_val_ips_dcg: float
    history: list[dict]
    #: Of ``shown_products_used``, those outside their query's relevance-only candidates,
    #: scored by :func:`outside_scorer` (0 without one).
    shown_outside_scored: int = 0
    #: The examination curve's bootstrap interval (:meth:`PropensityInterval.as_dict`), or
    #: None (no correction, or ``bootstrap=0``).
    propensity_interval: dict[str, Any] | None = None
    #: Why the curve is not to be trusted (its interval too wide), or None.
    curve_warning: str | None = None
    #: Whether validation beat the relevance-only baseline (serving refuses it if not,
    #: unless ``forced``).
    beats_baseline: bool = True
    forced: bool = False
    #: Why outside products were not scored (None when they were, or when there were none).
    outside_not_scored: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Lesson:
    """One shown list, featurized as it was at the time of the search."""

    impression: Impression
    positions: np.ndarray  # 1-based shown positions of the kept products
    labels: np.ndarray  # 0..3 per kept product
    relevance: np.ndarray
    feats: np.ndarray  # click columns 0 here: see with_clicks()
    clicks: ClickCounts  # the log's counts for these products, as they stood at the search
    outside: np.ndarray | None = None  # True where the product was not a relevance candidate

    def with_clicks(self, theta: Sequence[float] | None) -> np.ndarray:
        """The features with the click evidence computed for the examination curve ``theta``
        (None: no correction)."""
        return with_clicks(self.feats, self.clicks.features(theta))


def click_snapshots(
    impressions: Sequence[Impression],
    wanted: Sequence[tuple[float, str, Sequence[str]]],
    max_rank: int,
    delay_s: float,
) -> tuple[list[ClickCounts], ClickStats]:
    """The click counts each search could have read, and the counts of the whole log.

    Args:
        impressions: The log's shown lists, in time order.
        wanted: ``(timestamp, query, product ids)`` per search to look up, in time order.
        max_rank: Ranks counted.
        delay_s: A shown list counts for searches at least this long after it (the shop
            refreshes its counts in batches, and its clicks come after it).

    Returns:
        Per wanted search, its products' counts as they stood then, and the
        :class:`ClickStats` of every impression.
    """
    stats = ClickStats(max_rank)
    out = []
    j = 0
    for ts, query, pids in wanted:
        while j < len(impressions) and impressions[j].timestamp + delay_s <= ts:
            m = impressions[j]
            stats.add(m.query, m.shown, m.labels, m.offset)
            j += 1
        out.append(stats.lookup(query, pids))
    for m in impressions[j:]:
        stats.add(m.query, m.shown, m.labels, m.offset)
    return out, stats


def lessons_from_log(
    events: Sequence[Event],
    rank: RankFn,
    vectors: VectorLookup,
    max_rank: int = 10,
    flush_s: float = 3600.0,
    batch_queries: int = 64,
    items: ItemLookup | None = None,
    outside: OutsideFn | None = None,
) -> tuple[list[Lesson], ImpressionStats, dict[str, int], ClickStats]:
    """Impressions with features computed from what was known before each search.

    ``items`` supplies the catalog attributes of logged products that are not among the
    candidates (see :func:`features_at`). ``outside`` scores the shown products that are not
    among the query's candidates (:func:`outside_scorer`); None: they are skipped, counted
    as such.

    Returns:
        (lessons in time order, the log's counts, skipped shown products/searches by reason,
        the click counts of the whole log).

    Raises:
        ShopsearchError: The log has no search with a shown list.
    """
    impressions, stats = impressions_from_events(events)
    if not impressions:
        raise ShopsearchError(
            f"the log has {stats.searches} searches and none with a shown list: training "
            "needs the 'results' field on search events (the product ids shown, in order)"
        )
    unknown = _not_in_index(impressions, items)
    queries = sorted({m.query for m in impressions})
    candidates: dict[str, dict[str, RankedHit]] = {}
    for i in range(0, len(queries), batch_queries):
        chunk = queries[i : i + batch_queries]
        for q, hits in zip(chunk, rank(chunk), strict=True):
            candidates[q] = {h.product_id: h for h in hits}
    scored = _score_outside(impressions, candidates, unknown, max_rank, outside, batch_queries)
    skipped: Counter[str] = Counter()
    usable: list[tuple[Impression, list[tuple[int, str, int]]]] = []
    for m in impressions:
        cands = {**scored.get(m.query, {}), **candidates.get(m.query, {})}
        kept = [
            (pos, pid, label)
            for pos, (pid, label) in zip(
                m.ranks(), zip(m.shown, m.labels, strict=True), strict=True
            )
            if pos <= max_rank and pid in cands
        ]
        lost = [
            pid
            for pos, pid in zip(m.ranks(), m.shown, strict=True)
            if pos <= max_rank and pid not in cands
        ]
        gone = sum(pid in unknown for pid in lost)
        if gone:
            skipped["shown product not in the index"] += gone
        if len(lost) > gone:
            skipped["shown product not among the query's relevance-only candidates"] += (
                len(lost) - gone
            )
        if len(kept) < 2:
            skipped["search with fewer than 2 usable shown products"] += 1
            continue
        usable.append((m, kept))

    def hit(query: str, pid: str) -> RankedHit:
        return candidates[query].get(pid) or scored[query][pid]

    searches = [
        SearchAt(m.timestamp, m.user_id, [hit(m.query, pid) for _, pid, _ in kept])
        for m, kept in usable
    ]
    snapshots, clicks = click_snapshots(
        impressions,
        [(m.timestamp, m.query, [pid for _, pid, _ in kept]) for m, kept in usable],
        max_rank,
        flush_s,
    )
    lessons = [
        Lesson(
            m,
            np.array([p for p, _, _ in kept], dtype=np.int64),
            np.array([lab for _, _, lab in kept], dtype=np.float32),
            np.array([cands.relevance or 0.0 for cands in at.hits], dtype=np.float32),
            feats,
            snap,
            np.array([pid not in candidates[m.query] for _, pid, _ in kept], dtype=bool),
        )
        for (m, kept), at, (_, feats), snap in zip(
            usable,
            searches,
            features_at(events, searches, vectors, flush_s, items),
            snapshots,
            strict=True,
        )
    ]
    return lessons, stats, dict(skipped), clicks


def _score_outside(
    impressions: Sequence[Impression],
    candidates: dict[str, dict[str, RankedHit]],
    unknown: set[str],
    max_rank: int,
    outside: OutsideFn | None,
    batch_queries: int,
) -> dict[str, dict[str, RankedHit]]:
    """Per query, the hits ``outside`` scored for its shown products outside its candidates."""
    if outside is None:
        return {}
    wanted: dict[str, set[str]] = {}
    for m in impressions:
        cands = candidates.get(m.query, {})
        for pos, pid in zip(m.ranks(), m.shown, strict=True):
            if pos <= max_rank and pid not in cands and pid not in unknown:
                wanted.setdefault(m.query, set()).add(pid)
    queries = sorted(wanted)
    out: dict[str, dict[str, RankedHit]] = {}
    for i in range(0, len(queries), batch_queries):
        chunk = queries[i : i + batch_queries]
        got = outside(
            chunk,
            [sorted(candidates[q].values(), key=lambda h: -(h.relevance or 0.0)) for q in chunk],
            [sorted(wanted[q]) for q in chunk],
        )
        for q, hits in zip(chunk, got, strict=True):
            out[q] = {h.product_id: h for h in hits}
    return out


def _z_against(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``x`` standardised with the mean and deviation of ``reference`` (as
    :func:`rerank.blend.blend` standardises a candidate list: 0 when it does not vary)."""
    std = float(reference.std()) if len(reference) else 0.0
    if std <= 1e-9:
        return np.zeros(len(x), dtype=np.float64)
    return (np.asarray(x, dtype=np.float64) - float(reference.mean())) / std


def outside_relevance(
    cands: Sequence[RankedHit],
    cross: np.ndarray | None,
    retrieval: np.ndarray,
    retrieval_weight: float,
) -> np.ndarray:
    """The relevance of products outside a candidate list, on the list's scale.

    :func:`rerank.blend.blend` with each score standardised by the *candidates'* mean and
    deviation, so the candidates keep exactly the relevance serving gives them and an outside
    product reads what it would next to them.

    Args:
        cands: The query's candidates, relevance-ranked (``cross`` set with a cross-encoder).
        cross: The outside products' cross-encoder logits ``(n,)``; None without one.
        retrieval: Their first-stage scores ``(n,)``.
        retrieval_weight: The blend weight in use.

    Returns:
        float32 ``(n,)``.
    """
    ref_retrieval = np.array([h.retrieval for h in cands], dtype=np.float64)
    z_retrieval = _z_against(retrieval, ref_retrieval)
    if cross is None:
        return z_retrieval.astype(np.float32)
    if retrieval_weight <= 0:
        return np.asarray(cross, dtype=np.float32)
    ref_cross = np.array([h.cross or 0.0 for h in cands], dtype=np.float64)
    return (
        (1 - retrieval_weight) * _z_against(cross, ref_cross) + retrieval_weight * z_retrieval
    ).astype(np.float32)


def outside_scorer(pipeline: SearchPipeline, deep: int = MAX_K) -> OutsideFn | None:
    """Exact scores for shown products outside a query's relevance-only candidates.

    Per query: the products' payloads and vectors from the index; the cross-encoder's logit
    for each (query, product) pair (the reranker scores any pair); the first stage's fused
    score and rank from one retrieval ``deep`` deep (the fusion's own score of a product it
    ranks there; 0, and rank ``deep + 1``, for one that no source ranks that deep); then the
    relevance on the candidates' scale (:func:`outside_relevance`). Products the index lacks
    are left out (counted apart by :func:`lessons_from_log`).

    Returns:
        An :data:`OutsideFn`, or None when the pipeline's relevance is a learned final stage
        (its score is not the blend these scores reproduce; such products are then skipped,
        and the report says so).
    """
    if getattr(pipeline, "ranker", None) is not None:
        return None
    retriever, reranker = pipeline.retriever, pipeline.reranker

    def score(
        queries: Sequence[str],
        cands: Sequence[Sequence[RankedHit]],
        ids: Sequence[Sequence[str]],
    ) -> list[list[RankedHit]]:
        deeper = retriever.search_batch(list(queries), k=deep)
        out = []
        for query, cand, wanted, found in zip(queries, cands, ids, deeper, strict=True):
            payloads = retriever.payloads(list(wanted))
            wanted = [p for p in wanted if p in payloads]
            if not wanted or not cand:
                out.append([])
                continue
            vectors = retriever.vectors(wanted)
            at = {h.product_id: h for h in found}
            hits = [
                RankedHit(
                    p,
                    0.0,
                    at[p].retrieval if p in at else 0.0,
                    at[p].retrieval_rank if p in at else deep + 1,
                    payload=payloads[p],
                    vector=vectors.get(p),
                )
                for p in wanted
            ]
            cross = (
                reranker.score(query, [hit_text(h) for h in hits]) if reranker is not None else None
            )
            relevance = outside_relevance(
                cand,
                cross,
                np.array([h.retrieval for h in hits]),
                pipeline.retrieval_weight,
            )
            out.append(
                [
                    RankedHit(
                        h.product_id,
                        float(r),
                        h.retrieval,
                        h.retrieval_rank,
                        relevance=float(r),
                        cross=None if cross is None else float(cross[i]),
                        payload=h.payload,
                        vector=h.vector,
                    )
                    for i, (h, r) in enumerate(zip(hits, relevance, strict=True))
                ]
            )
        return out

    return score


def _not_in_index(impressions: Sequence[Impression], items: ItemLookup | None) -> set[str]:
    """The shown product ids the index does not have (empty without ``items`` to ask).

    Raises:
        ShopsearchError: The index has none of them: the log was recorded on another catalog
            (or ids of another scheme), which no reranker depth can mend.
    """
    if items is None:
        return set()
    shown = sorted({pid for m in impressions for pid in m.shown})
    known: set[str] = set()
    for i in range(0, len(shown), 1000):
        known.update(items(shown[i : i + 1000]))
    unknown = {pid for pid in shown if pid not in known}
    if shown and not known:
        clicked = {
            pid for m in impressions for pid, lab in zip(m.shown, m.labels, strict=True) if lab
        }
        raise ShopsearchError(
            f"none of the {len(shown):,} shown product ids ({len(clicked):,} of them with an "
            f"interaction) of the log is in the index (e.g. {shown[0]!r}): is this the index "
            "the log was recorded on?"
        )
    return unknown


@dataclass(frozen=True)
class SearchAt:
    """A search to featurize: when, by whom (raw id, in memory only), and its candidates."""

    timestamp: float
    user_id: str = field(repr=False)
    hits: Sequence[RankedHit]


def features_at(
    events: Sequence[Event],
    searches: Sequence[SearchAt],
    vectors: VectorLookup,
    flush_s: float = 3600.0,
    items: ItemLookup | None = None,
) -> list[tuple[UserProfile, np.ndarray]]:
    """Each search's profile and features as a live shop would have had them.

    The events are replayed in time order into a throw-away profile store, in steps of
    ``flush_s`` seconds (profiles and popularity update as ingest would), and each search
    reads the profile of its shopper from events strictly before it. The store first gets
    the catalog attributes (brand, category, price) of every product the log and the
    candidates name, as ``events ingest`` gives the serving store, so the brand, category
    and price features are computed in training as they are at query time.

    Args:
        events: The whole log (any order).
        searches: The searches to featurize, in time order.
        vectors: Product vectors from the index.
        flush_s: Replay step, seconds.
        items: Payloads of logged products (the candidates' own payloads are used first);
            None: only the candidates' payloads.

    Returns:
        Per search: (point-in-time profile, features ``(len(hits), len(FEATURE_NAMES))``).
    """
    ordered = sorted(events, key=lambda e: e.timestamp)
    out: list[tuple[UserProfile, np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="shopsearch-replay-") as tmp:
        store = ProfileStore(Path(tmp) / "replay.sqlite")
        pz = Pseudonymizer(secrets.token_bytes(32))  # replay only: deleted with the folder
        store.upsert_items(_catalog_records(ordered, searches, items))
        ei, pending = 0, []
        next_flush = ordered[0].timestamp + flush_s if ordered else 0.0
        try:
            for at in searches:
                while ei < len(ordered) and ordered[ei].timestamp < at.timestamp:
                    pending.append(ordered[ei])
                    ei += 1
                    if pending[-1].timestamp >= next_flush:
                        store.ingest(pending, pz)
                        pending, next_flush = [], pending[-1].timestamp + flush_s
                if pending and at.timestamp >= next_flush:
                    store.ingest(pending, pz)
                    pending, next_flush = [], at.timestamp + flush_s
                profile = store.profile(pz.pseudonym(at.user_id), before=at.timestamp)
                feats = compute_features(
                    profile,
                    at.hits,
                    store.popularity([h.product_id for h in at.hits]),
                    recent_vectors(profile, vectors),
                )
                out.append((profile, feats))
        finally:
            store.close()
    return out


def _catalog_records(
    events: Sequence[Event], searches: Sequence[SearchAt], items: ItemLookup | None
) -> list[dict[str, Any]]:
    """What the profiles need about every product the log or the candidates name."""
    records: dict[str, dict[str, Any]] = {}
    for at in searches:
        for h in at.hits:
            records.setdefault(h.product_id, {**h.payload, "product_id": h.product_id})
    missing = sorted({e.product_id for e in events if e.product_id} - records.keys())
    if items is not None:
        for i in range(0, len(missing), 1000):
            for pid, payload in items(missing[i : i + 1000]).items():
                records[pid] = {**payload, "product_id": pid}
    return list(records.values())


def estimate_from_lessons(lessons: Sequence[Lesson], max_rank: int) -> Propensities:
    """Examination per rank from the lessons' clicks (regression-EM on their features)."""
    keep = [i for i, name in enumerate(FEATURE_NAMES) if name not in POSITION_FEATURES]
    return estimate_propensities(
        np.concatenate([ls.positions for ls in lessons]),
        np.concatenate([(ls.labels > 0).astype(np.float64) for ls in lessons]),
        np.concatenate([ls.feats[:, keep] for ls in lessons]),
        max_rank=max_rank,
    )


def interval_from_lessons(
    lessons: Sequence[Lesson], max_rank: int, resamples: int, seed: int
) -> PropensityInterval:
    """The bootstrap interval of :func:`estimate_from_lessons`' curve (searches resampled).

    A log of more than :data:`BOOTSTRAP_ROWS` rows gets ``resamples * BOOTSTRAP_ROWS / rows``
    resamples (at least :data:`MIN_RESAMPLES`)."""
    keep = [i for i, name in enumerate(FEATURE_NAMES) if name not in POSITION_FEATURES]
    rows = sum(len(ls.positions) for ls in lessons)
    n = (
        resamples
        if rows <= BOOTSTRAP_ROWS
        else max(MIN_RESAMPLES, resamples * BOOTSTRAP_ROWS // rows)
    )
    return bootstrap_propensities(
        np.concatenate([ls.positions for ls in lessons]),
        np.concatenate([(ls.labels > 0).astype(np.float64) for ls in lessons]),
        np.concatenate([ls.feats[:, keep] for ls in lessons]),
        np.concatenate([np.full(len(ls.positions), i) for i, ls in enumerate(lessons)]),
        max_rank=max_rank,
        resamples=n,
        seed=seed,
    )


def curve_warning(interval: PropensityInterval) -> str | None:
    """One line when the curve is too uncertain to trust (its 95% interval at one of ranks
    2..:data:`CHECKED_RANKS` wider than :data:`MAX_WIDTH`), saying about how many clicks it
    needs; None otherwise."""
    if not interval.uncertain():
        return None
    rank, width = interval.widest()
    return (
        f"the examination curve is uncertain: its 95% interval at rank {rank} is "
        f"[{interval.low[rank - 1]:.2f}, {interval.high[rank - 1]:.2f}] (wider than "
        f"{MAX_WIDTH:g}) from {int(interval.clicks.sum())} clicks; about "
        f"{interval.clicks_needed():,} clicks would narrow ranks 2-{CHECKED_RANKS} to "
        f"{MAX_WIDTH:g}: the position-bias correction is a guess until then"
    )


def groups_from_lessons(
    lessons: Sequence[Lesson],
    propensity: Propensities | None,
    clip: float,
    click_evidence: bool = True,
) -> list[Group]:
    """Training groups: label = interacted, weight = grade / propensity (1 when None)."""
    out = []
    theta = list(propensity.theta) if propensity is not None else None
    for ls in lessons:
        inverse = (
            propensity.inverse_weights(ls.positions, clip)
            if propensity is not None
            else np.ones(len(ls.positions))
        )
        out.append(
            Group(
                ls.impression.search_id,
                ls.relevance,
                ls.with_clicks(theta) if click_evidence else ls.feats,
                (ls.labels > 0).astype(np.float32),
                (np.maximum(ls.labels, 1.0) * inverse).astype(np.float32),
            )
        )
    return out


def train_from_log(
    events: Sequence[Event],
    rank: RankFn,
    vectors: VectorLookup,
    config: LogTrainConfig | None = None,
    relevance_source: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    items: ItemLookup | None = None,
    outside: OutsideFn | None = None,
    force: bool = False,
    outside_not_scored: str | None = None,
    lessons: tuple | None = None,
) -> tuple[PersonalRanker, LogTrainReport]:
    """Trains the fusion model from a log of impressions and interactions.

    Args:
        events: The validated log (:func:`personalization.events.read_events`).
        rank: The relevance-only pipeline (see :data:`RankFn`).
        vectors: Product vectors from the index (for the similarity features).
        config: Options.
        relevance_source: What produced the relevance scores (reranker fingerprint and blend
            weight), recorded in the model so serving can refuse another.
        log: Progress lines.
        items: Catalog attributes of logged products (see :func:`features_at`).
        outside: Scores shown products outside their query's candidates
            (:func:`outside_scorer`); None: they are skipped.
        force: Mark a model that does not beat the relevance-only baseline on validation as
            servable anyway (``meta["forced"]``); without it such a model is marked
            ``beats_baseline: false`` and :meth:`PersonalRanker.load` refuses it.
        outside_not_scored: Why ``outside`` is None, for the report.
        lessons: What :func:`lessons_from_log` returned for these events and ``config``'s
            ``max_rank`` and ``flush_s`` (a caller training several models from one log
            featurizes it once); None: computed here.

    Returns:
        The trained model (its ``meta`` records the propensities, the relevance source, the
        feature list and whether it beat the baseline) and the report.

    Raises:
        ShopsearchError: No search with a shown list, no interaction to learn from, or too
            few searches in the training or validation period.
    """
    config = config or LogTrainConfig()
    lessons, stats, skipped, clicks = lessons or lessons_from_log(
        events, rank, vectors, config.max_rank, config.flush_s, items=items, outside=outside
    )
    n_outside = int(sum(int(ls.outside.sum()) for ls in lessons if ls.outside is not None))
    lost = skipped.get("shown product not among the query's relevance-only candidates", 0)
    if n_outside:
        log(
            f"personal: {n_outside} shown products outside their query's relevance-only "
            "candidates scored exactly (relevance against the candidates) and kept"
        )
    if lost:
        log(
            f"personal: {lost} shown products outside their query's relevance-only candidates "
            f"skipped ({outside_not_scored or 'nothing to score them with'})"
        )
    log(
        f"personal: {stats.searches} searches, {stats.searches_with_impressions} with a shown "
        f"list; {stats.interactions_attributed} of {stats.interactions} interactions attributed; "
        f"{len(lessons)} lists to learn from"
    )
    unattributed = {r: n for r, n in stats.skipped.items() if r.startswith("interaction")}
    if unattributed:
        log(
            "personal: interactions not attributed: "
            + "; ".join(f"{n} {reason}" for reason, n in sorted(unattributed.items()))
        )
    if not lessons:
        raise ShopsearchError("no shown list has 2 products among the relevance candidates")
    end = lessons[-1].impression.timestamp
    split = end - config.val_days * _DAY
    train = [ls for ls in lessons if ls.impression.timestamp < split]
    val = [ls for ls in lessons if ls.impression.timestamp >= split]
    if len(train) < 20 or not val:
        raise ShopsearchError(
            f"{len(train)} searches before and {len(val)} in the last {config.val_days:g} "
            "days: need at least 20 to train and 1 to validate (lower --val-days?)"
        )
    if not any(ls.labels.any() for ls in train):
        raise ShopsearchError("no interaction on any shown product in the training period")
    propensity = estimate_from_lessons(train, config.max_rank) if config.correct else None
    interval, warning = None, None
    if propensity is not None and config.bootstrap:
        interval = interval_from_lessons(
            train, config.max_rank, config.bootstrap, config.model.seed
        )
        warning = curve_warning(interval)
    if propensity is not None:
        log(
            "personal: estimated examination by rank: "
            + ", ".join(f"{t:.2f}" for t in propensity.theta)
        )
    if interval is not None:
        log(
            f"personal: 95% bootstrap interval by rank ({interval.resamples} resamples of "
            f"{interval.searches} searches, {int(interval.clicks.sum())} clicks): "
            + ", ".join(
                f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(interval.low, interval.high, strict=True)
            )
        )
    if warning:
        log(f"personal: WARNING {warning}")
    model, report = train_personal(
        groups_from_lessons(train, propensity, config.clip, config.click_evidence),
        config.model,
        log=log,
        val_groups=groups_from_lessons(val, propensity, config.clip, config.click_evidence),
    )
    theta = [float(t) for t in propensity.theta] if propensity is not None else []
    beats = report.best_val_ips_dcg > report.baseline_val_ips_dcg + BEAT_MARGIN
    if not beats:
        log(
            "personal: WARNING the model does not beat relevance-only ranking on the validation "
            f"searches (IPS-DCG@10 {report.baseline_val_ips_dcg:.4f} -> "
            f"{report.best_val_ips_dcg:.4f}): "
            + (
                "saved anyway (forced): serving will personalize with it"
                if force
                else "saved marked beats_baseline: false, which serving refuses "
                "(retrain on a longer log, or with --force to serve it anyway)"
            )
        )
    model.click_stats = clicks if config.click_evidence else None
    model.meta.update(
        relevance=relevance_source or {},
        propensity=theta,
        propensity_interval=interval.as_dict() if interval is not None else None,
        corrected=config.correct,
        log_config={k: v for k, v in asdict(config).items() if k != "model"},
        beats_baseline=beats,
        forced=bool(force and not beats),
        validation={
            "baseline_ips_dcg@10": report.baseline_val_ips_dcg,
            "best_ips_dcg@10": report.best_val_ips_dcg,
            "searches": len(val),
        },
    )
    return model, LogTrainReport(
        log=stats,
        train_searches=len(train),
        val_searches=len(val),
        shown_products_used=int(sum(len(ls.positions) for ls in lessons)),
        skipped={**stats.skipped, **skipped},
        propensity=theta,
        corrected=config.correct,
        best_val_ips_dcg=report.best_val_ips_dcg,
        baseline_val_ips_dcg=report.baseline_val_ips_dcg,
        history=report.history,
        shown_outside_scored=n_outside,
        propensity_interval=interval.as_dict() if interval is not None else None,
        curve_warning=warning,
        beats_baseline=beats,
        forced=bool(force and not beats),
        outside_not_scored=outside_not_scored if lost else None,
    )


def write_report(
    report: LogTrainReport, out: str | Path, true_curve: Sequence[float] | None = None
) -> Path:
    """``report.json``, ``report.md`` and ``propensity.png`` (the examination curve) in ``out``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.as_dict(), indent=1, default=str))
    lines = [
        "# Personalization trained from the log",
        "",
        f"- searches: {report.log.searches}, with a shown list: {report.log.searches_with_impressions}",
        f"- interactions: {report.log.interactions}, attributed: {report.log.interactions_attributed}",
        f"- lists: {report.train_searches} train, {report.val_searches} validation "
        f"({report.shown_products_used} shown products used, {report.shown_outside_scored} of "
        "them outside their query's relevance-only candidates, scored exactly)",
        f"- position-bias correction: {'on' if report.corrected else 'off (naive)'}",
        f"- validation IPS-DCG@10 of the interactions: {report.baseline_val_ips_dcg:.4f} -> "
        f"{report.best_val_ips_dcg:.4f}",
        "- beats relevance-only ranking on validation: "
        + (
            "yes"
            if report.beats_baseline
            else "**no**: "
            + (
                "served anyway (trained with --force)"
                if report.forced
                else "saved marked `beats_baseline: false`; serving refuses it"
            )
        ),
        *([f"- **warning**: {report.curve_warning}"] if report.curve_warning else []),
        *(
            [f"- shown products outside the candidates not scored: {report.outside_not_scored}"]
            if report.outside_not_scored
            else []
        ),
        "",
        "| skipped | count |",
        "|---|---|",
        *[f"| {reason} | {n} |" for reason, n in sorted(report.skipped.items())],
        "",
    ]
    iv = report.propensity_interval
    if report.propensity and iv:
        lines += [
            f"| rank | estimated examination | {1 - iv['alpha']:.0%} bootstrap interval "
            f"({iv['resamples']} resamples of {iv['searches']} searches) | clicks |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {t:.3f} | {lo:.3f} - {hi:.3f} | {c} |"
            for k, (t, lo, hi, c) in enumerate(
                zip(report.propensity, iv["low"], iv["high"], iv["clicks_per_rank"], strict=True),
                start=1,
            )
        ]
        lines.append("")
    elif report.propensity:
        lines += ["| rank | estimated examination |", "|---|---|"]
        lines += [f"| {k} | {t:.3f} |" for k, t in enumerate(report.propensity, start=1)]
        lines.append("")
    lines += ["| epoch | train loss | validation IPS-DCG@10 |", "|---|---|---|"]
    lines += [
        f"| {h['epoch']} | {h.get('train_loss', float('nan')):.4f} | {h['val_ips_dcg@10']:.4f} |"
        for h in report.history
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if report.propensity:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is a research extra; the JSON and Markdown stand alone
            return out
        ranks = np.arange(1, len(report.propensity) + 1)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(ranks, report.propensity, "o-", label="estimated")
        if iv:
            ax.fill_between(ranks, iv["low"], iv["high"], alpha=0.25, label="95% bootstrap")
        if true_curve is not None:
            ax.plot(ranks, list(true_curve)[: len(ranks)], "k--", label="true (simulator)")
        ax.set_xlabel("rank")
        ax.set_ylabel("P(examined), rank 1 = 1")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "propensity.png", dpi=120)
        plt.close(fig)
    return out


def train_personal_from_log(
    log_path: str | os.PathLike[str],
    pipeline: SearchPipeline,
    out: str | os.PathLike[str],
    config: Any = None,
    depth: int = DEFAULT_RERANK_DEPTH,
    log: Any = print,
    profiles: str | os.PathLike[str] | None = None,
    key: str | None = None,
    force: bool = False,
):
    """``shopsearch train personal``: a log -> a personalization model folder + report.

    Args:
        log_path: The event log (Parquet or JSON Lines) with impressions, or the service's
            search log (its folder, or segment files: :mod:`personalization.searchlog`),
            whose anonymous searches are left out.
        pipeline: The relevance-only pipeline serving will use (its reranker and blend).
        out: Output folder (the model, ``report.json``/``.md``, ``propensity.png``).
        config: :class:`training.config.LogTrainConfig`.
        depth: Relevance candidates per query (what serving reranks).
        log: Progress lines.
        profiles: The serving profile directory: the events of shoppers ``forget-user`` erased
            there are left out, so a log written before the erasure cannot train them back
            into the model (its weights and click counts). A search log has its erased
            shoppers' rows removed by ``forget-user --search-log`` itself (and tombstoned in
            its ``forgotten.txt``, applied here with the directory's key).
        key: That directory's pseudonym key (hex text) when serving keeps it outside the
            directory (``SHOPSEARCH_PSEUDONYM_KEY``); None: the directory's key file.
        force: Serve the model even if it does not beat the relevance-only baseline on
            validation (see :func:`train_from_log`).

    Returns:
        The :class:`LogTrainReport`.

    Raises:
        ShopsearchError: An unreadable log, a log without impressions, too little data.
    """
    if is_search_log(log_path):
        events = _search_log_events(log_path, log, profiles, key)
    else:
        events = []
        rejected = 0
        for batch in read_events(log_path):
            events.extend(batch.events)
            rejected += len(batch.rejects)
        if rejected:
            log(
                f"personal: {rejected} rows of {log_path} rejected "
                "(run 'events ingest' to list them)"
            )
        if profiles is not None:
            events = _without_forgotten(events, profiles, log, key)
    outside = outside_scorer(pipeline)
    model, report = train_from_log(
        events,
        pipeline.relevance_fn(depth),
        pipeline.retriever.vectors,
        config,
        relevance_source=pipeline.relevance_source(),
        log=log,
        items=pipeline.retriever.payloads,
        outside=outside,
        force=force,
        outside_not_scored=None
        if outside is not None
        else "the pipeline's relevance is a learned final stage (--ranker), whose score the "
        "exact scoring of a product alone does not reproduce",
    )
    model.save(out)
    write_report(report, out)
    return report


def _search_log_events(
    log_path: str | os.PathLike[str], log: Any, profiles: Any = None, key: str | None = None
) -> list[Event]:
    """The events of a service's search log (a folder or segments), said in a line: how many
    searches, and the anonymous ones and erased shoppers' rows left out."""
    folder = Path(log_path) if Path(log_path).is_dir() else Path(log_path).parent
    pz = log_pseudonymizer(folder, profiles, key, create=False)
    read = log_events(log_path, pseudonymizer=pz)
    events = read.events
    erased = 0
    if profiles is not None:  # shoppers erased from the profile store only (forget-user --profiles)
        events, erased = without_forgotten(events, profiles, key=key, pseudonymous=True)
    log(
        f"personal: the search log holds {read.searches} searches and {read.interactions} "
        f"interactions; {read.anonymous_searches} anonymous searches left out (no shopper to "
        "learn for)"
        + (f"; {read.forgotten} rows of forgotten shoppers left out" if read.forgotten else "")
        + (
            f"; the rows of {erased} shoppers erased from the profile store left out"
            if erased
            else ""
        )
    )
    return events


def _without_forgotten(
    events: list, profiles: str | os.PathLike[str], log: Any, key: str | None = None
) -> list:
    """The events of shoppers the profile store has not erased (and a line saying how many not)."""
    kept, gone = without_forgotten(events, profiles, key=key)
    if gone:
        log(f"personal: left out {len(events) - len(kept)} events of {gone} forgotten shoppers")
    return kept

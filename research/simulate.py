"""Simulated shopper behaviour over a real catalog and real graded queries.

No public log of real shopper behaviour is available, so personalisation is trained and
measured on behaviour simulated by the documented generative model in
:data:`MODEL_DESCRIPTION`: latent users with cluster and brand preferences search real
queries, see the relevance-only ranking the caller supplies, and examine, click, add to cart
and buy with probabilities driven by a hidden utility that mixes the human relevance grade
and the user's preference.

Typical use::

    world = build_world(product_ids, titles, vectors, config)
    out = simulate(world, judgments, results, config, query_pool)
    write_simulation(out, "runs/sim")

``results`` (query id -> ranked product ids from the relevance-only retrieval) and
``vectors`` (product embeddings) are injected by the caller: this module is pure numpy/polars
and imports no retrieval, reranking or torch code.

Files written by :func:`write_simulation`:

* ``events.parquet`` - the behaviour log in the :mod:`personalization.events` format (raw simulated
  user ids ``sim-u00001``), plus a ``query_id`` column that readers ignore.
* ``utility.parquet`` - **ground truth, evaluation only**: the hidden utility of the top
  :data:`UTILITY_DEPTH` candidates of every search. Never a feature or a training label.
* ``users.parquet`` - the latent users (preferences, brands, noisy flag): ground truth too.
* ``items.parquet`` - product -> brand proxy and latent cluster.
* ``manifest.json`` - config, the model description, the train/held-out split time, counts
  and click-through rates by rank.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from core.errors import ShopsearchError
from personalization.events import COLUMNS, EVENT_TYPES

if TYPE_CHECKING:  # duck-typed at run time: behaviour imports catalog only
    from evaluation.labels import Judgments

#: Simulated time starts here: 2024-01-01T00:00:00Z.
EPOCH_BASE = 1_704_067_200.0
DAY = 86400.0
#: Utility is recorded for this many top candidates of every search.
UTILITY_DEPTH = 50
#: Human grades run from GRADE_MIN (irrelevant) to GRADE_MAX (exact match).
GRADE_MIN = 1.0
GRADE_MAX = 3.0
#: Dirichlet concentration of the users' cluster preferences (small: peaked on a few).
DIRICHLET_ALPHA = 0.3
#: Share of the preference term given by the cluster; the rest is the brand match.
CLUSTER_SHARE = 0.7
BRAND_SHARE = 0.3
#: Preferred brands are drawn from the top brands of the user's top clusters.
TOP_CLUSTERS = 3
TOP_BRANDS_PER_CLUSTER = 10
#: A query with no judged product in the catalog takes its clusters from this many results.
AFFINITY_FALLBACK_RESULTS = 10
#: Seconds: views follow the search by 1 s, 0.1 s apart; other gaps are uniform in ranges.
VIEW_DELAY = 1.0
VIEW_STEP = 0.1
DWELL_RANGE = (5.0, 60.0)
SEARCH_GAP_RANGE = (20.0, 180.0)
SESSION_GAP = 300.0
FORMAT = "shopsearch-sim/v1"
EVENTS_FILE = "events.parquet"
UTILITY_FILE = "utility.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"
#: Config fields that shape the world (users and clusters); simulate() must agree on them.
WORLD_FIELDS = ("n_users", "n_clusters", "noise_share")
#: events.parquet columns: the event log format plus ``query_id`` (ignored by readers).
EVENT_COLUMNS = (*COLUMNS, "query_id")
SHOWN_FILE = "shown.parquet"

MODEL_DESCRIPTION = """\
## Simulated behaviour: the generative model

No public log of real shopper behaviour exists for this catalog, so personalisation is
trained and measured on behaviour **simulated** over the real Home Depot catalog (product
titles only) and its real queries with human relevance grades (1..3). The numbers it gives
measure how well a model recovers *this* model's preferences, not real shoppers'.
Every constant below is a `SimConfig` field or a module constant, recorded in
`manifest.json`.

**Items.** The catalog has no category, brand or price columns, so:

* *category*: `n_clusters` (40) latent clusters from k-means (scikit-learn
  `MiniBatchKMeans`, seeded) over the L2-normalised product embeddings supplied by the
  caller. They are clusters of embedding space, not real departments.
* *brand*: the first word of the title (`brand_proxy`; Home Depot titles usually start
  with the brand). It is a proxy: multi-word brands are cut ("Hampton Bay" -> "Hampton",
  "Home Decorators Collection" -> "Home") and a title that does not start with its brand
  yields a non-brand word.
* *price*: none in the catalog, so the price level of users is **skipped**.

**Users** (`n_users`, ids `sim-u00001`...). Each user has

* a latent preference over the clusters, `pref(u) ~ Dirichlet(0.3)` over `n_clusters`:
  peaked on a few clusters. Below, `w(u, c) = pref(u, c) / max_c pref(u, c)` (0..1);
* 2 or 3 preferred brands (equally likely), drawn without replacement from the 10 most
  frequent brands of each of the user's 3 top clusters, with probability proportional to
  `sum_c pref(u, c) * share of brand b in cluster c`;
* a *noisy* flag, with probability `noise_share`: a noisy user clicks at random.

**Sessions and searches.** A user has `max(2, Poisson(sessions_per_user))` sessions
with start times uniform over `[0, days)` days from 2024-01-01T00:00:00Z, sorted, and
pushed later where needed so that sessions do not overlap and none straddles the split
time. A session holds `1 + Poisson(searches_per_session - 1)` searches. Each search picks
a query from the query pool with probability proportional to
`exp(query_focus * affinity(u, q))`, where `affinity(u, q)` is the mean of `w(u, c)` over
the clusters of the query's judged products (of its top 10 results when none of its
judged products is in the catalog): users search for what they like. The user is shown
the top `list_size` (10) of the caller's relevance-only ranking `results[q]`.

**Utility** of product `p` for user `u` and query `q`:

    utility(u, q, p) = rel(q, p) + preference_strength * pref(u, p)
    rel(q, p)  = (grade - 1) / 2 for a judged pair (0..1), and 0 for an unjudged one
    pref(u, p) = 0.7 * w(u, cluster(p)) + 0.3 * [brand(p) is one of u's brands]   (0..1)

An unjudged product gets relevance 0: conservative, since Home Depot judges only about 6
products per query and many unjudged results are in fact relevant. Relevance therefore
rewards the judged products, and the preference term is the only reason to click an
unjudged one.

**Clicks** follow a position-biased examination model:

* the result at rank `r` is examined with probability `1 / r ** examine_eta`
  (rank 1 always), independently;
* an examined result is clicked with probability
  `sigmoid(click_slope * (utility - click_offset))` (4 and 0.8);
* a click leads to `add_to_cart` with probability
  `sigmoid(click_slope * (utility - cart_offset))` (cart_offset 1.0), and a cart to a
  `purchase` with probability `purchase_given_cart` (0.5);
* a noisy user clicks an examined result with probability `noise_click` (0.15) and adds
  a click to the cart with probability `noise_cart` (0.05), whatever the utility; a cart
  becomes a purchase with probability `purchase_given_cart` as for everyone.

**Events: only what a shop logs.** Each search writes a `search` event with its query
text, a `search_id` and `results`: the `list_size` product ids shown, in order (the
impression list). Then the `click`, `add_to_cart` and `purchase` events in time order,
5..60 s apart (uniform), each with the `search_id` and the position the product was shown
at. The next search of the session follows 20..180 s later. Which results were *examined*
is never logged (a shop cannot see it): it is ground truth, below.

**Split.** Sessions starting before `train_days` are the training period; later ones
are held out. The split is by session start time; sessions never straddle it.

**Ground truth** (evaluation only: never a feature or a training label). For every search,
the utility of each of the top 50 candidates `results[q][:50]` for that user is written to
`utility.parquet`, with its relevance and preference parts; `shown.parquet` holds, per
shown result, whether it was examined and what the shopper did; `users.parquet` holds the
latent preferences. The true examination curve is `1 / rank ** examine_eta`.

**Determinism.** Everything is drawn from numpy `Generator`s seeded from `seed` (one
stream for the world, one for the behaviour) and k-means is seeded with `seed`: the same
inputs and config give the same files.

**Caveats.** The preference lives in the same embedding space the clusters came from: a
personalisation feature computed from those embeddings (similarity to recent items) can
recover it more easily than it would recover real tastes. Build the clusters from other
vectors than the features use where that matters. Brands are a title-word proxy, there is
no price, and relevance is known only for judged pairs.
"""


@dataclass(frozen=True)
class SimConfig:
    """Parameters of the generative model (see :data:`MODEL_DESCRIPTION`).

    Attributes:
        n_users: Simulated users.
        sessions_per_user: Poisson mean of sessions per user (at least 2).
        searches_per_session: Mean searches per session (``1 + Poisson(mean - 1)``).
        n_clusters: Latent categories (k-means over product embeddings).
        preference_strength: Weight ``beta`` of the user's preference in the utility.
        noise_share: Share of users who click at random.
        examine_eta: ``P(examine rank r) = 1 / r**eta``.
        list_size: Results shown per search (at most :data:`UTILITY_DEPTH`).
        days: Length of the simulated period, days.
        train_days: Sessions starting before this day are training; later ones held out.
        seed: Seed of every random draw.
        query_focus: How strongly users search queries in their preferred clusters.
        click_slope: Slope of the click and cart sigmoids.
        click_offset: Utility at which an examined result is clicked half the time.
        cart_offset: Utility at which a click becomes a cart half the time.
        purchase_given_cart: Probability that a cart becomes a purchase.
        noise_click: Click probability of a noisy user's examined result.
        noise_cart: Probability that a noisy user's click becomes a cart.
    """

    n_users: int = 1500
    sessions_per_user: float = 8.0
    searches_per_session: float = 1.5
    n_clusters: int = 40
    preference_strength: float = 1.0
    noise_share: float = 0.0
    examine_eta: float = 1.0
    list_size: int = 10
    days: float = 60.0
    train_days: float = 45.0
    seed: int = 0
    query_focus: float = 5.0
    click_slope: float = 4.0
    click_offset: float = 0.8
    cart_offset: float = 1.0
    purchase_given_cart: float = 0.5
    noise_click: float = 0.15
    noise_cart: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if self.n_users < 1:
            problems.append(f"n_users must be >= 1, got {self.n_users}")
        if self.n_clusters < 1:
            problems.append(f"n_clusters must be >= 1, got {self.n_clusters}")
        if self.sessions_per_user < 0:
            problems.append(f"sessions_per_user must be >= 0, got {self.sessions_per_user}")
        if self.searches_per_session < 1:
            problems.append(f"searches_per_session must be >= 1, got {self.searches_per_session}")
        if not 0.0 <= self.noise_share <= 1.0:
            problems.append(f"noise_share must be in [0, 1], got {self.noise_share}")
        if not 1 <= self.list_size <= UTILITY_DEPTH:
            problems.append(f"list_size must be in 1..{UTILITY_DEPTH}, got {self.list_size}")
        if not 0.0 < self.train_days <= self.days:
            problems.append(f"train_days must be in (0, days={self.days}], got {self.train_days}")
        for name in ("purchase_given_cart", "noise_click", "noise_cart"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {value}")
        if self.examine_eta < 0:
            problems.append(f"examine_eta must be >= 0, got {self.examine_eta}")
        if problems:
            raise ShopsearchError("bad simulation config: " + "; ".join(problems))


@dataclass(frozen=True, eq=False)
class SimWorld:
    """The simulated catalog and users (the part of the model that has no behaviour).

    Attributes:
        config: The config the world was built with.
        product_ids: Catalog product ids; arrays below are aligned with them.
        item_brand: product_id -> brand proxy (``""`` when the title is empty).
        item_cluster: product_id -> latent cluster (0..n_clusters-1).
        cluster_centroids: ``(n_clusters, dim)`` k-means centroids (unit-length inputs).
        brands: Brand vocabulary; ``item_brand_idx`` indexes it.
        item_brand_idx: Brand index per product.
        item_cluster_idx: Cluster index per product.
        cluster_source: ``"kmeans"``, or ``"category"`` when categories were given.
        cluster_names: Name per cluster (the category, or ``"cluster-07"``).
        user_ids: ``sim-u00001``...
        user_pref: ``(n_users, n_clusters)`` Dirichlet cluster preferences (rows sum to 1).
        user_brands: Each user's preferred brands.
        user_noisy: True for users who click at random.
    """

    config: SimConfig
    product_ids: tuple[str, ...]
    item_brand: dict[str, str]
    item_cluster: dict[str, int]
    cluster_centroids: np.ndarray
    brands: tuple[str, ...]
    item_brand_idx: np.ndarray
    item_cluster_idx: np.ndarray
    cluster_source: str
    cluster_names: tuple[str, ...]
    user_ids: tuple[str, ...]
    user_pref: np.ndarray
    user_brands: tuple[tuple[str, ...], ...]
    user_noisy: np.ndarray

    @property
    def n_clusters(self) -> int:
        """Number of latent clusters actually used."""
        return int(self.cluster_centroids.shape[0])

    @property
    def user_weight(self) -> np.ndarray:
        """``w(u, c)``: preferences scaled so each user's top cluster is 1."""
        return self.user_pref / self.user_pref.max(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class SimOutput:
    """A simulation's results.

    Attributes:
        config: The behaviour config.
        world_config: The config the world was built with.
        cluster_source: ``"kmeans"`` or ``"category"``.
        split_ts: Epoch seconds where the held-out period starts.
        events: The event log (:mod:`personalization.events` columns plus ``query_id``).
        utility: Ground-truth utility of the top candidates of every search.
        users: The latent users.
        items: product_id, brand, cluster.
        impressions: One row per shown result (rank <= list_size) with whether it was
            examined, what the user did and the utility: ground truth, evaluation only
            (``shown.parquet``).
    """

    config: SimConfig
    world_config: SimConfig
    cluster_source: str
    split_ts: float
    events: pl.DataFrame
    utility: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    impressions: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def brand_proxy(title: str) -> str:
    """The first word of the title, a proxy for the brand (Home Depot titles start with it).

    Surrounding punctuation is stripped; an empty title gives ``""``.
    """
    for word in title.split():
        word = word.strip(",;:.()[]\"'")
        if word:
            return word
    return ""


def build_world(
    product_ids: Sequence[str],
    titles: Sequence[str],
    vectors: np.ndarray,
    config: SimConfig | None = None,
    *,
    brands: Sequence[str | None] | None = None,
    categories: Sequence[str | None] | None = None,
) -> SimWorld:
    """Clusters the catalog and draws the users.

    Args:
        product_ids: Catalog product ids (unique).
        titles: Titles aligned with ``product_ids`` (for the brand proxy).
        vectors: ``(n, dim)`` product embeddings aligned with ``product_ids``.
        config: Simulation config (default :class:`SimConfig`).
        brands: Real brands, when the catalog has them (missing ones fall back to the proxy).
        categories: Real categories, when the catalog has them: used as the clusters
            instead of k-means (``n_clusters`` is then ignored; missing ones become
            ``"(none)"``).

    Raises:
        ShopsearchError: Misaligned or duplicate inputs, or non-finite vectors.
    """
    config = config or SimConfig()
    ids = tuple(str(p) for p in product_ids)
    n = len(ids)
    vectors = np.asarray(vectors, dtype=np.float64)
    if n == 0:
        raise ShopsearchError("build_world needs at least one product")
    if len(titles) != n or vectors.ndim != 2 or vectors.shape[0] != n:
        raise ShopsearchError(
            f"build_world: {n} product ids, {len(titles)} titles and vectors of shape "
            f"{vectors.shape}; give one title and one vector row per product"
        )
    if len(set(ids)) != n:
        raise ShopsearchError(f"build_world: {n - len(set(ids))} duplicate product ids")
    if not np.isfinite(vectors).all():
        raise ShopsearchError("build_world: vectors contain NaN or infinite values")
    for name, extra in (("brands", brands), ("categories", categories)):
        if extra is not None and len(extra) != n:
            raise ShopsearchError(f"build_world: {len(extra)} {name} for {n} products")

    item_brands = [
        (str(brands[i]).strip() if brands is not None and brands[i] else "")
        or brand_proxy(str(titles[i]))
        for i in range(n)
    ]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    if categories is not None:
        labels = [str(c).strip() if c else "(none)" for c in categories]
        names = tuple(sorted(set(labels)))
        index = {name: i for i, name in enumerate(names)}
        cluster_idx = np.array([index[c] for c in labels], dtype=np.int64)
        centroids = np.zeros((len(names), unit.shape[1]))
        np.add.at(centroids, cluster_idx, unit)
        centroids /= np.bincount(cluster_idx, minlength=len(names))[:, None]
        source = "category"
    else:
        cluster_idx, centroids = _kmeans(unit, config.n_clusters, config.seed)
        names = tuple(f"cluster-{c:02d}" for c in range(centroids.shape[0]))
        source = "kmeans"
    k = centroids.shape[0]

    brand_vocab = tuple(sorted(set(item_brands)))
    brand_index = {b: i for i, b in enumerate(brand_vocab)}
    brand_idx = np.array([brand_index[b] for b in item_brands], dtype=np.int64)

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    pref = (
        rng.dirichlet(np.full(k, DIRICHLET_ALPHA), size=config.n_users)
        if k > 1
        else (np.ones((config.n_users, 1)))
    )
    # Dirichlet draws with tiny alpha can underflow to all zeros: fall back to one cluster.
    empty = pref.sum(axis=1) <= 0
    if empty.any():
        pref[empty] = np.eye(k)[rng.integers(0, k, size=int(empty.sum()))]
    pref = pref / pref.sum(axis=1, keepdims=True)
    noisy = rng.random(config.n_users) < config.noise_share
    user_brands = _draw_brands(rng, pref, cluster_idx, brand_idx, brand_vocab, k)
    width = len(str(config.n_users))
    return SimWorld(
        config=config,
        product_ids=ids,
        item_brand=dict(zip(ids, item_brands, strict=True)),
        item_cluster={p: int(c) for p, c in zip(ids, cluster_idx, strict=True)},
        cluster_centroids=centroids,
        brands=brand_vocab,
        item_brand_idx=brand_idx,
        item_cluster_idx=cluster_idx,
        cluster_source=source,
        cluster_names=names,
        user_ids=tuple(f"sim-u{u:0{max(5, width)}d}" for u in range(1, config.n_users + 1)),
        user_pref=pref,
        user_brands=user_brands,
        user_noisy=noisy,
    )


def _kmeans(unit: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded MiniBatchKMeans; labels renumbered 0..k-1 by first appearance."""
    from sklearn.cluster import MiniBatchKMeans

    distinct = np.unique(unit, axis=0).shape[0]
    k = max(1, min(n_clusters, distinct))
    if k == 1:
        return np.zeros(len(unit), dtype=np.int64), unit.mean(axis=0, keepdims=True)
    model = MiniBatchKMeans(
        n_clusters=k, random_state=seed, n_init=3, batch_size=4096, max_iter=100
    ).fit(unit)
    raw = model.labels_.astype(np.int64)
    used, first = np.unique(raw, return_index=True)
    order = used[np.argsort(first)]
    remap = np.full(model.cluster_centers_.shape[0], -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[raw], model.cluster_centers_[order]


def _draw_brands(
    rng: np.random.Generator,
    pref: np.ndarray,
    cluster_idx: np.ndarray,
    brand_idx: np.ndarray,
    brand_vocab: tuple[str, ...],
    k: int,
) -> tuple[tuple[str, ...], ...]:
    """2-3 brands per user from the frequent brands of the user's top clusters."""
    counts = np.zeros((k, len(brand_vocab)))
    np.add.at(counts, (cluster_idx, brand_idx), 1.0)
    if "" in brand_vocab:
        counts[:, brand_vocab.index("")] = 0.0
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    top_brands = [
        [
            b
            for b in np.argsort(-shares[c], kind="stable")[:TOP_BRANDS_PER_CLUSTER]
            if shares[c, b] > 0
        ]
        for c in range(k)
    ]
    n_brands = rng.integers(2, 4, size=pref.shape[0])
    out = []
    for u in range(pref.shape[0]):
        top = np.argsort(-pref[u], kind="stable")[:TOP_CLUSTERS]
        cands = sorted({b for c in top for b in top_brands[c]})
        if not cands:
            out.append(())
            continue
        weight = np.array([sum(pref[u, c] * shares[c, b] for c in top) for b in cands])
        weight = weight + 1e-12
        size = min(int(n_brands[u]), len(cands))
        chosen = rng.choice(len(cands), size=size, replace=False, p=weight / weight.sum())
        out.append(tuple(brand_vocab[cands[i]] for i in sorted(chosen)))
    return tuple(out)


def simulate(
    world: SimWorld,
    judgments: Judgments,
    results: Mapping[str, Sequence[str]],
    config: SimConfig | None = None,
    query_pool: Sequence[str] | None = None,
) -> SimOutput:
    """Simulates every user's sessions, searches and interactions.

    Args:
        world: From :func:`build_world`.
        judgments: Queries and graded pairs (all splits are searched for the pool's ids).
        results: query_id -> product ids ranked by the relevance-only retrieval (at least
            :data:`UTILITY_DEPTH` each is expected; duplicates are dropped).
        config: Behaviour config (default: the world's). Its ``n_users``, ``n_clusters``
            and ``noise_share`` must match the world's.
        query_pool: Query ids users search (default: every query with results).

    Raises:
        ShopsearchError: Config mismatch, or a pool query without text or results, or
            results naming products outside the world.
    """
    config = config or world.config
    mismatch = [f for f in WORLD_FIELDS if getattr(config, f) != getattr(world.config, f)]
    if mismatch:
        raise ShopsearchError(
            "simulate: config differs from the world's in "
            + ", ".join(
                f"{f} ({getattr(config, f)} vs {getattr(world.config, f)})" for f in mismatch
            )
            + "; build the world with this config"
        )
    texts: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    for split in judgments.queries:
        texts.update(judgments.queries[split])
    for split in judgments.qrels:
        for qid, judged in judgments.qrels[split].items():
            qrels.setdefault(qid, {}).update(judged)
    pool = list(dict.fromkeys(str(q) for q in (query_pool if query_pool is not None else results)))
    if not pool:
        raise ShopsearchError("simulate: the query pool is empty")
    no_text = [q for q in pool if not texts.get(q)]
    no_results = [q for q in pool if not results.get(q)]
    if no_text or no_results:
        parts = []
        if no_text:
            parts.append(
                f"{len(no_text)} pool queries have no text in the judgments ({_examples(no_text)})"
            )
        if no_results:
            parts.append(
                f"{len(no_results)} pool queries have no results ({_examples(no_results)})"
            )
        raise ShopsearchError("simulate: " + "; ".join(parts))

    row_of = {p: i for i, p in enumerate(world.product_ids)}
    cand, rel = _candidates(pool, results, qrels, row_of)
    affinity_clusters = _query_clusters(pool, qrels, row_of, world, cand)

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    n_users = len(world.user_ids)
    weight = world.user_weight
    horizon = config.days * DAY
    split_rel = config.train_days * DAY

    # --- who searches what, when ------------------------------------------------------
    n_sessions = np.maximum(2, rng.poisson(config.sessions_per_user, size=n_users))
    session_user = np.repeat(np.arange(n_users), n_sessions)
    session_start = rng.uniform(0.0, horizon, size=len(session_user))
    # Sessions are numbered in time order within each user (users' blocks are contiguous).
    session_start = session_start[np.lexsort((session_start, session_user))]
    n_searches = 1 + rng.poisson(config.searches_per_session - 1.0, size=len(session_user))
    search_session = np.repeat(np.arange(len(session_user)), n_searches)
    search_user = session_user[search_session]
    search_query = np.empty(len(search_session), dtype=np.int64)
    per_user = np.bincount(search_user, minlength=n_users)
    offsets = np.concatenate([[0], np.cumsum(per_user)])
    chunk = 256
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        logits = config.query_focus * (weight[lo:hi] @ affinity_clusters.T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        for u in range(lo, hi):
            size = int(per_user[u])
            search_query[offsets[u] : offsets[u + 1]] = rng.choice(
                len(pool), size=size, p=probs[u - lo]
            )

    # --- utility of the top candidates, and what the user does with the shown ones -----
    s_cand = cand[search_query]  # (S, D), -1 = none
    valid = s_cand >= 0
    safe = np.where(valid, s_cand, 0)
    s_cluster = world.item_cluster_idx[safe]
    cluster_part = weight[search_user[:, None], s_cluster]
    brand_sets = _brand_matrix(world)
    brand_part = (
        world.item_brand_idx[safe][:, :, None] == brand_sets[search_user][:, None, :]
    ).any(-1)
    pref_part = CLUSTER_SHARE * cluster_part + BRAND_SHARE * brand_part
    rel_part = rel[search_query]
    utility = rel_part + config.preference_strength * pref_part

    n_show = config.list_size
    shown = valid[:, :n_show]
    ranks = np.arange(1, n_show + 1, dtype=np.float64)
    u_exam, u_click, u_cart, u_buy = (rng.random((len(search_query), n_show)) for _ in range(4))
    dwell = rng.uniform(*DWELL_RANGE, size=(len(search_query), n_show, 3))
    search_gap = rng.uniform(*SEARCH_GAP_RANGE, size=len(search_query))
    noisy = world.user_noisy[search_user][:, None]
    u_shown = utility[:, :n_show]
    p_click = np.where(
        noisy, config.noise_click, _sigmoid(config.click_slope * (u_shown - config.click_offset))
    )
    p_cart = np.where(
        noisy, config.noise_cart, _sigmoid(config.click_slope * (u_shown - config.cart_offset))
    )
    examined = shown & (u_exam < ranks[None, :] ** -config.examine_eta)
    clicked = examined & (u_click < p_click)
    carted = clicked & (u_cart < p_cart)
    bought = carted & (u_buy < config.purchase_given_cart)

    # --- timeline and events -----------------------------------------------------------
    search_ts, session_period = _timeline(
        session_user,
        session_start,
        n_searches,
        examined,
        clicked,
        carted,
        bought,
        dwell,
        search_gap,
        split_rel,
    )
    search_ts = search_ts + EPOCH_BASE
    split_ts = EPOCH_BASE + split_rel
    session_ids = _session_ids(world.user_ids, session_user)
    search_period = session_period[search_session]
    search_ids = [f"{session_ids[search_session[i]]}-q{i:06d}" for i in range(len(search_ts))]
    events = _events(
        world,
        pool,
        texts,
        s_cand,
        search_user,
        search_session,
        search_query,
        search_ts,
        session_ids,
        search_ids,
        examined,
        clicked,
        carted,
        bought,
        dwell,
    )
    period_names = np.where(search_period, "heldout", "train")
    user_ids = np.asarray(world.user_ids, dtype=object)
    sess_ids = np.asarray(session_ids, dtype=object)
    pool_arr = np.asarray(pool, dtype=object)
    pid_arr = np.asarray(world.product_ids, dtype=object)

    rows, cols = np.nonzero(valid)
    utility_frame = pl.DataFrame(
        {
            "user_id": user_ids[search_user[rows]].tolist(),
            "session_id": sess_ids[search_session[rows]].tolist(),
            "search_ts": search_ts[rows],
            "query_id": pool_arr[search_query[rows]].tolist(),
            "product_id": pid_arr[s_cand[rows, cols]].tolist(),
            "rank": (cols + 1).astype(np.int32),
            "utility": utility[rows, cols],
            "rel": rel_part[rows, cols],
            "pref": pref_part[rows, cols],
            "period": period_names[rows].tolist(),
        },
        schema_overrides={"user_id": pl.String, "session_id": pl.String},
    )
    rows, cols = np.nonzero(shown)
    impressions = pl.DataFrame(
        {
            "search_id": np.asarray(search_ids, dtype=object)[rows].tolist(),
            "user_id": user_ids[search_user[rows]].tolist(),
            "session_id": sess_ids[search_session[rows]].tolist(),
            "search_ts": search_ts[rows],
            "query_id": pool_arr[search_query[rows]].tolist(),
            "product_id": pid_arr[s_cand[rows, cols]].tolist(),
            "position": (cols + 1).astype(np.int32),
            "noisy": world.user_noisy[search_user[rows]],
            "utility": utility[rows, cols],
            "rel": rel_part[rows, cols],
            "pref": pref_part[rows, cols],
            "examined": examined[rows, cols],
            "clicked": clicked[rows, cols],
            "carted": carted[rows, cols],
            "purchased": bought[rows, cols],
            "period": period_names[rows].tolist(),
        },
        schema_overrides={"search_id": pl.String, "user_id": pl.String, "session_id": pl.String},
    )
    users = _users_frame(world, session_user, search_user, search_period)
    items = pl.DataFrame(
        {
            "product_id": list(world.product_ids),
            "brand": [world.item_brand[p] for p in world.product_ids],
            "cluster": world.item_cluster_idx.astype(np.int32),
        }
    )
    stats = _stats(events, impressions, search_period, n_show)
    return SimOutput(
        config=config,
        world_config=world.config,
        cluster_source=world.cluster_source,
        split_ts=split_ts,
        events=events,
        utility=utility_frame,
        users=users,
        items=items,
        impressions=impressions,
        stats=stats,
    )


def relevance_of(grade: float | None) -> float:
    """``rel(q, p)``: a judged grade scaled to 0..1 (clipped); 0 for an unjudged pair."""
    if grade is None:
        return 0.0
    return min(max((float(grade) - GRADE_MIN) / (GRADE_MAX - GRADE_MIN), 0.0), 1.0)


def utility(
    world: SimWorld,
    user_id: str,
    grades: Mapping[str, float],
    product_ids: Sequence[str],
    preference_strength: float,
) -> np.ndarray:
    """True utility of any products for one simulated shopper and query (evaluation only).

    ``rel(q, p) + preference_strength * (CLUSTER_SHARE * w(u, cluster(p)) + BRAND_SHARE *
    [brand(p) in u's brands])``: the formula :func:`simulate` draws behaviour from.

    Args:
        world: The simulated world.
        user_id: A simulated shopper (``sim-u00001``...).
        grades: The query's judged grades by product id.
        product_ids: The products to value.
        preference_strength: The config's ``preference_strength``.

    Returns:
        float32 array of shape ``(len(product_ids),)``.
    """
    u = world.user_ids.index(user_id)
    w = world.user_weight[u]
    brands = set(world.user_brands[u])
    return np.asarray(
        [
            relevance_of(grades.get(p))
            + preference_strength
            * (
                CLUSTER_SHARE * w[world.item_cluster[p]]
                + BRAND_SHARE * (world.item_brand.get(p) in brands)
            )
            for p in product_ids
        ],
        dtype=np.float32,
    )


def _candidates(
    pool: list[str],
    results: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, float]],
    row_of: Mapping[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, UTILITY_DEPTH)`` candidate rows (-1 padded) and their relevance (0..1)."""
    cand = np.full((len(pool), UTILITY_DEPTH), -1, dtype=np.int64)
    rel = np.zeros((len(pool), UTILITY_DEPTH))
    unknown: list[str] = []
    for q, qid in enumerate(pool):
        judged = qrels.get(qid, {})
        ranked = list(dict.fromkeys(str(p) for p in results[qid]))[:UTILITY_DEPTH]
        for r, pid in enumerate(ranked):
            row = row_of.get(pid)
            if row is None:
                unknown.append(pid)
                continue
            cand[q, r] = row
            grade = judged.get(pid)
            if grade is not None:
                rel[q, r] = relevance_of(grade)
    if unknown:
        raise ShopsearchError(
            f"simulate: results name {len(unknown)} products that are not in the world "
            f"({_examples(unknown)}); build the world from the same catalog"
        )
    return cand, rel


def _query_clusters(
    pool: list[str],
    qrels: Mapping[str, Mapping[str, float]],
    row_of: Mapping[str, int],
    world: SimWorld,
    cand: np.ndarray,
) -> np.ndarray:
    """``(Q, K)``: share of each cluster among a query's judged products (or top results)."""
    out = np.zeros((len(pool), world.n_clusters))
    for q, qid in enumerate(pool):
        rows = [row_of[p] for p in qrels.get(qid, {}) if p in row_of]
        if not rows:
            rows = [r for r in cand[q, :AFFINITY_FALLBACK_RESULTS] if r >= 0]
        clusters = world.item_cluster_idx[rows]
        out[q] = np.bincount(clusters, minlength=world.n_clusters) / len(rows)
    return out


def _brand_matrix(world: SimWorld) -> np.ndarray:
    """``(n_users, 3)`` brand indices of each user's brands, -1 padded."""
    index = {b: i for i, b in enumerate(world.brands)}
    width = max([len(b) for b in world.user_brands] + [1])
    out = np.full((len(world.user_ids), width), -1, dtype=np.int64)
    for u, names in enumerate(world.user_brands):
        out[u, : len(names)] = [index[b] for b in names]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _search_duration(
    examined: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
    bought: np.ndarray,
    dwell: np.ndarray,
) -> np.ndarray:
    """Seconds from each search to its last event (the layout of :func:`_events`)."""
    n_show = examined.shape[1]
    base = VIEW_DELAY + VIEW_STEP * n_show
    steps = (clicked * dwell[:, :, 0] + carted * dwell[:, :, 1] + bought * dwell[:, :, 2]).sum(
        axis=1
    )
    return base + steps


def _timeline(
    session_user: np.ndarray,
    session_start: np.ndarray,
    n_searches: np.ndarray,
    examined: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
    bought: np.ndarray,
    dwell: np.ndarray,
    search_gap: np.ndarray,
    split: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Search times (seconds from the base) and a held-out flag per session.

    A user's sessions are taken in start order, pushed later so they do not overlap
    (:data:`SESSION_GAP` apart) and so that none straddles the split.
    """
    duration = _search_duration(examined, clicked, carted, bought, dwell)
    first = np.concatenate([[0], np.cumsum(n_searches)[:-1]])
    search_ts = np.zeros(len(duration))
    heldout = np.zeros(len(session_user), dtype=bool)
    user_order = np.lexsort((session_start, session_user))
    previous_user, previous_end = -1, 0.0
    for s in user_order:
        u = session_user[s]
        lo, hi = first[s], first[s] + n_searches[s]
        offsets = np.concatenate(
            [[0.0], np.cumsum(duration[lo : hi - 1] + search_gap[lo : hi - 1])]
        )
        length = offsets[-1] + duration[hi - 1]
        start = session_start[s]
        if u == previous_user:
            start = max(start, previous_end + SESSION_GAP)
        if start < split < start + length:
            start = split
        search_ts[lo:hi] = start + offsets
        heldout[s] = start >= split
        previous_user, previous_end = u, start + length
    return search_ts, heldout


def _session_ids(user_ids: tuple[str, ...], session_user: np.ndarray) -> list[str]:
    """``<user>-s001``... numbered per user in generation order."""
    out = []
    counter = np.zeros(len(user_ids), dtype=np.int64)
    for u in session_user:
        counter[u] += 1
        out.append(f"{user_ids[u]}-s{counter[u]:03d}")
    return out


def _events(
    world: SimWorld,
    pool: list[str],
    texts: Mapping[str, str],
    s_cand: np.ndarray,
    search_user: np.ndarray,
    search_session: np.ndarray,
    search_query: np.ndarray,
    search_ts: np.ndarray,
    session_ids: list[str],
    search_ids: list[str],
    examined: np.ndarray,
    clicked: np.ndarray,
    carted: np.ndarray,
    bought: np.ndarray,
    dwell: np.ndarray,
) -> pl.DataFrame:
    """The event log (layout as in :data:`MODEL_DESCRIPTION`), sorted by user then time."""
    n_show = examined.shape[1]
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_COLUMNS}
    pids = world.product_ids
    for s in range(len(search_ts)):
        t0 = float(search_ts[s])
        stamps: list[tuple[float, str, str | None, int | None]] = [(t0, "search", None, None)]
        # the examined results take their reading time, but a shop never sees them
        cursor = t0 + VIEW_DELAY + VIEW_STEP * n_show
        for r in np.flatnonzero(clicked[s]):
            pid = pids[s_cand[s, r]]
            cursor += float(dwell[s, r, 0])
            stamps.append((cursor, "click", pid, int(r) + 1))
            if carted[s, r]:
                cursor += float(dwell[s, r, 1])
                stamps.append((cursor, "add_to_cart", pid, int(r) + 1))
                if bought[s, r]:
                    cursor += float(dwell[s, r, 2])
                    stamps.append((cursor, "purchase", pid, int(r) + 1))
        user = world.user_ids[search_user[s]]
        session = session_ids[search_session[s]]
        qid = pool[search_query[s]]
        text = texts[qid]
        search_id = search_ids[s]
        shown = [pids[c] for c in s_cand[s, :n_show] if c >= 0]
        for ts, kind, pid, pos in stamps:
            cols["search_id"].append(search_id)
            cols["results"].append(shown if kind == "search" else None)
            cols["user_id"].append(user)
            cols["timestamp"].append(ts)
            cols["session_id"].append(session)
            cols["event"].append(kind)
            cols["query"].append(text)
            cols["product_id"].append(pid)
            cols["position"].append(pos)
            cols["query_id"].append(qid)
    frame = pl.DataFrame(
        cols,
        schema={
            "user_id": pl.String,
            "timestamp": pl.Float64,
            "session_id": pl.String,
            "event": pl.String,
            "query": pl.String,
            "product_id": pl.String,
            "position": pl.Int32,
            "search_id": pl.String,
            "results": pl.List(pl.String),
            "query_id": pl.String,
        },
    )
    return frame.sort("user_id", "timestamp", maintain_order=True)


def _users_frame(
    world: SimWorld,
    session_user: np.ndarray,
    search_user: np.ndarray,
    search_heldout: np.ndarray,
) -> pl.DataFrame:
    n = len(world.user_ids)
    top = np.argsort(-world.user_pref, axis=1, kind="stable")[:, :TOP_CLUSTERS]
    return pl.DataFrame(
        {
            "user_id": list(world.user_ids),
            "noisy": world.user_noisy,
            "brands": [list(b) for b in world.user_brands],
            "top_clusters": top.astype(np.int32).tolist(),
            "cluster_pref": world.user_pref.tolist(),
            "n_sessions": np.bincount(session_user, minlength=n).astype(np.int32),
            "n_searches_train": np.bincount(search_user[~search_heldout], minlength=n).astype(
                np.int32
            ),
            "n_searches_heldout": np.bincount(search_user[search_heldout], minlength=n).astype(
                np.int32
            ),
        },
        schema_overrides={"brands": pl.List(pl.String), "top_clusters": pl.List(pl.Int32)},
    )


def _stats(
    events: pl.DataFrame, impressions: pl.DataFrame, search_heldout: np.ndarray, n_show: int
) -> dict[str, Any]:
    """Counts and rates for the manifest (click-through rate = clicks / impressions)."""
    counts = dict(events.group_by("event").len().iter_rows())
    by_rank = (
        impressions.group_by("position")
        .agg(
            pl.col("examined").mean().alias("examined"),
            pl.col("clicked").mean().alias("ctr"),
            (pl.col("clicked").sum() / pl.col("examined").sum()).alias("click_given_examined"),
        )
        .sort("position")
    )
    n_searches = int(len(search_heldout))
    return {
        "users": int(events["user_id"].n_unique()),
        "sessions": int(events["session_id"].n_unique()),
        "searches": n_searches,
        "searches_train": int((~search_heldout).sum()),
        "searches_heldout": int(search_heldout.sum()),
        "events": {kind: int(counts.get(kind, 0)) for kind in EVENT_TYPES},
        "searches_with_click": float(
            impressions.group_by("user_id", "search_ts")
            .agg(pl.col("clicked").any())["clicked"]
            .mean()
            or 0.0
        ),
        "ctr_by_rank": [round(float(x), 4) for x in by_rank["ctr"]],
        "examined_by_rank": [round(float(x), 4) for x in by_rank["examined"]],
        "click_given_examined_by_rank": [
            round(float(x), 4) if x is not None and math.isfinite(x) else None
            for x in by_rank["click_given_examined"]
        ],
    }


def write_simulation(out: SimOutput, out_dir: str | os.PathLike[str]) -> Path:
    """Writes the simulation files (see the module docstring) into ``out_dir``.

    Each file is replaced atomically; ``manifest.json`` is written last.

    Returns:
        The output directory.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in (
        (EVENTS_FILE, out.events),
        (UTILITY_FILE, out.utility),
        (SHOWN_FILE, out.impressions),
        (USERS_FILE, out.users),
        (ITEMS_FILE, out.items),
    ):
        write_atomically(out_dir / name, frame.write_parquet)
    manifest = {
        "format": FORMAT,
        "config": asdict(out.config),
        "world_config": asdict(out.world_config),
        "cluster_source": out.cluster_source,
        "epoch_base": EPOCH_BASE,
        "epoch_base_iso": _iso(EPOCH_BASE),
        "split_ts": out.split_ts,
        "split_iso": _iso(out.split_ts),
        "periods": {
            "train": "sessions starting before split_ts",
            "heldout": "sessions starting at or after split_ts",
        },
        "files": {
            EVENTS_FILE: "behaviour log as a shop logs it (personalization.events format with "
            "impressions, raw sim user ids, plus query_id); no examination",
            UTILITY_FILE: "ground-truth utility of the top candidates of every search "
            "(evaluation only)",
            SHOWN_FILE: "per shown result: examined, clicked, carted, purchased, utility "
            "(ground truth, evaluation only)",
            USERS_FILE: "latent users (ground truth)",
            ITEMS_FILE: "product_id -> brand proxy, latent cluster",
        },
        "stats": out.stats,
        "model": MODEL_DESCRIPTION,
    }

    def dump(path: str) -> None:
        Path(path).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    write_atomically(out_dir / MANIFEST_FILE, dump)
    return out_dir


def write_atomically(path: Path, write: Any) -> None:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, then renames it into place:
    a reader sees the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _examples(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(x) for x in list(dict.fromkeys(items))[:limit])
    return shown + (", ..." if len(set(items)) > limit else "")

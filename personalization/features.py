"""The personalisation features: one definition, used identically in training and at query time.

Take the retrieved products (:class:`retrieval.hits.RankedHit`, with ``relevance`` set), a point-in-time profile
(:meth:`personalization.profiles.ProfileStore.profile` with ``before`` = the query time when
training), popularity and the vectors of the user's recent items, then call
:func:`compute_features`. Columns are :data:`FEATURE_NAMES`, in order:

User features (exactly 0 unless the shopper is warm, :func:`~personalization.profiles.is_warm`):

* ``has_history``: 1 when the profile has interactions, else 0.
* ``brand_affinity``: the user's affinity for the candidate's brand (0..1).
* ``category_affinity``: mean of the user's affinity over the candidate's category levels,
  a level the user never touched counting 0 (0..1; see below).
* ``price_match``: ``-min(|log price - mean log price| / (std + 0.1), 5)``; 0 at the user's
  typical price, and 0 when either price is unknown.
* ``recent_sim_max``, ``recent_sim_mean``: max and mean cosine of the candidate's vector to
  the vectors of the user's recent items (0 without vectors).
* ``prior_views``, ``prior_clicks``, ``prior_carts``, ``prior_purchases``: ``log1p`` of the
  user's past interactions with this very product.

Other features:

* ``popularity``: smoothed popularity (:meth:`ProfileStore.popularity`; missing: 0).
* ``query_coec``, ``query_exposure``: what the log says about this product for this query,
  position bias removed: ``log`` of clicks over expected clicks relative to the log's
  overall ratio, and ``log1p`` of the expected clicks (:mod:`personalization.clickstats`;
  0 when never shown for the query).
* ``retrieval_score``: the stage-1 score.
* ``rank_discount``: ``1 / log2(retrieval_rank + 1)``.
* ``cross_score``: the hit's relevance score (the cross-encoder blended with stage 1, or
  the standardised stage-1 score without a cross-encoder), 0 when None; computed the same way
  in training and at query time.

Category affinity is the mean over levels rather than the max: a profile's values nest (a
parent category's share is >= each child's), so the max, or the deepest matching level's
value, would only echo the top level; the mean rewards matching deeper levels
(``Tools > Power Tools > Drills`` for a pliers buyer scores 1/3 of what pliers score).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from personalization.profiles import UserProfile, category_levels, is_warm
from retrieval.hits import RankedHit, Reason

#: Features that depend on the user (all exactly 0 for a cold user).
USER_FEATURES = (
    "has_history",
    "brand_affinity",
    "category_affinity",
    "price_match",
    "recent_sim_max",
    "recent_sim_mean",
    "prior_views",
    "prior_clicks",
    "prior_carts",
    "prior_purchases",
)
#: Features of the product and the query, the same for every shopper.
CONTEXT_FEATURES = (
    "popularity",
    "query_coec",
    "query_exposure",
    "retrieval_score",
    "rank_discount",
    "cross_score",
)
#: Every feature, in the model's column order (a saved model refuses another order).
FEATURE_NAMES = USER_FEATURES + CONTEXT_FEATURES
#: Boolean mask over :data:`FEATURE_NAMES` of the user features.
USER_FEATURE_MASK = np.array([name in USER_FEATURES for name in FEATURE_NAMES])
#: Added to the user's log-price std (so one-price histories do not make every other price
#: look infinitely far), and the clip of the price distance, in standard deviations.
PRICE_EPS = 0.1
PRICE_CLIP = 5.0
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: Columns of the log's click evidence for the query (filled from a model's click counts).
CLICK_COLUMNS = [_INDEX["query_coec"], _INDEX["query_exposure"]]
#: Reasons kept per hit (the features that moved its personal score most).
TOP_REASONS = 3
#: A contribution this close to 0 is no reason.
MIN_CONTRIBUTION = 1e-6
_PRIOR_EVENTS = (
    ("prior_views", "view"),
    ("prior_clicks", "click"),
    ("prior_carts", "add_to_cart"),
    ("prior_purchases", "purchase"),
)


def compute_features(
    profile: UserProfile | None,
    candidates: Sequence[RankedHit],
    popularity: Mapping[str, float],
    recent_vectors: np.ndarray | None,
    clicks: np.ndarray | None = None,
) -> np.ndarray:
    """Feature matrix of the candidates for one user and query.

    Args:
        profile: The user's profile at query time, or None for an anonymous user.
        candidates: Retrieved products (brand, category and price read from the payload).
        popularity: Product id -> smoothed popularity (missing: 0).
        recent_vectors: Vectors of the user's recent items, shape ``(m, dim)``, or None.
        clicks: ``query_coec`` and ``query_exposure`` per candidate, ``(n, 2)``
            (:func:`personalization.clickstats.click_features`), or None (zeros).

    Returns:
        float32 array of shape ``(len(candidates), len(FEATURE_NAMES))``.
    """
    out = np.zeros((len(candidates), len(FEATURE_NAMES)), dtype=np.float32)
    for row, cand in enumerate(candidates):
        if cand.retrieval_rank < 1:
            raise ValueError(f"retrieval_rank must be >= 1, got {cand.retrieval_rank}")
        out[row, _INDEX["popularity"]] = popularity.get(cand.product_id, 0.0)
        out[row, _INDEX["retrieval_score"]] = cand.retrieval
        out[row, _INDEX["rank_discount"]] = 1.0 / math.log2(cand.retrieval_rank + 1)
        out[row, _INDEX["cross_score"]] = cand.relevance or 0.0
    if clicks is not None and len(candidates):
        out[:, CLICK_COLUMNS] = clicks
    if not is_warm(profile) or not candidates:
        return out

    out[:, _INDEX["has_history"]] = 1.0
    mean, std = profile.price_mean_log, profile.price_std_log
    for row, cand in enumerate(candidates):
        brand = cand.payload.get("brand")
        category = cand.payload.get("category")
        price = cand.payload.get("price")
        price = float(price) if price is not None else None
        if brand:
            out[row, _INDEX["brand_affinity"]] = profile.brand_affinity.get(brand, 0.0)
        if category:
            levels = category_levels(category)
            affinity = profile.category_affinity
            out[row, _INDEX["category_affinity"]] = sum(
                affinity.get(lv, 0.0) for lv in levels
            ) / len(levels)
        if mean is not None and price is not None and price > 0:
            distance = abs(math.log(price) - mean) / ((std or 0.0) + PRICE_EPS)
            out[row, _INDEX["price_match"]] = -min(distance, PRICE_CLIP)
        counts = profile.interactions.get(cand.product_id)
        if counts:
            for name, event in _PRIOR_EVENTS:
                out[row, _INDEX[name]] = math.log1p(counts.get(event, 0))
    _similarities(out, candidates, recent_vectors)
    return out


def with_clicks(feats: np.ndarray, clicks: np.ndarray | None) -> np.ndarray:
    """A copy of a feature matrix with ``query_coec``/``query_exposure`` set to ``clicks``
    ``(n, 2)`` (left as they are when None)."""
    out = np.array(feats, dtype=np.float32)
    if clicks is not None and len(out):
        out[:, CLICK_COLUMNS] = clicks
    return out


def _similarities(
    out: np.ndarray, candidates: Sequence[RankedHit], recent_vectors: np.ndarray | None
) -> None:
    if recent_vectors is None or len(recent_vectors) == 0:
        return
    recent = np.asarray(recent_vectors, dtype=np.float32)
    recent = recent.reshape(len(recent), -1)
    recent = recent[np.linalg.norm(recent, axis=1) > 0]
    if len(recent) == 0:
        return
    recent = recent / np.linalg.norm(recent, axis=1, keepdims=True)
    rows = [i for i, c in enumerate(candidates) if c.vector is not None]
    if not rows:
        return
    cands = np.stack([np.asarray(candidates[i].vector, dtype=np.float32).ravel() for i in rows])
    if cands.shape[1] != recent.shape[1]:
        raise ValueError(
            f"candidate vectors have {cands.shape[1]} dimensions, recent vectors {recent.shape[1]}"
        )
    norms = np.linalg.norm(cands, axis=1, keepdims=True)
    sims = (cands / np.where(norms > 0, norms, 1.0)) @ recent.T
    sims[norms[:, 0] == 0] = 0.0
    out[rows, _INDEX["recent_sim_max"]] = sims.max(axis=1)
    out[rows, _INDEX["recent_sim_mean"]] = sims.mean(axis=1)


def reasons(
    features_row: Sequence[float] | np.ndarray,
    contributions: Sequence[float] | np.ndarray,
    top: int = TOP_REASONS,
) -> tuple[Reason, ...]:
    """Why one candidate moved: the features whose contribution to its score was largest.

    Args:
        features_row: One row of :func:`compute_features`.
        contributions: Per-feature contribution to the score (the fusion model's), same order
            as :data:`FEATURE_NAMES`.
        top: How many reasons at most.

    Returns:
        ``(feature name, feature value, contribution)`` for up to ``top`` features, largest
        absolute contribution first (ties: :data:`FEATURE_NAMES` order), leaving out those
        within :data:`MIN_CONTRIBUTION` of 0: what a hit's ``because`` holds.
    """
    values = np.asarray(features_row).ravel()
    contrib = np.asarray(contributions).ravel()
    if len(values) != len(FEATURE_NAMES) or len(contrib) != len(FEATURE_NAMES):
        raise ValueError(
            f"expected {len(FEATURE_NAMES)} features and contributions, "
            f"got {len(values)} and {len(contrib)}"
        )
    order = np.argsort(-np.abs(contrib), kind="stable")[:top]
    return tuple(
        (FEATURE_NAMES[j], float(values[j]), float(contrib[j]))
        for j in order
        if abs(contrib[j]) > MIN_CONTRIBUTION
    )

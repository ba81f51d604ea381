"""The personalisation features: hand-checked values, cold users, reasons()."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from personalization.events import Event
from personalization.features import (
    FEATURE_NAMES,
    PRICE_CLIP,
    USER_FEATURE_MASK,
    USER_FEATURES,
    compute_features,
    reasons,
)
from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore, UserProfile
from retrieval.hits import RankedHit


def cand(pid, brand, category, price, vector, retrieval, rank, relevance=None) -> RankedHit:
    """A retrieved product as the pipeline hands it to the features."""
    payload = {"brand": brand, "category": category, "price": price}
    return RankedHit(
        pid,
        score=retrieval,
        retrieval=retrieval,
        retrieval_rank=rank,
        relevance=relevance,
        payload={k: v for k, v in payload.items() if v is not None},
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
    )


PROFILE = UserProfile(
    pseudonym="ab" * 16,
    n_events=4,
    brand_affinity={"Knipex": 0.75, "Bosch": 0.25},
    category_affinity={
        "Tools": 1.0,
        "Tools > Hand Tools": 0.75,
        "Tools > Hand Tools > Pliers": 0.5,
    },
    price_mean_log=math.log(20.0),
    price_std_log=0.5,
    recent_items=("p1",),
    interactions={"p1": {"view": 3, "purchase": 1}},
)
RECENT = np.array([[2.0, 0.0], [0.0, 3.0]], dtype=np.float32)
CANDIDATES = [
    cand("p1", "Knipex", "Tools > Hand Tools > Pliers", 20.0, np.array([1.0, 0.0]), 0.9, 1, 2.5),
    cand("p9", "Makita", "Tools > Power Tools", 20.0 * math.e, np.array([1.0, 1.0]), 0.7, 3),
    cand("p10", None, None, 20.0 * math.e**10, np.array([0.0, 0.0]), 0.8, 2, -1.0),
    cand("p11", "Bosch", "Garden", None, None, 0.1, 7),
]
POPULARITY = {"p1": 0.3, "p10": 0.05, "p11": 0.2}


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_feature_names() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    names = tuple(n for n, m in zip(FEATURE_NAMES, USER_FEATURE_MASK, strict=True) if m)
    assert names == USER_FEATURES
    assert "popularity" not in USER_FEATURES and "has_history" in USER_FEATURES


def test_hand_checked_example() -> None:
    x = compute_features(PROFILE, CANDIDATES, POPULARITY, RECENT)
    assert x.dtype == np.float32 and x.shape == (4, len(FEATURE_NAMES))
    expected = {
        # has_history, brand, category, price, sim max, sim mean, views, clicks, carts, purchases,
        # popularity, query coec, query exposure, retrieval score, rank discount, cross score
        "p1": [1, 0.75, 0.75, 0, 1, 0.5, math.log(4), 0, 0, math.log(2), 0.3, 0, 0, 0.9, 1, 2.5],
        "p9": [1, 0, 0.5, -1 / 0.6, *[math.sqrt(0.5)] * 2, 0, 0, 0, 0, 0, 0, 0, 0.7, 0.5, 0],
        "p10": [1, 0, 0, -PRICE_CLIP, 0, 0, 0, 0, 0, 0, 0.05, 0, 0, 0.8, 1 / math.log2(3), -1.0],
        "p11": [1, 0.25, 0, 0, 0, 0, 0, 0, 0, 0, 0.2, 0, 0, 0.1, 1 / 3, 0],
    }
    for row, cand in zip(x, CANDIDATES, strict=True):
        np.testing.assert_allclose(row, expected[cand.product_id], rtol=1e-6, atol=1e-6)
    clicks = np.arange(8, dtype=np.float32).reshape(4, 2)  # the log's evidence, given
    with_clicks = compute_features(PROFILE, CANDIDATES, POPULARITY, RECENT, clicks)
    np.testing.assert_array_equal(
        with_clicks[:, [col("query_coec"), col("query_exposure")]], clicks
    )


def test_cold_user_features_are_zero() -> None:
    warm = compute_features(PROFILE, CANDIDATES, POPULARITY, RECENT)
    cold_profile = UserProfile(pseudonym="cd" * 16, n_events=0)
    for profile in (None, cold_profile):
        cold = compute_features(profile, CANDIDATES, POPULARITY, RECENT)
        assert np.all(cold[:, USER_FEATURE_MASK] == 0.0)
        np.testing.assert_array_equal(cold[:, ~USER_FEATURE_MASK], warm[:, ~USER_FEATURE_MASK])
    assert compute_features(None, [], {}, None).shape == (0, len(FEATURE_NAMES))


def test_missing_vectors_and_bad_inputs() -> None:
    x = compute_features(PROFILE, CANDIDATES, POPULARITY, None)
    assert np.all(x[:, [col("recent_sim_max"), col("recent_sim_mean")]] == 0)
    with pytest.raises(ValueError, match="dimensions"):
        compute_features(PROFILE, CANDIDATES, POPULARITY, np.ones((2, 3)))
    bad_rank = cand("p", None, None, None, None, 1.0, 0)
    with pytest.raises(ValueError, match="retrieval_rank"):
        compute_features(None, [bad_rank], {}, None)


def test_same_features_from_the_store(tmp_path: Path) -> None:
    """Training and query time share one path: store profile -> compute_features."""
    pz = Pseudonymizer(b"k" * 32)
    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.upsert_items(
            [
                {
                    "product_id": "a",
                    "brand": "Knipex",
                    "category": "Tools > Hand Tools",
                    "price": 20.0,
                },
                {
                    "product_id": "b",
                    "brand": "Bosch",
                    "category": "Tools > Power Tools",
                    "price": 80.0,
                },
            ]
        )
        index_vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}  # the index's
        t = 1_700_000_000.0
        store.ingest(
            [
                Event("u", t, "", "view", None, "a", 1),
                Event("u", t + 10, "", "click", None, "a", 2),
                Event("v", t, "", "view", None, "b", 1),
            ],
            pz,
        )
        profile = store.profile(pz.pseudonym("u"), before=t + 100)
        cands = [
            cand("a", "Knipex", "Tools > Hand Tools", 20.0, index_vectors["a"], 0.5, 1),
            cand("b", "Bosch", "Tools > Power Tools", 80.0, index_vectors["b"], 0.4, 2),
        ]
        recent = np.stack([index_vectors[p] for p in profile.recent_items])
        x = compute_features(profile, cands, store.popularity(["a", "b"]), recent)
    a, b = x
    assert a[col("brand_affinity")] == pytest.approx(1.0) and b[col("brand_affinity")] == 0
    assert a[col("category_affinity")] == pytest.approx(1.0)
    assert b[col("category_affinity")] == pytest.approx(0.5)
    assert a[col("recent_sim_max")] == pytest.approx(1.0) and b[col("recent_sim_max")] == 0
    assert a[col("prior_views")] == pytest.approx(math.log(2))
    assert a[col("prior_clicks")] == pytest.approx(math.log(2))
    assert b[col("price_match")] == pytest.approx(-min(math.log(4) / 0.1, PRICE_CLIP))
    assert a[col("popularity")] > b[col("popularity")]


def test_reasons_order_by_absolute_contribution() -> None:
    row = compute_features(PROFILE, CANDIDATES[:1], POPULARITY, RECENT)[0]
    contributions = np.zeros(len(FEATURE_NAMES))
    contributions[col("brand_affinity")] = 0.2
    contributions[col("prior_purchases")] = -0.9
    contributions[col("cross_score")] = 0.5
    contributions[col("popularity")] = 0.2
    got = reasons(row, contributions, top=3)
    assert [name for name, _, _ in got] == ["prior_purchases", "cross_score", "brand_affinity"]
    assert got[0][1] == pytest.approx(math.log(2)) and got[0][2] == pytest.approx(-0.9)
    assert len(reasons(row, contributions, top=10)) == 4  # zero contributions left out
    contributions[col("popularity")] = 1e-7  # within MIN_CONTRIBUTION of 0: no reason either
    assert len(reasons(row, contributions, top=10)) == 3
    with pytest.raises(ValueError, match="expected"):
        reasons(row[:3], contributions)


def test_personalization_imports_no_torch_nor_search_stack() -> None:
    code = (
        "import sys, personalization.events, personalization.privacy, personalization.profiles, personalization.features\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'rerank', 'indexer', 'shopsearch', 'sentence_transformers')"
        " or (m.startswith('retrieval.') and m != 'retrieval.hits')]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)

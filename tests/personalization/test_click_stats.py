"""Click evidence per (query, product), position bias removed (the IPW weights training uses:
tests/training/test_train_personal.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.errors import ShopsearchError
from personalization.clickstats import ALPHA, ClickStats, click_features
from personalization.ranker import PersonalFusion, PersonalRanker


def test_clicks_over_expected_clicks_by_hand():
    stats = ClickStats(max_rank=3)
    stats.add("Cordless  Drill", ["a", "b", "c"], [0, 1, 0])  # b clicked at rank 2
    stats.add("cordless drill", ["b", "a", "c"], [1, 0, 0])  # b clicked at rank 1
    theta = [1.0, 0.5, 0.25]
    counts = stats.lookup("CORDLESS drill", ["b", "c", "z"])
    assert counts.shown.tolist() == [[1, 1, 0], [0, 0, 2], [0, 0, 0]]
    assert counts.clicks.tolist() == [2, 0, 0]
    got = stats.features("cordless drill", ["b", "c", "z"], theta)
    # expected clicks: b 1 + 0.5, c 2 * 0.25; whole log: 2 * (1 + 0.5 + 0.25) = 3.5, 2 clicks
    prior = 2 / 3.5
    coec_b = (2 + ALPHA * prior) / (1.5 + ALPHA)
    coec_c = (0 + ALPHA * prior) / (0.5 + ALPHA)
    np.testing.assert_allclose(
        got,
        [
            [math.log(coec_b / prior), math.log1p(1.5)],
            [math.log(coec_c / prior), math.log1p(0.5)],
            [0, 0],
        ],
        rtol=1e-5,
    )
    # without correction the rank-3 product is judged on raw impressions: it looks worse
    naive = stats.features("cordless drill", ["c"], None)
    assert naive[0, 0] < got[1, 0]
    assert stats.features("never searched", ["b"], theta).tolist() == [[0.0, 0.0]]


def test_click_counts_survive_a_save_and_a_bad_file_is_refused(tmp_path):
    stats = ClickStats(max_rank=4)
    stats.add("saw", ["x", "y"], [0, 2])
    stats.save(tmp_path)
    back = ClickStats.load(tmp_path)
    np.testing.assert_allclose(
        back.features("saw", ["x", "y"], [1, 0.5]), stats.features("saw", ["x", "y"], [1, 0.5])
    )
    assert len(back) == 2
    (tmp_path / "click_stats.npz").write_bytes(b"not numpy")
    with pytest.raises(ShopsearchError, match="train personal"):
        ClickStats.load(tmp_path)


def test_the_model_keeps_its_click_counts_and_reads_them_with_its_curve(tmp_path):
    stats = ClickStats(max_rank=2)
    stats.add("saw", ["x", "y"], [0, 1])
    ranker = PersonalRanker(PersonalFusion(), {"propensity": [1.0, 0.25]}, stats)
    ranker.save(tmp_path)
    back = PersonalRanker.load(tmp_path)
    counts = stats.lookup("saw", ["y", "x"])
    np.testing.assert_allclose(
        back.click_features("saw", ["y", "x"]),
        click_features(
            counts.shown, counts.clicks, stats.total_shown, stats.total_clicks, [1.0, 0.25]
        ),
    )
    assert back.click_features(None, ["x"]) is None
    PersonalRanker(PersonalFusion()).save(tmp_path)  # a model without counts replaces it
    assert PersonalRanker.load(tmp_path).click_stats is None
    assert not (tmp_path / "click_stats.npz").exists()

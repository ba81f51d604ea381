"""Training the personal ranker (training.personal) and the click counts it trains on
(training.from_log): it learns a behaviour signal, inverse propensity weights survive the
loss's normalisation, a search reads only counts from before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personalization.features import FEATURE_NAMES
from personalization.impressions import Impression
from personalization.ranker import HAS_HISTORY, PersonalFusion
from training.from_log import click_snapshots
from training.personal import Group, PersonalTrainConfig, _listwise_loss, ips_dcg, train_personal

F = len(FEATURE_NAMES)
SIM = FEATURE_NAMES.index("recent_sim_max")


@pytest.mark.slow
def test_training_learns_a_behaviour_signal():
    rng = np.random.default_rng(0)
    groups = []
    for i in range(300):
        n = 8
        cross = rng.normal(size=n).astype(np.float32)
        feats = np.zeros((n, F), dtype=np.float32)
        feats[:, HAS_HISTORY] = 1.0
        feats[:, SIM] = rng.uniform(0, 1, size=n)
        feats[:, FEATURE_NAMES.index("cross_score")] = cross
        # the shopper clicks what resembles their past, whatever the relevance score says
        label = (feats[:, SIM] > 0.8).astype(np.float32)
        groups.append(Group(f"s{i}", cross, feats, label, np.ones(n, dtype=np.float32)))
    ranker, report = train_personal(
        groups, PersonalTrainConfig(epochs=30, seed=0), log=lambda m: None
    )
    assert report.best_val_ips_dcg > report.baseline_val_ips_dcg + 0.2
    assert ranker.meta["train"]["best_epoch"] >= 1
    # brand affinity was 0 in every training row: at serving, a catalog with brands gives it
    # values, which must change nothing (the model never learned what they mean)
    feats = groups[0].feats.copy()
    before = ranker.score(groups[0].cross, feats).personal
    feats[:, FEATURE_NAMES.index("brand_affinity")] = 0.9
    np.testing.assert_array_equal(ranker.score(groups[0].cross, feats).personal, before)


def _imp(ts, query, shown, labels):
    return Impression(f"s{ts}", "u", "sess", ts, query, tuple(shown), tuple(labels))


def test_a_search_reads_only_counts_from_before_it():
    log = [_imp(0, "q", ["a", "b"], [1, 0]), _imp(100, "q", ["a", "b"], [0, 1])]
    snaps, final = click_snapshots(
        log, [(50, "q", ["a", "b"]), (100, "q", ["a", "b"]), (200, "q", ["a"])], 2, delay_s=60
    )
    assert snaps[0].shown.sum() == 0  # 50 s after the first list: within the delay
    assert snaps[1].clicks.tolist() == [1, 0]  # the first list only, not its own
    assert snaps[2].shown.tolist() == [[2, 0]]  # both lists are old enough by then (rank 1 twice)
    assert final.lookup("q", ["a", "b"]).clicks.tolist() == [1, 1]


def test_inverse_propensity_weights_are_not_cancelled_by_normalisation():
    # two lists, each with one click: at rank 1 (weight 1) and at a rarely examined rank (8)
    scores = np.array([3.0, 2.0, 1.0])
    label = np.array([0.0, 0.0, 1.0])
    assert ips_dcg(scores, label, np.full(3, 8.0)) == pytest.approx(
        8 * ips_dcg(scores, label, np.ones(3))
    )
    n = len(FEATURE_NAMES)
    model = PersonalFusion(n, hidden=4, dropout=0.0)
    feats = np.zeros((3, n), dtype=np.float32)

    def loss(weight):
        group = Group(
            "g",
            scores.astype(np.float32),
            feats,
            label.astype(np.float32),
            np.full(3, weight, dtype=np.float32),
        )
        with torch.no_grad():
            return float(_listwise_loss(model, [group])[0])

    assert loss(8.0) == pytest.approx(8 * loss(1.0), rel=1e-5)

"""The personalization benchmark trains through train_from_log and scores four rankers."""

from __future__ import annotations

import numpy as np
import pytest
from test_simulate import CATALOG, JUDGMENTS, POOL, RESULTS

import research.bench_personal as bench
from research.simulate import SimConfig


@pytest.fixture()
def setup() -> bench.Setup:
    ids, titles, vectors, _ = CATALOG
    candidates = {q: RESULTS[q][:50] for q in POOL}
    score = {q: {p: 1.0 - i / 50 for i, p in enumerate(c)} for q, c in candidates.items()}
    rank = {q: {p: i + 1 for i, p in enumerate(c)} for q, c in candidates.items()}
    return bench.Setup(
        judgments=JUDGMENTS,
        pool=list(POOL),
        candidates=candidates,
        retrieval_score=score,
        retrieval_rank=rank,
        cross=score,
        product_ids=list(ids),
        titles=list(titles),
        tuned_index="",
        world_vectors=vectors,
        feature_vectors=dict(zip(ids, vectors.astype(np.float32), strict=True)),
    )


@pytest.mark.slow
def test_run_seed_trains_from_the_log_and_compares_four_rankers(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RETRIEVAL_PROBE", 0)  # no index in this test
    monkeypatch.setattr(
        bench, "SimConfig", lambda **kw: SimConfig(**kw, n_clusters=4, sessions_per_user=6.0)
    )
    result, models = bench.run_seed(setup, 5, tmp_path, n_users=200, log=lambda m: None)
    assert set(result.ndcg) == set(bench.RANKERS) == set(models) | {"relevance-only"}
    assert all(0.0 <= v <= 1.0 for v in result.ndcg.values())
    assert result.heldout_warm > 50 and result.train_searches > 20
    # the examination curve is estimated from the log alone and starts at rank 1 = 1
    assert len(result.propensity_estimated) == 10 and result.propensity_estimated[0] == 1.0
    assert result.propensity_true[:2] == [1.0, 0.5]
    assert result.propensity_max_error < 0.25
    # the oracle (fit on true utilities) is the ceiling; cold shoppers are left exactly alone
    assert result.ndcg["oracle"] >= result.ndcg["relevance-only"]
    assert result.cold["corrected"] == result.cold["relevance-only"]
    assert 0.0 <= result.p_corrected_vs_naive <= 1.0
    assert (tmp_path / "sim-seed5-noise0" / "shown.parquet").exists()

"""Honest on a small log (issue 25): the examination curve's bootstrap interval and its warning,
the refusal to serve a model that does not beat relevance-only ranking, and shown products
outside today's candidates scored exactly rather than dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ShopsearchError
from personalization.events import Event
from personalization.propensity import MAX_WIDTH, bootstrap_propensities
from personalization.ranker import PersonalFusion, PersonalRanker
from rerank.blend import rerank_hits
from retrieval.hits import RankedHit
from training.config import PersonalTrainConfig
from training.from_log import (
    LogTrainConfig,
    curve_warning,
    lessons_from_log,
    outside_relevance,
    outside_scorer,
    train_from_log,
)

T0 = 1_750_000_000.0
TRUE = 1 / np.arange(1, 11)


def _arrays(n_search: int, seed: int, base: float = -2.6):
    """Shown lists of 10 with a 1/rank examination curve, relevance from 3 features, the
    logging ranker sorting by a noisy relevance: (ranks, clicks, features, search ids)."""
    rng = np.random.default_rng(seed)
    k = 10
    x = rng.normal(size=(n_search * k, 3))
    gamma = 1 / (1 + np.exp(-(x @ np.array([1.0, -0.5, 0.3]) + base)))
    ranks = np.empty(n_search * k, dtype=int)
    for s in range(n_search):
        sl = slice(s * k, (s + 1) * k)
        ranks[sl] = np.argsort(np.argsort(-(gamma[sl] + rng.normal(scale=0.3, size=k)))) + 1
    clicks = rng.random(n_search * k) < TRUE[ranks - 1] * gamma
    return ranks, clicks, x, np.repeat(np.arange(n_search), k)


def test_the_interval_covers_the_known_curve_and_the_small_log_is_warned_about():
    """The issue's log: 480 searches, about 183 clicks, a 1/rank curve."""
    covered, ranks_checked = 0, 0
    for seed in (0, 1):
        ranks, clicks, x, searches = _arrays(480, seed)
        assert 140 <= clicks.sum() <= 230  # the size
        iv = bootstrap_propensities(ranks, clicks, x, searches, max_rank=10, resamples=80, seed=0)
        assert iv.resamples == 80 and iv.searches == 480
        assert iv.low[0] == iv.high[0] == 1.0  # rank 1 is 1 by definition
        assert np.all(iv.low <= iv.high)
        inside = (iv.low[1:] <= TRUE[1:] + 1e-9) & (TRUE[1:] <= iv.high[1:] + 1e-9)
        covered += int(inside.sum())
        ranks_checked += len(inside)
        warning = curve_warning(iv)
        assert warning is not None and "uncertain" in warning  # too few clicks to trust
        assert iv.clicks_needed() > clicks.sum()
    assert covered > ranks_checked / 2  # more often than not (a 95% interval: most ranks)


def test_no_warning_on_a_big_log():
    ranks, clicks, x, searches = _arrays(3000, 7, base=-1.9)
    iv = bootstrap_propensities(ranks, clicks, x, searches, max_rank=10, resamples=25, seed=0)
    assert iv.widest()[1] < MAX_WIDTH
    assert curve_warning(iv) is None
    assert iv.clicks_needed() == clicks.sum()


def test_the_bootstrap_resamples_whole_searches_and_is_seeded():
    ranks, clicks, x, searches = _arrays(200, 3)
    a = bootstrap_propensities(ranks, clicks, x, searches, resamples=10, seed=5)
    b = bootstrap_propensities(ranks, clicks, x, searches, resamples=10, seed=5)
    np.testing.assert_array_equal(a.low, b.low)
    assert json.dumps(a.as_dict())  # JSON-ready
    with pytest.raises(ShopsearchError, match="resamples"):
        bootstrap_propensities(ranks, clicks, x, searches, resamples=0)


# ---------------------------------------------------------------- a simulated shop's log


def _search(user, ts, sid, shown, session, query):
    return Event(user, ts, session, "search", query=query, search_id=sid, results=tuple(shown))


def _click(user, ts, pid, sid, session, position):
    return Event(user, ts, session, "click", product_id=pid, search_id=sid, position=position)


def _shop(n_users=24, days=20, seed=0, previous_engine=False, taste=0.6):
    """Shoppers who love one brand; 1/rank examination. ``previous_engine``: the log was
    written by another engine, whose shown lists are mostly products that are not among
    today's relevance-only candidates. Returns (events, rank fn, outside fn, catalog)."""
    rng = np.random.default_rng(seed)
    brands = ["acme", "bolt", "core"]
    catalog = {f"p{i}": brands[i % 3] for i in range(60)}
    queries = [f"q{j}" for j in range(6)]
    cands = {}
    for j, q in enumerate(queries):
        ids = [f"p{(j * 5 + i) % 30}" for i in range(12)]  # today's candidates: p0..p29
        rel = np.linspace(1.0, -1.0, len(ids)).astype(np.float32)
        cands[q] = [
            RankedHit(
                p, float(r), float(r), i + 1, relevance=float(r), payload={"brand": catalog[p]}
            )
            for i, (p, r) in enumerate(zip(ids, rel, strict=True))
        ]
    shown_by = {
        q: (
            [f"p{30 + (j * 7 + i) % 30}" for i in range(8)] + [h.product_id for h in cands[q][:2]]
            if previous_engine
            else [h.product_id for h in cands[q][:10]]
        )
        for j, q in enumerate(queries)
    }
    events, n = [], 0
    for u in range(n_users):
        love = brands[u % 3]
        for d in range(days):
            q = queries[rng.integers(len(queries))]
            ts, sid, session = T0 + d * 86400 + u * 60, f"s{n}", f"{u}-{d}"
            n += 1
            events.append(_search(f"u{u}", ts, sid, shown_by[q], session, q))
            for r, pid in enumerate(shown_by[q], start=1):
                utility = 0.15 + taste * (catalog[pid] == love)
                if rng.random() < 1 / r and rng.random() < utility:
                    events.append(_click(f"u{u}", ts + r, pid, sid, session, r))

    def rank(qs):
        return [cands[q] for q in qs]

    def outside(qs, cand_lists, ids):
        return [
            [
                RankedHit(p, -2.0, -2.0, 20, relevance=-2.0, payload={"brand": catalog[p]})
                for p in wanted
            ]
            for wanted in ids
        ]

    return events, rank, outside, catalog


def test_a_previous_engines_log_keeps_its_shown_products():
    events, rank, outside, catalog = _shop(previous_engine=True)
    items = lambda ids: {p: {"brand": catalog[p]} for p in ids if p in catalog}  # noqa: E731
    before, _, skipped_before, _ = lessons_from_log(events, rank, lambda ids: {}, items=items)
    after, _, skipped_after, _ = lessons_from_log(
        events, rank, lambda ids: {}, items=items, outside=outside
    )
    used_before = sum(len(ls.positions) for ls in before)
    used_after = sum(len(ls.positions) for ls in after)
    reason = "shown product not among the query's relevance-only candidates"
    assert skipped_before[reason] == 8 * len(before)  # 8 of each 10 were dropped
    assert reason not in skipped_after
    assert used_before == 2 * len(before) and used_after == 10 * len(after)
    assert all(ls.outside.sum() == 8 for ls in after)
    # the outside products' scores are what the scorer gave them, in their shown positions
    ls = after[0]
    assert ls.positions.tolist() == list(range(1, 11))
    assert ls.relevance[:8].tolist() == [-2.0] * 8 and ls.relevance[8] == 1.0


class _FakeCrossEncoder:
    """A 'cross-encoder' whose logit is a fixed function of the text (exact to check)."""

    fingerprint = "fake"
    retrieval_weight = 0.5

    def score(self, query, texts):
        return np.array([len(t) % 7 - 0.1 * t.count(query[:3]) for t in texts], dtype=np.float32)

    def rank(self, query, hits):
        from retrieval.hits import hit_text

        return rerank_hits(
            hits, self.score(query, [hit_text(h) for h in hits]), self.retrieval_weight
        )


def test_an_outside_product_is_scored_as_it_would_be_among_the_candidates():
    """Scored against the candidates' statistics, a candidate reads its served relevance."""
    hits = [RankedHit(f"p{i}", 0.0, 1.0 / (60 + i), i + 1) for i in range(8)]
    cross = np.array([2.0, -1.0, 0.5, 0.3, 1.5, -0.2, 0.0, 0.9], dtype=np.float32)
    served = {h.product_id: h for h in rerank_hits(hits, cross, 0.5)}
    ranked = sorted(served.values(), key=lambda h: -h.relevance)
    for i, h in enumerate(hits):
        got = outside_relevance(ranked, cross[i : i + 1], np.array([h.retrieval]), 0.5)
        assert got[0] == pytest.approx(served[h.product_id].relevance, abs=1e-5)
    # without a cross-encoder: the standardised first-stage score
    plain = {h.product_id: h for h in rerank_hits(hits, None, 1.0)}
    got = outside_relevance(list(plain.values()), None, np.array([hits[3].retrieval]), 1.0)
    assert got[0] == pytest.approx(plain["p3"].relevance, abs=1e-5)


def test_the_pipelines_scorer_scores_outside_products_exactly(
    tmp_path, sample_catalog, tiny_encoder
):
    from indexer.build import index_catalog
    from rerank.pipeline import SearchPipeline
    from retrieval.hits import hit_text
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation

    index_catalog(
        sample_catalog, IndexLocation(path=tmp_path / "ix"), encoder=tiny_encoder, progress=False
    )
    retriever = Retriever.open(tmp_path / "ix", encoder=tiny_encoder)
    fake = _FakeCrossEncoder()
    pipeline = SearchPipeline(retriever, reranker=fake)
    query = "cordless drill"
    (cands,) = pipeline.relevance_fn(10)([query])
    deep = retriever.search(query, k=1000)
    outside_ids = [h.product_id for h in deep[12:16]]
    assert not set(outside_ids) & {h.product_id for h in cands}
    unranked = "no-such-rank"
    ((got),) = outside_scorer(pipeline)([query], [cands], [[*outside_ids, unranked]])
    assert [h.product_id for h in got] == outside_ids  # an id the index lacks is left out
    at = {h.product_id: h for h in deep}
    for h in got:
        assert h.retrieval == pytest.approx(at[h.product_id].retrieval)  # the fusion's own score
        assert h.retrieval_rank == at[h.product_id].retrieval_rank > 10
        assert h.cross == pytest.approx(float(fake.score(query, [hit_text(h)])[0]))  # the pair
        expected = outside_relevance(cands, np.array([h.cross]), np.array([h.retrieval]), 0.5)
        assert h.relevance == pytest.approx(float(expected[0]))
        assert h.vector is not None and h.payload  # what the features read
    retriever.close()


# ---------------------------------------------------------------- beats the baseline, or not


def _train(force=False, lr=None, **kw):
    events, rank, _, _ = _shop(**kw)
    model_config = PersonalTrainConfig(loss="listwise", seed=0)
    if lr is not None:
        model_config = PersonalTrainConfig(loss="listwise", seed=0, lr=lr, epochs=2)
    lines = []
    model, report = train_from_log(
        events,
        rank,
        lambda ids: {},
        LogTrainConfig(val_days=4, bootstrap=20, model=model_config),
        log=lines.append,
        force=force,
    )
    return model, report, lines


def test_a_model_that_does_not_beat_the_baseline_is_said_and_refused(tmp_path):
    model, report, lines = _train(lr=0.0)  # it cannot learn: validation stays at the baseline
    assert not report.beats_baseline and not report.forced
    assert any("does not beat relevance-only" in line for line in lines)
    assert report.propensity_interval is not None
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "personal.json").read_text())
    assert meta["beats_baseline"] is False
    with pytest.raises(ShopsearchError, match="did not beat relevance-only") as err:
        PersonalRanker.load(tmp_path / "m")
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    # serving opens it through the same load
    from personalization.personalizer import Personalizer

    with pytest.raises(ShopsearchError, match="did not beat"):
        Personalizer.open(tmp_path / "m", tmp_path / "profiles")
    forced, report, lines = _train(force=True, lr=0.0)
    assert report.forced and any("saved anyway (forced)" in line for line in lines)
    forced.save(tmp_path / "f")
    assert PersonalRanker.load(tmp_path / "f").meta["forced"] is True
    # a model saved before this was recorded still loads
    PersonalRanker(PersonalFusion(hidden=4)).save(tmp_path / "old")
    PersonalRanker.load(tmp_path / "old")


@pytest.mark.slow
def test_a_model_that_beats_the_baseline_is_served():
    model, report, lines = _train(taste=0.8, n_users=45)
    assert report.beats_baseline and model.meta["beats_baseline"] is True
    assert not any("does not beat" in line for line in lines)

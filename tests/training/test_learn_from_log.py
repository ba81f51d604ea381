"""Learning personalization from a shop's log: impressions, attribution, position bias."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ShopsearchError
from personalization.events import Event, read_events
from personalization.impressions import impressions_from_events
from personalization.ranker import PersonalFusion, PersonalRanker
from retrieval.hits import RankedHit
from training.from_log import LogTrainConfig, train_from_log
from training.propensity import estimate_propensities

T0 = 1_750_000_000.0


def _search(user, ts, sid, shown, session="s", query="drill"):
    return Event(user, ts, session, "search", query=query, search_id=sid, results=tuple(shown))


def _act(user, ts, kind, pid, sid=None, session="s", position=None):
    return Event(user, ts, session, kind, product_id=pid, search_id=sid, position=position)


def test_interactions_are_attributed_to_the_search_that_showed_them():
    events = [
        _search("u", T0, "s1", ["a", "b", "c"]),
        _act("u", T0 + 5, "view", "a"),  # a product page view: never an examination label
        _act("u", T0 + 10, "click", "b", sid="s1", position=2),
        _act("u", T0 + 20, "purchase", "b"),  # no search_id: latest search in the session
        _search("u", T0 + 30, "s2", ["c", "d"]),
        _act("u", T0 + 40, "add_to_cart", "c"),  # latest search that showed c is s2
        _act("u", T0 + 50, "click", "z"),  # never shown: unattributed
        _act("v", T0 + 60, "click", "a", sid="s1"),  # another shopper's search
        Event("u", T0 + 70, "s", "search", query="saw"),  # no shown list
    ]
    got, stats = impressions_from_events(reversed(events))  # any order in, time order out
    assert [m.search_id for m in got] == ["s1", "s2"]
    assert got[0].shown == ("a", "b", "c") and got[0].labels == (0, 3, 0)
    assert got[1].labels == (2, 0)
    assert stats.searches == 3 and stats.searches_with_impressions == 2
    assert stats.interactions == 5 and stats.interactions_attributed == 3
    assert sum(stats.skipped.values()) == 3
    assert any("no earlier search" in r for r in stats.skipped)
    assert any("its shopper's session does not have" in r for r in stats.skipped)
    assert any("without a shown list" in r for r in stats.skipped)


def test_search_ids_are_read_within_their_shopper_and_session():
    """A page counter that restarts each session (ids 1, 2, 1, 2) names one search each, and a
    click never lands on another session's search (case 27)."""
    events = []
    for n, session in enumerate(["s-a", "s-b", "s-c"]):
        t = T0 + 1000 * n
        events += [
            _search("u", t, "1", ["a", "b"], session=session),
            _search("u", t + 10, "2", ["c", "d"], session=session),
            _act("u", t + 20, "click", "ab"[n % 2], sid="1", session=session),
        ]
    events.append(_act("u", T0 + 5000, "click", "c", sid="2", session="s-other"))
    got, stats = impressions_from_events(events)
    assert len(got) == 6 and stats.searches_with_impressions == 6
    assert [m.session_id for m in got if any(m.labels)] == ["s-a", "s-b", "s-c"]
    assert [m.labels for m in got if m.search_id == "1"] == [(1, 0), (0, 1), (1, 0)]
    assert stats.interactions_attributed == 3
    assert stats.skipped == {"interaction names a search_id its shopper's session does not have": 1}
    # the same id twice in one session is a duplicate, said as such
    _, stats = impressions_from_events([*events, _search("u", T0 + 30, "1", ["x"], session="s-a")])
    assert stats.skipped["search_id seen twice in one session (the later search dropped)"] == 1


def test_a_search_without_a_shown_list_is_still_answered_by_its_click():
    """Which query led to an interaction needs the search and the click, not the shown list
    (case 28): the spelling vocabulary learns from these."""
    from personalization.impressions import answered_searches

    events = [
        Event("u", T0, "s", "search", query="kohler faucet", search_id="q1"),
        _act("u", T0 + 10, "click", "f1", sid="q1"),
        Event("v", T0, "t", "search", query="kohler tap"),
        _act("v", T0 + 10, "purchase", "f2", session="t"),  # no search_id: the latest in session
        Event("w", T0, "r", "search", query="nothing came of it"),
    ]
    answered, stats = answered_searches(events)
    assert [(a.query, a.products) for a in answered] == [
        ("kohler faucet", ("f1",)),
        ("kohler tap", ("f2",)),
    ]
    assert stats.searches == 3 and stats.searches_with_impressions == 0
    assert stats.interactions_attributed == 2
    assert impressions_from_events(events)[0] == []  # nothing to learn a ranking from


def test_the_log_reader_takes_impression_lists(tmp_path):
    rows = [
        {
            "user_id": "u",
            "timestamp": T0,
            "event": "search",
            "query": "q",
            "search_id": "s1",
            "results": ["a", "b"],
        },
        {
            "user_id": "u",
            "timestamp": T0,
            "event": "search",
            "query": "q",
            "results": json.dumps(["c", 7]),
        },
        {"user_id": "u", "timestamp": T0, "event": "click", "product_id": "a", "results": ["a"]},
        {"user_id": "u", "timestamp": T0, "event": "search", "query": "q", "results": {"a": 1}},
        {"user_id": "u", "timestamp": T0, "event": "search", "query": "q", "results": ["a", None]},
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    batches = list(read_events(path))
    events = [e for b in batches for e in b.events]
    rejects = [r for b in batches for r in b.rejects]
    assert [e.results for e in events] == [("a", "b"), ("c", "7")]
    assert events[0].search_id == "s1"
    reasons = {r.line: r.reason for r in rejects}
    assert "only search events" in reasons[3]
    assert "not a list" in reasons[4]
    assert "results[2]" in reasons[5]


def test_regression_em_recovers_a_known_examination_curve():
    rng = np.random.default_rng(0)
    n_search, k = 3000, 10
    true = 1 / np.arange(1, k + 1) ** 1.0
    x = rng.normal(size=(n_search * k, 3))
    gamma = 1 / (1 + np.exp(-(x @ np.array([1.5, -1.0, 0.5]) - 0.5)))
    ranks = np.empty(n_search * k, dtype=int)
    for s in range(n_search):  # the logging ranker sorts by a noisy relevance (confounded)
        sl = slice(s * k, (s + 1) * k)
        ranks[sl] = np.argsort(np.argsort(-(gamma[sl] + rng.normal(scale=0.3, size=k)))) + 1
    clicks = rng.random(n_search * k) < true[ranks - 1] * gamma
    est = estimate_propensities(ranks, clicks, x)
    assert est.theta[0] == 1.0
    assert np.abs(est.theta - true).max() < 0.05
    # the raw click-through rate by rank is far off: the correction is doing the work
    ctr = np.bincount(ranks - 1, weights=clicks) / np.bincount(ranks - 1)
    assert np.abs(est.theta - true).max() < 0.5 * np.abs(ctr / ctr[0] - true).max()
    assert est.inverse_weights(np.array([1, 10]), clip=0.2).tolist() == pytest.approx(
        [1.0, 1 / max(est.theta[9], 0.2)]
    )
    with pytest.raises(ShopsearchError, match="no click"):
        estimate_propensities(ranks, np.zeros_like(clicks), x)


def _shop_log(n_users=60, days=20, seed=0, eta=1.0):
    """Shoppers who each love one brand, shown a fixed relevance ranking, clicking with
    position bias ``1 / rank ** eta``; returns (events, rank function)."""
    rng = np.random.default_rng(seed)
    brands = ["acme", "bolt", "core"]
    items = {f"p{i}": brands[i % 3] for i in range(30)}
    queries = [f"q{j}" for j in range(6)]
    cands = {}
    for j, q in enumerate(queries):
        ids = [f"p{(j * 5 + i) % 30}" for i in range(12)]
        rel = np.linspace(1.0, -1.0, len(ids)).astype(np.float32)
        cands[q] = [
            RankedHit(p, float(r), float(r), i + 1, relevance=float(r), payload={"brand": items[p]})
            for i, (p, r) in enumerate(zip(ids, rel, strict=True))
        ]
    events, n = [], 0
    for u in range(n_users):
        love = brands[u % 3]
        for d in range(days):
            q = queries[rng.integers(len(queries))]
            ts = T0 + d * 86400 + u * 60
            shown = [h.product_id for h in cands[q][:10]]
            sid = f"s{n}"
            n += 1
            events.append(_search(f"u{u}", ts, sid, shown, session=f"{u}-{d}", query=q))
            for r, pid in enumerate(shown, start=1):
                utility = 0.3 + 0.6 * (items[pid] == love)
                if rng.random() < 1 / r**eta and rng.random() < utility:
                    events.append(
                        _act(f"u{u}", ts + r, "click", pid, sid=sid, session=f"{u}-{d}", position=r)
                    )

    def rank(qs):
        return [cands[q] for q in qs]

    return events, rank


@pytest.mark.slow
def test_training_from_a_log_estimates_the_bias_and_records_what_it_needs():
    events, rank = _shop_log()
    config = LogTrainConfig(val_days=4)
    model, report = train_from_log(
        events,
        rank,
        lambda ids: {},
        config,
        relevance_source={"reranker": "fp-1", "retrieval_weight": 0.5},
        log=lambda m: None,
    )
    true = 1 / np.arange(1, 11)
    assert np.abs(np.array(report.propensity) - true).max() < 0.1
    assert report.train_searches > report.val_searches > 0
    assert report.corrected and report.log.searches_with_impressions == 60 * 20
    assert model.meta["relevance"] == {"reranker": "fp-1", "retrieval_weight": 0.5}
    assert model.meta["propensity"] == report.propensity
    assert len(report.history) <= config.model.epochs + 1  # early stopping may end it sooner
    naive, naive_report = train_from_log(
        events,
        rank,
        lambda ids: {},
        LogTrainConfig(val_days=4, correct=False),
        log=lambda m: None,
    )
    assert naive_report.propensity == [] and naive.meta["corrected"] is False
    assert model.click_stats is not None and len(model.click_stats) > 0
    assert model.click_features("q0", ["p0"]).shape == (1, 2)
    without, _ = train_from_log(
        events,
        rank,
        lambda ids: {},
        LogTrainConfig(val_days=4, click_evidence=False),
        log=lambda m: None,
    )
    assert without.click_stats is None and without.click_features("q0", ["p0"]) is None


def test_a_log_without_impressions_is_refused_with_the_field_it_needs():
    events = [Event("u", T0, "s", "search", query="drill"), _act("u", T0 + 1, "click", "a")]
    with pytest.raises(ShopsearchError, match="'results'"):
        train_from_log(events, lambda qs: [[] for _ in qs], lambda ids: {}, log=lambda m: None)


def test_a_log_whose_product_ids_the_index_lacks_is_refused_naming_the_ids():
    """Ids of another catalog are the log's mistake, not the reranker depth's (case 29)."""
    events = [
        e
        for n in range(3)
        for e in (
            _search("u", T0 + n, f"q{n}", ["000001", "000002"]),
            _act("u", T0 + n + 0.5, "click", "000002", sid=f"q{n}"),
        )
    ]
    with pytest.raises(ShopsearchError, match=r"none of the 2 shown product ids \(1 of them"):
        train_from_log(
            events,
            lambda qs: [[] for _ in qs],
            lambda ids: {},
            log=lambda m: None,
            items=lambda ids: {},  # the index has none of them
        )


def test_shown_products_the_index_lacks_are_counted_apart(monkeypatch):
    from training.from_log import lessons_from_log

    events = [
        _search("u", T0, "q", ["a", "b", "gone"]),
        _act("u", T0 + 1, "click", "a", sid="q"),
    ]
    hits = [RankedHit(p, 1.0, 1.0, i + 1, relevance=1.0) for i, p in enumerate(["a"])]
    *_, skipped, _ = lessons_from_log(
        events,
        lambda qs: [hits for _ in qs],
        lambda ids: {},
        items=lambda ids: {p: {} for p in ids if p in {"a", "b"}},
    )
    assert skipped["shown product not in the index"] == 1
    assert skipped["shown product not among the query's relevance-only candidates"] == 1


def test_serving_refuses_a_personal_model_trained_on_other_relevance():
    from personalization.personalizer import Personalizer
    from rerank.pipeline import SearchPipeline

    ranker = PersonalRanker(PersonalFusion(), {"relevance": {"reranker": "fp-other"}})
    personal = Personalizer(ranker, profiles=None, pseudonymizer=None)
    with pytest.raises(ShopsearchError, match="trained on top of reranker fp-other"):
        SearchPipeline(retriever=None, reranker=None, personal=personal)
    ranker.meta["relevance"] = {"reranker": None, "retrieval_weight": 1.0}
    SearchPipeline(retriever=None, reranker=None, personal=personal)  # matches: no reranker


def test_replayed_features_read_the_catalog_as_serving_does(tmp_path):
    """Training must see brand/category/price affinity as the served profiles do (which
    ``events ingest`` fills from the index), or the model learns those features as 0."""
    from personalization.features import FEATURE_NAMES, compute_features
    from personalization.privacy import Pseudonymizer
    from personalization.profiles import ProfileStore
    from training.from_log import SearchAt, features_at

    catalog = {
        "old": {"brand": "acme", "category": "Tools > Drills", "price": 80.0},  # not a candidate
        "a": {"brand": "acme", "category": "Tools > Drills", "price": 90.0},
        "b": {"brand": "bolt", "category": "Garden", "price": 5.0},
    }
    events = [
        _search("u", T0, "s1", ["old"]),
        _act("u", T0 + 10, "purchase", "old", sid="s1", position=1),
        _search("u", T0 + 7200, "s2", ["a", "b"]),
    ]
    hits = [
        RankedHit(p, 1.0, 1.0, i + 1, relevance=1.0, payload=dict(catalog[p]))
        for i, p in enumerate(["a", "b"])
    ]
    ((profile, replayed),) = features_at(
        events,
        [SearchAt(T0 + 7200, "u", hits)],
        lambda ids: {},
        items=lambda ids: {p: catalog[p] for p in ids if p in catalog},
    )
    store = ProfileStore(tmp_path / "serving.sqlite")  # what ingest + query time compute
    pz = Pseudonymizer(b"k" * 32)
    store.ingest(events[:2], pz)
    store.upsert_items({**v, "product_id": k} for k, v in catalog.items())
    served = compute_features(
        store.profile(pz.pseudonym("u")), hits, store.popularity(["a", "b"]), None
    )
    store.close()
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert replayed[0, col["brand_affinity"]] > 0 and replayed[1, col["brand_affinity"]] == 0
    assert replayed[0, col["category_affinity"]] > 0
    assert replayed[0, col["price_match"]] > replayed[1, col["price_match"]]
    np.testing.assert_allclose(replayed, served, atol=1e-6)

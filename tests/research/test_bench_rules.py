"""bench-rules on the tiny index: the synthetic rule set is valid and fires, and the cost is
measured with and without the rules in one run (the index's own rules untouched)."""

from __future__ import annotations

import pytest

from rerank.pipeline import SearchPipeline
from rerank.rules import RuleBook
from research.bench_rules import catalog_queries, rules_cost, synthetic_rules
from retrieval.retriever import Retriever


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, sample_catalog, tiny_encoder):
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    path = tmp_path_factory.mktemp("bench-rules") / "index"
    index_catalog(sample_catalog, IndexLocation(path=path), encoder=tiny_encoder, progress=False)
    with Retriever.open(path, encoder=tiny_encoder) as retriever:
        yield SearchPipeline(retriever)


def test_the_synthetic_rules_are_valid_and_fire(sample_products):
    payloads = [{"title": p.title} for p in sample_products]
    queries = catalog_queries(payloads, 20, seed=1)
    assert len(queries) == 20 and all(2 <= len(q.split()) <= 3 for q in queries)
    ids = [p.product_id for p in sample_products]
    rules = synthetic_rules(queries, ids, ["Ridgeline", "Voltmax"], n=200, seed=1)
    assert len(rules) == 200 and len({r.id for r in rules}) == 200
    assert {r.action for r in rules} == {"pin", "hide", "boost", "bury"}
    assert {r.match for r in rules} == {"exact", "contains", "any"}
    book = RuleBook(rules)
    from rerank.rules import utcnow

    assert all(len(book.matching([q], utcnow())) > 2 for q in queries)


def test_rules_cost_times_both_sides_and_restores_the_pipeline(pipeline, sample_products):
    before = pipeline.rules
    payloads = [{"title": p.title} for p in sample_products]
    queries = catalog_queries(payloads, 6, seed=2)
    ids = [p.product_id for p in sample_products]
    rules = synthetic_rules(queries, ids, ["Ridgeline"], n=50, seed=2)
    cost = rules_cost(pipeline, queries, rules, rounds=1)
    assert cost.rules == 50 and cost.searches == 6 and cost.fired_share > 0.5
    assert 0 < cost.p50_without <= cost.p99_without and 0 < cost.stage_p50 <= cost.stage_p99
    assert "| search with 50 rules |" in cost.markdown()
    assert pipeline.rules is before
    assert not before.file.path.exists()  # the index's own rules.json was never written

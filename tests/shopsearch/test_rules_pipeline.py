"""Merchandising rules in SearchPipeline.search: each action on a real (tiny) index, paging,
filters, time windows and edits seen without reopening. The rules live in a tmp directory,
never in the shared index's own."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rerank.pipeline import SearchPipeline
from rerank.rules import Rule, RuleStore
from retrieval.retriever import Retriever

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def retriever(index_dir, tiny_encoder):
    with Retriever.open(index_dir, encoder=tiny_encoder) as r:
        yield r


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(tmp_path, clock) -> RuleStore:
    return RuleStore(tmp_path, clock=clock)


@pytest.fixture()
def pipeline(retriever, store) -> SearchPipeline:
    return SearchPipeline(retriever, rules=store)


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def pages(pipeline, query, k=10, n=5, **kw) -> list[list[str]]:
    return [ids(pipeline.search(query, k=k, offset=i * k, **kw)) for i in range(n)]


def test_without_rules_nothing_changes(pipeline, store):
    plain = pipeline.search("cordless drill", k=20)
    assert plain.rules == () and "rules" not in plain.stage_ms
    store.add(Rule("h", "hide", "exact", "paint roller", products=(plain[0].product_id,)))
    again = pipeline.search("cordless drill", k=20)
    assert ids(again) == ids(plain) and again.rules == ()
    assert all(h.rule == () for h in again)


def test_a_pin_lands_at_its_absolute_rank_exactly_once_across_pages(pipeline, store):
    base = ids(pipeline.search("cordless drill", k=50, rules=False))
    target = base[30]
    store.add(Rule("p12", "pin", "exact", "Cordless Drill", products=(target,), position=12))
    got = pages(pipeline, "cordless drill")
    flat = [pid for page in got for pid in page]
    assert flat.count(target) == 1 and flat.index(target) == 11  # rank 12: page 2, third
    assert got[1][1] == target
    page2 = pipeline.search("cordless drill", k=10, offset=10)
    hit = page2[1]
    assert hit.rule == (("p12", "pin"),) and page2.rules == ("p12",)
    assert hit.to_dict()["merchandising"] == [{"rule": "p12", "action": "pin"}]
    others = [pid for pid in base if pid != target]
    assert [p for p in flat if p != target] == others[: len(flat) - 1]  # the rest in order


def test_a_pin_from_outside_the_candidates_is_fetched(pipeline, store, sample_products):
    base = set(ids(pipeline.search("cordless drill", k=50, rules=False)))
    outsider = next(p.product_id for p in sample_products if p.product_id not in base)
    store.add(Rule("out", "pin", "exact", "cordless drill", products=(outsider,), position=2))
    hits = pipeline.search("cordless drill", k=5)
    assert hits[1].product_id == outsider and hits[1].retrieval_rank == 0
    assert hits[1].title and hits[1].score == hits[0].score
    assert not any(k.startswith("_") for k in hits[1].payload)


def test_a_pin_keeps_to_the_querys_filters_unless_told(pipeline, store, sample_products):
    other = next(p for p in sample_products if p.brand != "Ridgeline")
    store.add(Rule("strict", "pin", "any", products=(other.product_id,), position=1))
    filtered = pipeline.search("drill", k=10, filters={"brands": "Ridgeline"})
    assert other.product_id not in ids(filtered)
    assert {h.payload["brand"] for h in filtered} == {"Ridgeline"}
    store.remove("strict")
    store.add(
        Rule("loose", "pin", "any", products=(other.product_id,), position=1, ignore_filters=True)
    )
    filtered = pipeline.search("drill", k=10, filter="brand = Ridgeline")
    assert filtered[0].product_id == other.product_id
    assert filtered[0].rule == (("loose", "pin"),)


def test_a_hidden_product_never_shows_on_any_page(pipeline, store):
    base = ids(pipeline.search("led light bulb", k=40, rules=False))
    hidden = [base[0], base[13], base[27]]
    store.add(Rule("h", "hide", "contains", "bulb", products=tuple(hidden)))
    flat = [pid for page in pages(pipeline, "LED  light bulb", n=4) for pid in page]
    assert not set(hidden) & set(flat)
    assert flat[:10] == [p for p in base if p not in hidden][:10]
    assert len(flat) == len(set(flat)) == 40  # the pages stay full


def test_a_hidden_product_beats_a_pin(pipeline, store):
    target = pipeline.search("drill", k=1, rules=False)[0].product_id
    store.add(Rule("pin", "pin", "exact", "drill", products=(target,), position=3))
    store.add(Rule("hide", "hide", "exact", "drill", products=(target,)))
    assert target not in ids(pipeline.search("drill", k=10))


def test_a_boost_by_filter_lifts_the_matching_products_and_says_so(pipeline, store):
    base = pipeline.search("drill", k=50, rules=False)
    brand = next(h.payload["brand"] for h in base[10:] if h.payload.get("brand"))
    store.add(Rule("b", "boost", "any", filter=f'brand = "{brand}"', percent=100))
    got = pipeline.search("drill", k=50)
    n = sum(h.payload.get("brand") == brand for h in base)
    assert {h.payload.get("brand") for h in got[:n]} == {brand}
    assert all(h.rule == (("b", "boost"),) for h in got[:n])
    assert all(h.rule == () for h in got[n:])


def test_a_bury_sinks_the_matching_products(pipeline, store):
    base = pipeline.search("drill", k=30, rules=False)
    brand = base[0].payload["brand"]
    store.add(Rule("d", "bury", "exact", "drill", filter={"brands": brand}, percent=100))
    got = pipeline.search("drill", k=30)
    assert got[0].payload["brand"] != brand
    sunk = [i for i, h in enumerate(got) if h.payload["brand"] == brand]
    assert sunk == list(range(len(got) - len(sunk), len(got)))


def test_a_redirect_searches_its_text_instead(pipeline, store):
    store.add(Rule("go", "redirect", "exact", "lamp thing", redirect="led light bulb"))
    got = pipeline.search("Lamp  Thing", k=10)
    assert got.redirected == "led light bulb" and got.rules == ("go",)
    assert ids(got) == ids(pipeline.search("led light bulb", k=10))
    assert pipeline.search("lamp thing", k=10, rules=False).redirected is None


def test_rules_for_the_redirected_query_apply_too(pipeline, store):
    base = ids(pipeline.search("led light bulb", k=10, rules=False))
    store.add(Rule("go", "redirect", "exact", "lamp thing", redirect="led light bulb"))
    store.add(Rule("h", "hide", "exact", "led light bulb", products=(base[0],)))
    got = pipeline.search("lamp thing", k=10)
    assert base[0] not in ids(got) and got.rules == ("go", "h")


def test_a_rule_fires_only_in_its_window(pipeline, store, clock):
    target = ids(pipeline.search("drill", k=20, rules=False))[15]
    store.add(
        Rule(
            "sale",
            "pin",
            "exact",
            "drill",
            products=(target,),
            position=1,
            start=T0 + timedelta(hours=1),
            end=T0 + timedelta(hours=2),
        )
    )
    assert pipeline.search("drill", k=3)[0].product_id != target
    clock.now = T0 + timedelta(hours=1)
    assert pipeline.search("drill", k=3)[0].product_id == target
    clock.now = T0 + timedelta(hours=2)
    assert pipeline.search("drill", k=3)[0].product_id != target


def test_an_edit_from_another_process_is_seen_at_the_next_search(pipeline, tmp_path):
    first = pipeline.search("drill", k=5)[0].product_id
    RuleStore(tmp_path).add(Rule("h", "hide", "exact", "drill", products=(first,)))
    assert first not in ids(pipeline.search("drill", k=5))
    RuleStore(tmp_path).remove("h")
    assert pipeline.search("drill", k=5)[0].product_id == first


def test_a_rule_fires_for_the_corrected_query_and_a_redirect_for_the_typed_one(pipeline, store):
    typed = pipeline.search("kitchen faucte", k=5, rules=False)
    assert typed.corrected == "kitchen faucet"
    first = typed[0].product_id
    store.add(Rule("h", "hide", "exact", "kitchen faucet", products=(first,)))
    store.add(Rule("go", "redirect", "exact", "kitchen faucet", redirect="drill"))
    got = pipeline.search("kitchen faucte", k=5)
    assert got.rules == ("h",) and got.redirected is None and first not in ids(got)
    assert pipeline.search("kitchen faucet", k=5).redirected == "drill"

"""Merchandising rules (rerank.rules): the rule, which rules fire, what they do, where they live.

Pure tests on hand-made hits; the pipeline, paging and the real filters are in
tests/shopsearch/test_rules_pipeline.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from core.errors import ShopsearchError
from rerank.rules import (
    MAX_POSITION,
    Plan,
    Rule,
    RuleBook,
    RuleStore,
    index_check,
    normalize_query,
    query_words,
)
from retrieval.hits import RankedHit

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def _hits(*scores: float, brands: dict[int, str] | None = None) -> list[RankedHit]:
    brands = brands or {}
    return [
        RankedHit(f"p{i}", s, s, i, payload={"title": f"t{i}", "brand": brands.get(i, "Acme")})
        for i, s in enumerate(scores, start=1)
    ]


def _brand(rule, payload) -> bool:
    """A stand-in for RuleBook.matcher: the shorthand brands only."""
    return payload.get("brand") in (rule.filters.brands or ())


def _ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def pin(pid: str, at: int, query: str = "drill", **kw) -> Rule:
    return Rule(
        kw.pop("id", f"pin-{pid}-{at}"),
        "pin",
        kw.pop("match", "exact"),
        query,
        products=(pid,),
        position=at,
        **kw,
    )


# ------------------------------------------------------------------------------ the rule


def test_queries_compare_casefolded_with_spaces_collapsed():
    assert normalize_query("  Cordless   DRILL ") == "cordless drill"
    assert query_words("18V cordless-drill") == {"18v", "cordless", "drill"}
    exact = Rule("a", "hide", "exact", " Cordless  Drill", products=("p1",))
    assert exact.query == "cordless drill"
    assert exact.matches("cordless drill") and exact.matches("CORDLESS   drill")
    assert not exact.matches("cordless drill kit")
    contains = Rule("b", "hide", "contains", "drill cordless", products=("p1",))
    assert contains.matches("red Cordless drill kit") and not contains.matches("drill")
    anyq = Rule("c", "hide", "any", products=("p1",))
    assert anyq.matches("whatever")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "pin", "products": ("p1",), "position": MAX_POSITION + 1}, "within 1 to 1000"),
        ({"action": "pin", "products": ("p1",), "position": 0}, "within 1 to 1000"),
        ({"action": "pin", "products": ("p1", "p2"), "position": 1}, "pins one product"),
        ({"action": "hide"}, "at least one product"),
        ({"action": "boost", "filter": {"brands": "Acme"}}, "percent above 0"),
        ({"action": "boost", "filter": {"brands": "Acme"}, "percent": 150}, "at most 100"),
        ({"action": "bury", "percent": 10}, "needs a filter"),
        ({"action": "redirect", "redirect": "  "}, "query to search instead"),
        ({"action": "hide", "products": ("p1",), "position": 3}, "takes no position"),
        ({"action": "zap"}, "action 'zap'"),
        ({"action": "hide", "products": ("p1",), "start": "next tuesday"}, "ISO 8601"),
        (
            {"action": "hide", "products": ("p1",), "start": "2026-12-08", "end": "2026-12-07"},
            "is not after start",
        ),
        ({"action": "boost", "filter": {"colour": "red"}, "percent": 5}, "unknown filter field"),
    ],
)
def test_a_bad_rule_is_a_one_line_error(fields, message):
    with pytest.raises(ShopsearchError, match=message) as err:
        Rule("r1", match="exact", query="drill", **fields)
    assert "\n" not in str(err.value)


def test_match_any_takes_no_query_and_the_others_need_one():
    with pytest.raises(ShopsearchError, match="takes no query"):
        Rule("r", "hide", "any", "drill", products=("p1",))
    with pytest.raises(ShopsearchError, match="needs a query"):
        Rule("r", "hide", "exact", " !! ", products=("p1",))
    with pytest.raises(ShopsearchError, match="rule id"):
        Rule("bad id", "hide", "exact", "drill", products=("p1",))


def test_a_rule_round_trips_through_its_dict():
    rule = Rule(
        "spring",
        "boost",
        "contains",
        "Drill",
        filter={"brands": ["Ridgeline"]},
        percent=20,
        start="2026-12-01T00:00:00Z",
        end="2026-12-24",
        note="supplier deal",
        created=NOW,
    )
    data = rule.to_dict()
    assert data["start"] == "2026-12-01T00:00:00Z" and data["end"] == "2026-12-24T00:00:00Z"
    assert json.loads(json.dumps(data)) == data
    again = Rule.from_dict(data)
    assert again == rule and again.filters == rule.filters
    with pytest.raises(ShopsearchError, match="unknown field"):
        Rule.from_dict({**data, "priority": 3})
    assert "boost [brands=['Ridgeline']] +20%" in rule.describe()


# ------------------------------------------------------------------------------ which fire


def test_the_book_finds_the_rules_of_a_query_most_specific_first():
    old = NOW - timedelta(days=1)
    rules = [
        Rule("any", "hide", "any", products=("p9",), created=old),
        Rule("word", "hide", "contains", "drill", products=("p8",), created=old),
        Rule("two-words", "hide", "contains", "cordless drill", products=("p7",), created=NOW),
        Rule("exact", "hide", "exact", "cordless drill", products=("p6",), created=old),
        Rule("other", "hide", "exact", "paint", products=("p5",), created=old),
    ]
    book = RuleBook(rules)
    got = [r.id for r in book.matching(["Cordless  Drill"], NOW)]
    assert got == ["exact", "two-words", "word", "any"]
    assert [r.id for r in book.matching(["drill bits"], NOW)] == ["word", "any"]
    assert [r.id for r in book.matching(["paint", "drill"], NOW)] == ["other", "word", "any"]


def test_a_rule_fires_only_in_its_window():
    rule = Rule(
        "xmas",
        "hide",
        "exact",
        "drill",
        products=("p1",),
        start="2026-12-24T00:00:00Z",
        end="2026-12-27T00:00:00+01:00",  # 26 Dec 23:00 UTC
    )
    book = RuleBook([rule])
    at = lambda s: datetime.fromisoformat(s).replace(tzinfo=timezone.utc)  # noqa: E731
    assert not book.matching(["drill"], at("2026-12-23T23:59:59"))
    assert book.matching(["drill"], at("2026-12-24T00:00:00"))
    assert book.matching(["drill"], at("2026-12-26T22:59:59"))
    assert not book.matching(["drill"], at("2026-12-26T23:00:00"))


def test_redirects_match_the_typed_query_and_the_most_specific_wins():
    book = RuleBook(
        [
            Rule("broad", "redirect", "contains", "tv", redirect="television", created=NOW),
            Rule("exact", "redirect", "exact", "tv", redirect="flat screen tv"),
        ]
    )
    assert book.redirect("TV", NOW).id == "exact"
    assert book.redirect("tv stand", NOW).id == "broad"
    assert book.redirect("sofa", NOW) is None
    plan = book.plan(["tv"], NOW, book.redirect("tv", NOW))
    assert plan.rules == () and plan.ids == ("exact",)


# ------------------------------------------------------------------------------ what they do


def test_hide_removes_the_products():
    plan = Plan((Rule("h", "hide", "any", products=("p2", "p4")),))
    assert _ids(plan.hide(_hits(5, 4, 3, 2, 1))) == ["p1", "p3", "p5"]


def test_a_boost_adds_a_share_of_the_score_spread_even_for_negative_scores():
    # logits: spread = (-1) - (-6) = 5; +20% adds 1.0 to Ridgeline's products
    hits = _hits(-1.0, -1.5, -2.2, -4.0, -6.0, brands={3: "Ridgeline", 5: "Ridgeline"})
    rule = Rule("b", "boost", "any", filter={"brands": "Ridgeline"}, percent=20)
    out = Plan((rule,)).boost(hits, _brand)
    assert _ids(out) == ["p1", "p3", "p2", "p4", "p5"]  # p5: -5.0, still below p4
    by_id = {h.product_id: h for h in out}
    assert by_id["p3"].score == pytest.approx(-1.2)
    assert by_id["p3"].relevance is None and by_id["p3"].retrieval == -2.2  # parts unchanged
    assert by_id["p3"].rule == (("b", "boost"),) and by_id["p2"].rule == ()
    # +100% lifts even the last product level with the first (ties: relevance order)
    full = Rule("all", "boost", "any", filter={"brands": "Ridgeline"}, percent=100)
    assert _ids(Plan((full,)).boost(hits, _brand))[:3] == ["p3", "p1", "p5"]


def test_a_bury_subtracts_and_boosts_add_up():
    hits = _hits(10, 9, 8, 7, 6, brands={1: "Ridgeline", 2: "Ridgeline"})
    bury = Rule("down", "bury", "any", filter={"brands": "Ridgeline"}, percent=60)  # -2.4
    assert _ids(Plan((bury,)).boost(hits, _brand)) == ["p3", "p1", "p4", "p2", "p5"]
    up = Rule("up", "boost", "any", filter={"brands": "Ridgeline"}, percent=60)
    out = Plan((bury, up)).boost(hits, _brand)  # they cancel: the relevance order
    assert _ids(out) == ["p1", "p2", "p3", "p4", "p5"]
    assert out[0].rule == (("down", "bury"), ("up", "boost"))


def test_equal_scores_still_let_a_boost_move():
    hits = _hits(1, 1, 1, brands={3: "Ridgeline"})
    rule = Rule("b", "boost", "any", filter={"brands": "Ridgeline"}, percent=1)
    assert _ids(Plan((rule,)).boost(hits, _brand)) == ["p3", "p1", "p2"]


def _no_fetch(ids):
    raise AssertionError(f"fetched {ids}")


def test_a_pin_moves_a_candidate_to_its_absolute_position():
    hits = _hits(9, 8, 7, 6, 5, 4)
    out = Plan((pin("p6", 2),)).pin(hits, _no_fetch, lambda p: True)
    assert _ids(out) == ["p1", "p6", "p2", "p3", "p4", "p5"]
    assert out[1].rule == (("pin-p6-2", "pin"),) and out[1].score == 4  # its own score


def test_a_pin_outside_the_candidates_is_fetched_and_must_pass_the_filters():
    hits = _hits(9, 8, 7)
    payloads = {"x1": {"title": "X", "brand": "Acme", "_brand_key": "acme"}}
    fetch = lambda ids: {i: payloads[i] for i in ids if i in payloads}  # noqa: E731
    out = Plan((pin("x1", 2),)).pin(hits, fetch, lambda p: True)
    assert _ids(out) == ["p1", "x1", "p2", "p3"]
    assert out[1].payload == {"title": "X", "brand": "Acme"}  # the store's own keys dropped
    assert out[1].score == 9 and out[1].retrieval_rank == 0  # its upper neighbour's score
    assert _ids(Plan((pin("x1", 2),)).pin(hits, fetch, lambda p: False)) == ["p1", "p2", "p3"]
    loose = pin("x1", 2, ignore_filters=True)
    assert _ids(Plan((loose,)).pin(hits, fetch, lambda p: False)) == ["p1", "x1", "p2", "p3"]
    gone = Plan((pin("deleted", 1),)).pin(hits, fetch, lambda p: True)
    assert _ids(gone) == ["p1", "p2", "p3"]


def test_pins_at_one_position_go_in_precedence_order_and_the_next_one_below():
    hits = _hits(9, 8, 7, 6, 5)
    plan = Plan((pin("p5", 1, id="first"), pin("p4", 1, id="second"), pin("p5", 3, id="dup")))
    assert _ids(plan.pin(hits, _no_fetch, lambda p: True)) == ["p5", "p4", "p1", "p2", "p3"]


def test_a_pin_beyond_the_end_goes_last_and_hide_beats_pin():
    hits = _hits(9, 8, 7)
    assert _ids(Plan((pin("p1", 50),)).pin(hits, _no_fetch, lambda p: True)) == [
        "p2",
        "p3",
        "p1",
    ]
    plan = Plan((pin("p3", 1), Rule("h", "hide", "any", products=("p3",))))
    assert _ids(plan.pin(plan.hide(hits), _no_fetch, lambda p: True)) == ["p1", "p2"]


# ------------------------------------------------------------------------------ the store


def test_the_store_keeps_rules_in_a_file_beside_the_index(tmp_path):
    store = RuleStore(tmp_path)
    assert store.list() == [] and len(store.book()) == 0
    store.add(pin("p1", 1, id="a"))
    store.add(Rule("b", "hide", "exact", "drill", products=("p2",)))
    doc = json.loads((tmp_path / "rules.json").read_text())
    assert doc["kind"] == "shopsearch-rules/v1" and [e["id"] for e in doc["entries"]] == ["a", "b"]
    assert [r.id for r in RuleStore(tmp_path).list()] == ["a", "b"]  # another process
    assert store.remove("a").id == "a"
    assert [r.id for r in store.list()] == ["b"]
    with pytest.raises(ShopsearchError, match="no rule 'a'"):
        store.remove("a")
    with pytest.raises(ShopsearchError, match="rule id 'b' is taken"):
        store.add(Rule("b", "hide", "exact", "paint", products=("p2",)))


def test_two_pins_of_one_query_at_one_position_are_refused_unless_their_windows_part(tmp_path):
    store = RuleStore(tmp_path)
    store.add(pin("p1", 3, id="a", end="2026-12-10"))
    with pytest.raises(ShopsearchError, match="rule a already pins position 3") as err:
        store.add(pin("p2", 3, id="b", query="DRILL"))
    assert "\n" not in str(err.value)
    store.add(pin("p2", 3, id="c", start="2026-12-10"))  # after a's window
    store.add(pin("p2", 3, id="d", match="contains"))  # another condition: precedence decides
    store.add(pin("p2", 4, id="e"))
    assert [r.id for r in store.list()] == ["a", "c", "d", "e"]


def test_the_check_names_an_unknown_product_and_leaves_the_file_alone(tmp_path):
    store = RuleStore(tmp_path)
    check = index_check(lambda ids: {i: {} for i in ids if i.startswith("p")})
    store.add(pin("p1", 1, id="a"), check=check)
    with pytest.raises(ShopsearchError, match="rule b: product 'nope' is not in the index"):
        store.add(Rule("b", "hide", "exact", "drill", products=("p2", "nope")), check=check)
    assert [r.id for r in store.list()] == ["a"]


def test_a_running_reader_sees_an_edit_without_a_restart(tmp_path):
    reader, writer = RuleStore(tmp_path), RuleStore(tmp_path)
    assert len(reader.book()) == 0
    writer.add(pin("p1", 1, id="a"))
    assert [r.id for r in reader.book().rules] == ["a"]
    book = reader.book()
    assert reader.book() is book  # unchanged file: not read again
    writer.remove("a")
    assert len(reader.book()) == 0


def test_a_damaged_file_keeps_the_last_good_rules_in_a_running_reader(tmp_path):
    store = RuleStore(tmp_path)
    store.add(pin("p1", 1, id="a"))
    assert len(store.book()) == 1
    time.sleep(0.01)
    (tmp_path / "rules.json").write_text("{not json")
    assert [r.id for r in store.book().rules] == ["a"]
    with pytest.raises(ShopsearchError, match="not JSON"):
        store.list()


def test_matching_a_thousand_rules_is_indexed_not_scanned():
    rules = [Rule(f"e{i}", "hide", "exact", f"query {i}", products=("p1",)) for i in range(500)]
    rules += [
        Rule(f"c{i}", "hide", "contains", f"word{i} drill", products=("p1",)) for i in range(500)
    ]
    book = RuleBook(rules)
    start = time.perf_counter()
    for _ in range(1000):
        fired = book.matching(["query 7", "cordless word7 drill"], NOW)
    per_call_ms = time.perf_counter() - start
    assert [r.id for r in fired] == ["e7", "c7"]
    assert per_call_ms < 0.2  # ms per call (1000 calls took < 0.2 s)


def test_a_boost_filter_is_an_expression_read_on_the_hits_fields():
    from catalog.fields import FieldSchema

    hits = [
        RankedHit("a", 3, 3, 1, payload={"brand": "Makita", "price": 50.0, "category": "Tools"}),
        RankedHit("b", 2, 2, 2, payload={"brand": "Ridgeline", "price": 80.0, "category": "Tools"}),
        RankedHit("c", 1, 1, 3, payload={"brand": "Ridgeline", "price": 20.0, "category": "Bath"}),
    ]
    rule = Rule("r", "boost", "any", filter='brand = ridgeline AND category = "Tools"', percent=100)
    book = RuleBook([rule])
    out = Plan((rule,)).boost(hits, book.matcher(FieldSchema.default()))
    assert _ids(out) == ["b", "a", "c"] and out[0].rule == (("r", "boost"),)
    cheap = Rule("cheap", "bury", "any", filter="price < 60", percent=100)
    out = Plan((cheap,)).boost(hits, RuleBook([cheap]).matcher(FieldSchema.default()))
    assert _ids(out) == ["b", "a", "c"]


def test_a_bad_filter_expression_is_the_filters_one_line_error():
    with pytest.raises(ShopsearchError) as err:
        Rule("r", "boost", "any", filter="brand = = x", percent=10)
    assert "\n" not in str(err.value)
    with pytest.raises(ShopsearchError, match="rule r: .*voltage"):
        from catalog.fields import FieldSchema

        rule = Rule("r", "boost", "any", filter="voltage >= 18", percent=10)
        index_check(lambda ids: {}, lambda f: f.check(FieldSchema.default()))(rule)

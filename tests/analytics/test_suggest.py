"""Suggestions from hand-built search logs and a seven-product catalog."""

from __future__ import annotations

import dataclasses

import pytest

from analytics.suggest import (
    CONTEXT_BOOST,
    TYPO_FACTOR,
    SuggestContext,
    Suggester,
    Suggestion,
    normalize,
)
from core.errors import ShopsearchError
from personalization import searchlog
from personalization.profiles import UserProfile

PRODUCTS = [
    ("p1", "DeWalt 20V Cordless Drill Driver Kit", "DeWalt", "Tools > Power Tools > Drills"),
    ("p2", "Makita 18V Cordless Drill Driver", "Makita", "Tools > Power Tools > Drills"),
    ("p3", "Bosch Cordless Drill Kit", "Bosch", "Tools > Power Tools > Drills"),
    ("p4", "Behr Premium Interior Paint, Eggshell", "Behr", "Paint > Interior Paint"),
    ("p5", "Glidden Interior Paint Semi-Gloss", "Glidden", "Paint > Interior Paint"),
    ("p6", "Delta Kitchen Faucet", "Delta", "Plumbing > Faucets"),
    ("p7", "Moen Kitchen Faucet with Sprayer", "Moen", "Plumbing > Faucets"),
]
PAYLOADS = [{"product_id": pid, "title": t, "brand": b, "category": c} for pid, t, b, c in PRODUCTS]


class Log:
    """Rows of a search log, written as one Parquet segment."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.n = 0

    def search(self, query, pseudonym=None, session="", then="click", corrected=None, product="p1"):
        self.n += 1
        sid = f"s{self.n}"
        self.rows.append(
            {
                "event": "search",
                "timestamp": 1_800_000_000.0 + self.n,
                "search_id": sid,
                "pseudonym": pseudonym,
                "session": session,
                "query": query,
                "corrected": corrected,
                "offset": 0,
                "k": 10,
                "results": [product],
            }
        )
        if then is not None:
            # the page posts only the search id and the product (no shopper on the row)
            self.rows.append(
                {
                    "event": then,
                    "timestamp": 1_800_000_000.5 + self.n,
                    "search_id": sid,
                    "session": "",
                    "product_id": product,
                }
            )
        return sid

    def write(self, folder, without: str | None = None):
        folder.mkdir(exist_ok=True)
        gone = {r["search_id"] for r in self.rows if without and r.get("pseudonym") == without}
        rows = [r for r in self.rows if r["search_id"] not in gone]
        searchlog.write_segment(folder / "20261201T000000Z-test.parquet", rows)
        return folder


def texts(suggestions):
    return [s.text for s in suggestions]


def test_a_logged_query_needs_min_shoppers_distinct_shoppers(tmp_path):
    log = Log()
    for i in range(5):
        log.search("Cordless Drill Combo", pseudonym=f"u{i}")
    for i in range(4):  # four shoppers, many searches: still fewer than five shoppers
        for _ in range(5):
            log.search("drill bit set", pseudonym=f"v{i}")
    for i in range(3):  # anonymous shoppers count by session
        log.search("drill press", session=f"sess{i}")
    log.search("drill press", pseudonym="w1")
    log.search("drill press", pseudonym="w2")
    for _ in range(10):  # anonymous without a session: popularity, but no shopper
        log.search("drill saw", session="")
    for i in range(4):
        log.search("drill saw", pseudonym=f"x{i}")
    s = Suggester.build(log.write(tmp_path / "log"), None, min_shoppers=5)
    got = {x.text: x for x in s.suggest("dril", k=10)}
    assert set(got) == {"cordless drill combo", "drill press"} - {"cordless drill combo"}
    assert texts(s.suggest("cordless", k=10)) == ["cordless drill combo"]
    assert got["drill press"].source == "log"
    assert s.stats.kept_out == 2  # drill bit set, drill saw
    # the guard is configurable
    loose = Suggester.build(tmp_path / "log", None, min_shoppers=4)
    assert {"drill bit set", "drill saw", "drill press"} <= set(texts(loose.suggest("drill", k=10)))


def test_only_queries_that_led_to_a_click_cart_or_purchase(tmp_path):
    log = Log()
    for i in range(6):
        log.search("paint roller", pseudonym=f"u{i}", then=None)  # no interaction
        log.search("paint tray", pseudonym=f"u{i}", then="view")  # a view is no answer
        log.search("paint brush", pseudonym=f"u{i}", then="add_to_cart" if i % 2 else "purchase")
    s = Suggester.build(log.write(tmp_path / "log"), None)
    assert texts(s.suggest("paint", k=10)) == ["paint brush"]
    assert s.stats.searches == 18 and s.stats.answered == 6


def test_the_corrected_query_is_suggested_not_the_typo(tmp_path):
    log = Log()
    for i in range(5):
        log.search("hamer", pseudonym=f"u{i}", corrected="hammer")
    s = Suggester.build(log.write(tmp_path / "log"), None)
    assert texts(s.suggest("ham")) == ["hammer"]
    assert [x.text for x in s.entries()] == ["hammer"]


def test_suggestions_carry_no_shopper():
    assert [f.name for f in dataclasses.fields(Suggestion)] == ["text", "source", "score"]


def test_catalog_completions_from_titles_brands_and_categories():
    s = Suggester.build(None, PAYLOADS)
    dri = [t.lower() for t in texts(s.suggest("dri", k=10))]
    # a phrase of two products or more, from any word of the title, not only the first
    assert {"drill", "drill driver", "drills"} <= set(dri)
    assert "cordless drill driver" in texts(s.suggest("cordless drill d"))
    # brands and every level of the category path (shown as typed in the catalog)
    assert "DeWalt" in texts(s.suggest("dew"))
    assert {"Power Tools", "Plumbing", "Tools"} <= set(texts(s.suggest("p", k=20) + s.suggest("t")))
    # a phrase of one title only (a model's words) is not a completion
    assert s.suggest("premium") == []
    # more products: ranked higher ("drill" is in three titles, "drill driver" in two)
    assert dri.index("drill") < dri.index("drill driver")
    assert all(x.source == "catalog" for x in s.suggest("dri", k=10))


def test_a_logged_query_and_the_catalog_merge(tmp_path):
    log = Log()
    for i in range(5):
        log.search("drill kit", pseudonym=f"u{i}")
    s = Suggester.build(log.write(tmp_path / "log"), PAYLOADS)
    got = s.suggest("drill", k=10)
    assert [x.text for x in got].count("drill kit") == 1
    assert got[0] == Suggestion("drill kit", "log", pytest.approx(got[0].score))
    assert s.stats.log_entries == 1


def test_typo_on_the_last_word_only():
    s = Suggester.build(None, PAYLOADS)
    assert s.suggest("drli")[0].text == "drill"  # a swap
    assert "cordless drill driver" in texts(s.suggest("cordless drlil"))
    fixed = s.suggest("cordless drli", k=10)
    assert fixed and all(t.startswith("cordless dri") for t in texts(fixed))
    exact = {x.text: x.score for x in s.suggest("cordless dri", k=10)}
    assert fixed[0].score == pytest.approx(TYPO_FACTOR * exact[fixed[0].text])
    # a long word two edits away (SymSpell)
    assert texts(s.suggest("crodlses"))[:1] == ["cordless"]
    # an earlier word must match as typed
    assert s.suggest("cordlexx dri") == []
    # a short last word is not corrected (one edit from too many words)
    assert s.suggest("drx") == []


def test_context_boosts_the_shoppers_brands_and_categories():
    s = Suggester.build(None, PAYLOADS)
    # equal counts: key order without context
    assert texts(s.suggest("de"))[:2] == ["Delta", "DeWalt"]
    taste = UserProfile(pseudonym="p", n_events=3, brand_affinity={"DeWalt": 1.0})
    boosted = s.suggest("de", context=taste)
    assert texts(boosted)[:2] == ["DeWalt", "Delta"]
    assert boosted[0].score == pytest.approx((1 + CONTEXT_BOOST) * boosted[1].score)
    assert texts(s.suggest("ki"))[:3] == ["kit", "kitchen", "kitchen faucet"]
    plumbing = SuggestContext(categories={"Plumbing": 0.9, "Plumbing > Faucets": 0.9})
    assert texts(s.suggest("ki", context=plumbing))[:3] == ["kitchen", "kitchen faucet", "kit"]
    # a cold profile is no context
    cold = UserProfile(pseudonym="p", n_events=0, brand_affinity={"DeWalt": 1.0})
    assert texts(s.suggest("de", context=cold)) == texts(s.suggest("de"))


def test_a_logged_query_takes_the_category_of_what_was_chosen(tmp_path):
    log = Log()
    for i in range(5):
        log.search("kitchen tap", pseudonym=f"u{i}", product="p6")
        log.search("kit bag", pseudonym=f"u{i}", product="p1")
    s = Suggester.build(log.write(tmp_path / "log"), PAYLOADS)
    top = texts(s.suggest("ki", k=2))
    assert top == ["kit bag", "kitchen tap"]
    plumbing = SuggestContext(categories={"Plumbing > Faucets": 1.0})
    assert texts(s.suggest("ki", k=2, context=plumbing)) == ["kitchen tap", "kit bag"]


def test_a_forgotten_shopper_drops_a_query_below_the_threshold(tmp_path):
    log = Log()
    for i in range(5):
        log.search("stud finder", pseudonym=f"u{i}")
    folder = log.write(tmp_path / "log")
    assert texts(Suggester.build(folder, None).suggest("stud")) == ["stud finder"]
    # forget-user removes the shopper's rows from the log; a rebuild no longer counts them
    log.write(folder, without="u3")
    assert Suggester.build(folder, None).suggest("stud") == []


def test_a_tombstoned_shopper_is_left_out_before_the_rows_are_rewritten(tmp_path):
    if not hasattr(searchlog, "read_tombstones"):
        pytest.skip("this searchlog keeps no tombstones")
    from personalization.privacy import Pseudonymizer

    pz = Pseudonymizer(b"k" * 32)
    log = Log()
    for i in range(5):
        log.search("stud finder", pseudonym=pz.pseudonym(f"user{i}"))
    folder = log.write(tmp_path / "log")
    assert texts(Suggester.build(folder, None, pseudonymizer=pz).suggest("stud"))
    (folder / searchlog.FORGOTTEN_FILE).write_text(pz.tombstone(pz.pseudonym("user2")) + "\n")
    assert Suggester.build(folder, None, pseudonymizer=pz).suggest("stud") == []
    assert texts(Suggester.build(folder, None).suggest("stud"))  # without the key: as stored


def test_prefix_edges():
    s = Suggester.build(None, PAYLOADS)
    assert s.suggest("") == [] and s.suggest("   ") == []
    assert texts(s.suggest("DRILL D")) == texts(s.suggest("drill d"))
    # a trailing space: the word is complete
    assert "Drills" not in texts(s.suggest("drill ", k=20))
    assert "Drills" in texts(s.suggest("drill", k=20))
    assert normalize("  Café   Table ") == "cafe table"
    with pytest.raises(ShopsearchError, match="k must be"):
        s.suggest("dri", k=0)
    with pytest.raises(ShopsearchError, match="min_shoppers"):
        Suggester.build(None, PAYLOADS, min_shoppers=0)


def test_many_entries_use_the_precomputed_tops():
    payloads = [
        {"product_id": f"x{i}", "title": f"widget w{i % 400:03d}a extra", "category": "A"}
        for i in range(2000)
    ]
    s = Suggester.build(None, payloads)
    assert len(s) > 800
    got = s.suggest("w", k=5)
    assert got[0].text == "widget" and len(got) == 5
    # the precomputed top and a direct pass agree
    every = sorted(
        (x for x in s.entries() if x.text.startswith("w")), key=lambda x: (-x.score, x.text)
    )
    assert [x.text for x in got] == [x.text for x in every[:5]]


def test_from_index(tmp_path, sample_catalog, tiny_encoder):
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    index = tmp_path / "index"
    index_catalog(sample_catalog, IndexLocation(path=index), encoder=tiny_encoder, progress=False)
    s = Suggester.from_index(index)
    assert s.stats.products == 300 and "drill" in texts(s.suggest("dri", k=20))
    with pytest.raises(ShopsearchError):
        Suggester.from_index(tmp_path / "nothing")

"""Synonyms: one-way and multi-way expansion of BM25's query, their weights, the corrector leaving
synonym words alone, the stored list (validation, edits, a damaged file), pickup without a
restart, and the CLI and HTTP admin surfaces."""

from __future__ import annotations

import json

import pytest

from core.errors import ShopsearchError
from core.managed import ManagedFile, Watched
from indexer.build import index_catalog
from retrieval.lexical import LexicalEncoder
from retrieval.retriever import Retriever
from retrieval.spelling import QueryCorrector, build_vocabulary
from retrieval.store import IndexLocation
from retrieval.synonyms import (
    SYNONYM_WEIGHT,
    SynonymMatcher,
    Synonyms,
    add_synonym,
    list_synonyms,
    parse_synonym,
    remove_synonym,
    synonyms_file,
)

CATALOG = [
    ("c1", "Harlow Three Seat Couch in Grey", "Harlow", "Furniture > Seating"),
    ("c2", "Oakmont Leather Loveseat", "Oakmont", "Furniture > Seating"),
    ("c3", "Sofa Table in Oak", "Oakmont", "Furniture > Tables"),
    ("t1", "Brightwell 55 in. Television with Remote", "Brightwell", "Electronics > TVs"),
    ("t2", "Wireworks Flat Screen Wall Mount", "Wireworks", "Electronics > Mounts"),
    ("d1", "Irish Setter Dog Bed", "Pawsome", "Pets > Beds"),
    ("d2", "Ridgeline Cordless Drill", "Ridgeline", "Tools > Drills"),
    ("b1", "Soft Throw Blanket", "Cozy", "Home > Blankets"),
]

tokenize = LexicalEncoder().tokenize


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


@pytest.fixture()
def index(tmp_path, tiny_encoder):
    """A tiny embedded index of its own per test (each test edits its synonyms.json)."""
    rows = [
        {"product_id": i, "title": t, "brand": b, "category": c, "price": 10.0}
        for i, t, b, c in CATALOG
    ]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "idx"
    index_catalog(catalog, IndexLocation(path=path), encoder=tiny_encoder, progress=False)
    return path


# -- parsing and validation -----------------------------------------------------------------


def test_one_way_and_multi_way_lines():
    one = parse_synonym("tv, telly -> television")
    assert one.one_way and one.inputs == ("tv", "telly") and one.terms == ("television",)
    assert one.text == "tv, telly -> television"
    assert set(one.pairs()) == {("tv", "television"), ("telly", "television")}
    many = parse_synonym(" sofa ,couch,  settee ")
    assert not many.one_way and many.terms == ("sofa", "couch", "settee")
    assert ("settee", "sofa") in many.pairs() and len(many.pairs()) == 6
    assert parse_synonym("tv => television").text == "tv -> television"
    # the id is stable: the same line, the same id
    assert parse_synonym("Sofa, couch, settee").id == parse_synonym("sofa, couch, settee").id


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("sofa, , couch", "is empty"),
        ("-> television", "is empty"),
        ("tv ->", "is empty"),
        ("the, couch", "has no word"),
        ("!!!, couch", "has no word"),
        ("tv -> tv", "on both sides"),
        ("Sofas -> sofa", "on both sides"),  # the same words as search reads them
        ("sofa", "two different terms"),
        ("sofa, sofas", "two different terms"),
        ("a -> b -> c", "more than one"),
    ],
)
def test_bad_lines_are_one_line_errors(line, says):
    with pytest.raises(ShopsearchError, match=says) as err:
        parse_synonym(line)
    assert "\n" not in str(err.value)


# -- expansion and weights ------------------------------------------------------------------


def test_one_way_expands_one_direction_only():
    m = SynonymMatcher(Synonyms.parse(["tv -> television"]), tokenize)
    assert m.expand(tokenize("tv stand")).weights == {"televis": SYNONYM_WEIGHT}
    assert m.expand(tokenize("television stand")).weights == {}


def test_multi_way_expands_every_term_to_the_others():
    m = SynonymMatcher(Synonyms.parse(["sofa, couch, settee"]), tokenize)
    assert set(m.expand(tokenize("grey couches")).weights) == {"sofa", "sette"}
    assert set(m.expand(tokenize("settee")).weights) == {"sofa", "couch"}
    # a token the shopper typed keeps its own weight
    assert set(m.expand(tokenize("sofa couch")).weights) == {"sette"}


def test_multi_word_terms_match_as_phrases_and_share_one_terms_weight():
    m = SynonymMatcher(Synonyms.parse(["flat screen -> television", "tv -> flat screen"]), tokenize)
    assert m.expand(tokenize("flat screen mount")).weights == {"televis": SYNONYM_WEIGHT}
    assert m.expand(tokenize("flat black screen")).weights == {}  # not where they follow
    idf = {"tv": 4.0, "flat": 3.0, "screen": 5.0}.get
    got = m.expand(tokenize("tv"), idf).weights
    # the two words share the typed word's IDF mass: 0.5 * 4 / (3 + 5)
    assert got == pytest.approx({"flat": 0.25, "screen": 0.25})


def test_a_rare_synonym_does_not_outweigh_a_common_typed_word():
    m = SynonymMatcher(Synonyms.parse(["sofa, settee"]), tokenize)
    idf = {"sofa": 2.0, "sette": 8.0}.get
    q = m.expand(tokenize("sofa"), idf).weights["sette"]
    assert q * 8.0 == pytest.approx(SYNONYM_WEIGHT * 2.0)  # w times the typed word's share
    # a common synonym of a rare typed word is not raised above w
    assert m.expand(tokenize("settee"), idf).weights["sofa"] == SYNONYM_WEIGHT
    # a typed word no product holds: its IDF says nothing, the synonym stands in at w
    assert m.expand(tokenize("settee"), {"sofa": 2.0}.get).weights["sofa"] == SYNONYM_WEIGHT


def test_encode_query_adds_the_synonym_tokens_beside_the_typed_ones():
    lex = LexicalEncoder()
    plain = lex.encode_query("tv stand")
    indices, values = lex.encode_query("tv stand", {"televis": 0.5, "tv": 0.3})
    assert len(indices) == len(plain[0]) + 1
    assert sorted(values) == [0.5, 1.0, 1.0]  # "tv" typed keeps 1.0


# -- in the retriever -----------------------------------------------------------------------


def test_a_product_only_a_synonym_reaches_is_found(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        assert "t1" not in ids(r.search("tv", k=5, mode="bm25"))
        assert "c2" not in ids(r.search("settee", k=5, mode="bm25"))
        add_synonym(index, "tv -> television")
        add_synonym(index, "settee -> loveseat")
        assert ids(r.search("tv", k=5, mode="bm25"))[0] == "t1"
        assert ids(r.search("settee", k=5, mode="bm25"))[0] == "c2"
        # one way: "television" does not bring in products that say "tv" only
        assert r.specs(["television"], 5, None, "bm25")[0].sparse == r.lexical.encode_query(
            "television"
        )


def test_multi_way_ranks_the_typed_word_first(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        add_synonym(index, "sofa, couch, loveseat")
        found = ids(r.search("sofa", k=5, mode="bm25"))
        assert found[0] == "c3"  # the product that says "sofa"
        assert {"c1", "c2"} <= set(found)  # the couch and the settee too
        assert ids(r.search("couch", k=5, mode="bm25"))[0] == "c1"


def test_the_corrector_leaves_a_synonym_word_alone(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        r.require_evidence = False  # every proposal applied: the guard is the synonym's
        (setter,) = r.corrections(["settee"])  # unknown to the catalog: taken for a typo
        assert setter is not None and setter.corrected == "setter"
        add_synonym(index, "settee -> loveseat")
        assert r.corrections(["settee"]) == [None]
        assert r.corrections(["settees"]) == [None]  # known by its stem
        hits = r.search("settees", k=3, mode="bm25")
        assert hits.corrected is None and ids(hits)[0] == "c2"


def test_corrector_also_known_words_are_compared_by_stem():
    corrector = QueryCorrector(build_vocabulary([t for _, t, _, _ in CATALOG]))
    assert corrector.correct("settees").corrected == "setter"
    assert corrector.correct("settees", also_known=frozenset({"sette"})) is None


def test_a_running_retriever_picks_changes_up_without_reopening(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        add_synonym(index, "tv -> television")
        assert ids(r.search("tv", k=5, mode="bm25"))[:1] == ["t1"]
        (s,) = list_synonyms(index)
        remove_synonym(index, s.id)
        assert "t1" not in ids(r.search("tv", k=5, mode="bm25"))


def test_dense_reads_the_query_as_typed(index, tiny_encoder):
    with Retriever.open(index, encoder=tiny_encoder) as r:
        before = r.specs(["tv"], 5, None, "hybrid")[0]
        add_synonym(index, "tv -> television")
        after = r.specs(["tv"], 5, None, "hybrid")[0]
        assert (before.dense == after.dense).all() and before.sparse != after.sparse


def test_a_server_index_without_rules_dir_has_no_synonyms(tmp_path, index, tiny_encoder):
    with pytest.raises(ShopsearchError, match="no such directory"):
        Retriever.open(index, encoder=tiny_encoder, rules_dir=tmp_path / "missing")
    side = tmp_path / "rules"
    side.mkdir()
    add_synonym(side, "tv -> television")
    with Retriever.open(index, encoder=tiny_encoder, rules_dir=side) as r:
        assert ids(r.search("tv", k=5, mode="bm25"))[0] == "t1"


# -- the stored list ------------------------------------------------------------------------


def test_add_list_remove_and_their_errors(tmp_path):
    assert len(list_synonyms(tmp_path)) == 0
    s, added = add_synonym(tmp_path, "sofa, couch")
    t, _ = add_synonym(tmp_path, "tv -> television")
    assert added and [x.text for x in list_synonyms(tmp_path)] == [
        "sofa, couch",
        "tv -> television",
    ]
    assert add_synonym(tmp_path, "Sofa, Couch") == (s, False)  # there already: nothing changes
    assert len(list_synonyms(tmp_path)) == 2
    with pytest.raises(ShopsearchError, match="has no word"):
        add_synonym(tmp_path, "of, couch")
    assert remove_synonym(tmp_path, s.id) == s
    with pytest.raises(ShopsearchError, match="no synonym has id 'nope'"):
        remove_synonym(tmp_path, "nope")
    assert [x.id for x in list_synonyms(tmp_path)] == [t.id]
    stored = json.loads((tmp_path / "synonyms.json").read_text())
    assert stored["kind"] == "shopsearch-synonyms/v1"
    assert stored["entries"] == [{"id": t.id, "terms": ["television"], "inputs": ["tv"]}]


def test_a_damaged_file_is_a_one_line_error_and_a_service_keeps_the_last_good_list(tmp_path):
    add_synonym(tmp_path, "sofa, couch")
    watched = Watched(synonyms_file(tmp_path), Synonyms.from_entries)
    assert len(watched.get()) == 1
    path = tmp_path / "synonyms.json"
    path.write_text("{not json")
    with pytest.raises(ShopsearchError, match="not JSON") as err:
        list_synonyms(tmp_path)
    assert "\n" not in str(err.value)
    assert len(watched.get()) == 1  # the last good list
    path.write_text(
        json.dumps({"kind": "shopsearch-synonyms/v1", "entries": [{"terms": ["sofa"]}]})
    )
    with pytest.raises(ShopsearchError, match="synonym #1: .*two different terms"):
        list_synonyms(tmp_path)
    path.write_text(json.dumps({"kind": "shopsearch-rules/v1", "entries": []}))
    with pytest.raises(ShopsearchError, match="not 'shopsearch-synonyms/v1'"):
        list_synonyms(tmp_path)


def test_an_edit_that_fails_validation_leaves_the_file_as_it_was(tmp_path):
    file = ManagedFile(tmp_path / "x.json", "k/v1")
    file.update(lambda e: [*e, {"a": 1}])
    before = file.path.read_bytes()

    def bad(entries):
        raise ShopsearchError("no")

    with pytest.raises(ShopsearchError):
        file.update(bad)
    assert file.path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- CLI ------------------------------------------------------------------------------------


def test_cli_add_list_test_remove(index):
    from click.testing import CliRunner

    from shopsearch.cli import main

    run = CliRunner().invoke
    where = ["--index", str(index)]
    out = run(main, ["synonyms", "add", "sofa, couch, loveseat", *where])
    assert out.exit_code == 0, out.output
    sid = out.output.split()[1].rstrip(":")
    assert out.output == f"added {sid}: sofa, couch, loveseat\n"
    again = run(main, ["synonyms", "add", "Sofa, couch, loveseat", *where])
    assert again.output.startswith(f"there already: {sid}")
    assert run(main, ["synonyms", "list", *where]).output == f"{sid}  sofa, couch, loveseat\n"
    shown = run(main, ["synonyms", "test", "grey couches", *where]).output
    assert "BM25 reads: grey couch" in shown and "couch -> sofa" in shown
    assert "sofa 0.50" in shown and "loveseat " in shown
    bad = run(main, ["synonyms", "add", "tv -> TV", *where])
    assert bad.exit_code == 2 and "on both sides" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    gone = run(main, ["synonyms", "remove", sid, *where])
    assert gone.exit_code == 0 and gone.output.startswith(f"removed {sid}")
    missing = run(main, ["synonyms", "remove", sid, *where])
    assert missing.exit_code == 2 and "no synonym has id" in missing.output
    nowhere = run(main, ["synonyms", "list"])
    assert nowhere.exit_code == 2 and "--rules-dir" in nowhere.output


# -- HTTP -----------------------------------------------------------------------------------

ADMIN = {"X-API-Key": "k", "X-Admin-Key": "a"}


@pytest.fixture()
def client(index, tiny_encoder):
    from fastapi.testclient import TestClient

    from rerank.pipeline import SearchPipeline
    from shopsearch.service import ServiceSettings, create_app

    def factory(settings):
        return SearchPipeline(Retriever.open(settings.index, encoder=tiny_encoder), None, None)

    settings = ServiceSettings(index=str(index), api_key="k", admin_key="a", background_load=False)
    with TestClient(create_app(settings, pipeline_factory=factory)) as c:
        yield c


def _bm25(client, q: str) -> list[str]:
    got = client.get("/search", params={"q": q, "mode": "bm25"}, headers={"X-API-Key": "k"})
    assert got.status_code == 200, got.text
    return [h["product_id"] for h in got.json()["results"]]


def test_http_admin_edits_apply_to_the_next_search(client):
    assert "t1" not in _bm25(client, "tv")
    added = client.post("/admin/synonyms", json={"line": "tv -> television"}, headers=ADMIN)
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["added"] and body["one_way"] and body["inputs"] == ["tv"]
    assert _bm25(client, "tv")[0] == "t1"  # no restart, no reload
    listed = client.get("/admin/synonyms", headers=ADMIN).json()["synonyms"]
    assert [s["line"] for s in listed] == ["tv -> television"]
    gone = client.delete(f"/admin/synonyms/{body['id']}", headers=ADMIN)
    assert gone.status_code == 200 and gone.json()["id"] == body["id"]
    assert "t1" not in _bm25(client, "tv")
    assert client.delete(f"/admin/synonyms/{body['id']}", headers=ADMIN).status_code == 404


def test_http_bad_synonym_is_a_one_line_400(client):
    got = client.post("/admin/synonyms", json={"line": "the, of"}, headers=ADMIN)
    assert got.status_code == 400 and "has no word" in got.json()["detail"]
    assert "\n" not in got.json()["detail"]
    assert client.post("/admin/synonyms", json={}, headers=ADMIN).status_code == 422


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-API-Key": "k"}, 403), ({"X-API-Key": "k", "X-Admin-Key": "no"}, 403)],
)
def test_http_synonyms_need_both_keys(client, headers, status):
    assert client.get("/admin/synonyms", headers=headers).status_code == status
    post = client.post("/admin/synonyms", json={"line": "a1, b1"}, headers=headers)
    assert post.status_code == status
    assert client.delete("/admin/synonyms/x", headers=headers).status_code == status

"""Words from the search log in the spelling vocabulary: the shopper guard, digits, typos the
corrector already fixes, both store backends, the manifest, the CLI and the error lines."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient

from core.errors import ShopsearchError
from indexer.build import index_catalog
from indexer.vocabulary import add_log_vocabulary
from retrieval.retriever import Retriever
from retrieval.spelling import (
    QueryCorrector,
    build_vocabulary,
    count_log_words,
    split_vocabulary,
    vocabulary_with_log,
)
from retrieval.store import IndexLocation, open_backend

PRODUCTS = [
    {
        "product_id": "f1",
        "title": "Delta Kitchen Faucet in Chrome",
        "category": "Plumbing > Faucets",
    },
    {"product_id": "f2", "title": "Bathroom Faucet with Drain", "category": "Plumbing > Faucets"},
    {"product_id": "w1", "title": "Water Cooler, Bottom Load", "category": "Appliances > Coolers"},
    {"product_id": "d1", "title": "Cordless Drill Kit 20V", "category": "Tools > Drills"},
    {"product_id": "s1", "title": "Steel Shelving Unit", "category": "Storage > Shelving"},
]
T0 = 1_700_000_000.0


def _search(user: str, n: int, query: str, clicked: str | None, event: str = "click") -> list:
    """A search showing every product, and the shopper's interaction with ``clicked``."""
    sid = f"{user}-{n}"
    shown = [p["product_id"] for p in PRODUCTS]
    out = [
        {
            "user_id": user,
            "timestamp": T0 + n * 60,
            "session_id": f"s-{user}",
            "event": "search",
            "query": query,
            "search_id": sid,
            "results": shown,
        }
    ]
    if clicked:
        out.append(
            {
                "user_id": user,
                "timestamp": T0 + n * 60 + 5,
                "session_id": f"s-{user}",
                "event": event,
                "product_id": clicked,
                "search_id": sid,
            }
        )
    return out


def _log(path, searches) -> str:
    _write_log([e for i, s in enumerate(searches) for e in _search(s[0], i, *s[1:])], path)
    return str(path)


def _write_log(rows: list[dict], path) -> None:
    """The log as JSON Lines, or as Parquet for a .parquet path (missing keys are nulls)."""
    if path.suffix == ".parquet":
        names = list(dict.fromkeys(k for r in rows for k in r))
        rows = [{n: r.get(n) for n in names} for r in rows]
        pl.DataFrame(rows, infer_schema_length=None).write_parquet(path)
        return
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


#: "kohler" (a brand no product names) by three shoppers: a word; the corrector turns it into
#: "cooler" today. "faucte" by three shoppers who then chose a faucet: the corrector's typo.
#: "spigot" by two shoppers only (one of them twice). "20v" has a digit. "fawcet" by three
#: shoppers who chose nothing.
GOOD_LOG = [
    ("ann", "kohler faucet", "f1"),
    ("bob", "Kohler kitchen faucet", "f1", "add_to_cart"),
    ("cy", "kohler", "f2", "purchase"),
    ("ann", "faucte", "f2"),
    ("bob", "delta faucte", "f1"),
    ("dee", "faucte chrome", "f1"),
    ("dee", "spigot", "f2"),
    ("dee", "spigot faucet", "f2"),
    ("eve", "spigot", "f2"),
    ("ann", "20v drill", "d1"),
    ("bob", "20v drill", "d1"),
    ("cy", "20v drill", "d1"),
    ("fay", "fawcet", None),  # searched, never chose anything: never counts
    ("gus", "fawcet", None),
    ("hal", "fawcet", None),
]


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PRODUCTS))
    return path


@pytest.fixture
def edge_index(tmp_path, catalog, tiny_encoder) -> IndexLocation:
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(catalog, loc, encoder=tiny_encoder, progress=False)
    return loc


def _builds(loc: IndexLocation) -> tuple[str, list[str]]:
    return (loc.path / "CURRENT").read_text(), sorted(
        p.name for p in (loc.path / "builds").iterdir()
    )


def _corrected(loc: IndexLocation, encoder, queries: list[str]) -> list[str | None]:
    kwargs = {"client": loc.client} if loc.client is not None else {}
    with Retriever.open(loc.path, encoder=encoder, **kwargs) as r:
        # what the corrector proposes (the log's words change that); whether a search then
        # applies it is the evidence rule's business (tests/retrieval/test_typo.py)
        return [c.corrected if c else None for c in map(r.corrector.correct, queries)]


# -- the counting and its guards --------------------------------------------------------------


def test_guards_shoppers_digits_typos_and_known_words():
    corrector = QueryCorrector(build_vocabulary(p["title"] for p in PRODUCTS))
    searches = [(s[0], s[1], [s[2]]) for s in GOOD_LOG if s[2]]
    texts = {p["product_id"]: set(p["title"].lower().replace(",", "").split()) for p in PRODUCTS}
    asked: list = []

    def words(ids):
        asked.append(list(ids))
        return {i: texts[i] for i in ids}

    found = count_log_words(searches, corrector, words)
    assert found.added == ["kohler"] and found.counts["kohler"] == 3
    assert found.counts["faucet"] == 3  # a catalog word: the log's shoppers are added to it
    assert found.counts["drill"] == 3 and found.catalog_words == 2
    assert "faucte" not in found.counts and "spigot" not in found.counts
    assert not any(ch.isdigit() for w in found.counts for ch in w)
    assert found.skipped == {
        "has a digit": 1,
        "a typo: the shoppers chose products with the word it is corrected to": 1,
        "typed by fewer than 3 shoppers": 1,
    }
    assert found.searches == 12 and found.shoppers == 5
    assert len(asked) == 1  # the products' words are read once, for the searches with a typo
    # two shoppers are enough when the shop says so
    two = count_log_words(searches, corrector, words, min_shoppers=2)
    assert two.added == ["kohler", "spigot"]
    with pytest.raises(ShopsearchError, match="min_shoppers must be at least 1"):
        count_log_words(searches, corrector, words, min_shoppers=0)


def test_the_log_part_is_kept_apart_and_replaced_not_added_twice():
    stored = vocabulary_with_log({"faucet": 2, "drill": 1}, {"faucet": 3, "kohler": 3})
    assert stored["counts"] == {"drill": 1, "faucet": 5, "kohler": 3}
    assert split_vocabulary(stored) == ({"drill": 1, "faucet": 2}, {"faucet": 3, "kohler": 3})
    assert vocabulary_with_log({"drill": 1}, {}) == {
        "kind": "shopsearch-vocabulary/v1",
        "counts": {"drill": 1},
    }


# -- stored with the index ------------------------------------------------------------------


def test_log_words_reach_the_corrector_of_the_embedded_index(edge_index, tiny_encoder, tmp_path):
    loc = edge_index
    queries = ["kohler faucet", "faucte", "spigot faucet", "fawcet", "kohlr faucet"]
    before = _corrected(loc, tiny_encoder, queries)
    assert before[:2] == ["cooler faucet", "faucet"] and before[3] == "faucet"
    catalog_counts = open_backend(loc).open().vocabulary()["counts"]

    running = Retriever.open(loc.path, encoder=tiny_encoder, auto_refresh_s=None)
    summary = add_log_vocabulary(loc, _log(tmp_path / "log.jsonl", GOOD_LOG))
    assert summary.words_added == ["kohler"] and summary.catalog_words == 2
    with running:  # a searcher already running picks the new build up on its refresh
        assert running.refresh() and running.corrector.correct("kohler faucet") is None
    assert summary.skipped["typed by fewer than 3 shoppers"] == 1
    after = _corrected(loc, tiny_encoder, queries)
    assert after[0] is None  # kohler is a word now
    assert after[1] == "faucet"  # the typo shoppers made is still fixed
    assert after[2] == before[2]  # two shoppers are not enough
    assert after[3] == "faucet"  # searched by three, never chosen after: still corrected
    assert after[4] == "kohler faucet"  # a typo of the new word now finds it

    build = loc.path / "builds" / (loc.path / "CURRENT").read_text().strip()
    manifest = json.loads((build / "manifest.json").read_text())
    stored = json.loads((build / "vocabulary.json").read_text())
    assert manifest["build_id"] == summary.build_id and manifest["mode"] == "vocabulary"
    from_log = manifest["spelling"]["from_log"]
    assert from_log["queries"] == 12 and from_log["words_added"] == 1
    assert from_log["min_shoppers"] == 3 and from_log["catalog_words"] == 2
    assert manifest["spelling"]["words"] == len(stored["counts"]) == len(catalog_counts) + 1
    assert stored["counts"]["faucet"] == catalog_counts["faucet"] + 3  # catalog count kept
    assert stored["log_counts"] == {"drill": 3, "faucet": 3, "kohler": 3}
    assert open_backend(loc).open().count() == len(PRODUCTS)  # checksum valid, products kept

    # a second run replaces the log's part: nothing is counted twice
    again = add_log_vocabulary(loc, tmp_path / "log.jsonl")
    assert again.words_added == ["kohler"] and again.replaced == 0
    assert open_backend(loc).open().vocabulary()["counts"] == stored["counts"]
    # a newer log without kohler's shoppers takes it out again
    add_log_vocabulary(loc, _log(tmp_path / "newer.jsonl", GOOD_LOG[3:]), min_shoppers=2)
    vocabulary = open_backend(loc).open().vocabulary()
    assert "kohler" not in vocabulary["counts"] and "spigot" in vocabulary["counts"]


def test_reindexing_keeps_the_log_words_until_a_full_rebuild(
    edge_index, catalog, tiny_encoder, tmp_path
):
    loc = edge_index
    add_log_vocabulary(loc, _log(tmp_path / "log.jsonl", GOOD_LOG))
    for mode in ("upsert", "sync"):
        index_catalog(catalog, loc, encoder=tiny_encoder, progress=False, mode=mode)
        col = open_backend(loc).open()
        assert col.vocabulary()["log_counts"]["kohler"] == 3, mode
        assert col.manifest["spelling"]["from_log"]["words_added"] == 1, mode
        col.close()
        assert _corrected(loc, tiny_encoder, ["kohler faucet"]) == [None]
    index_catalog(catalog, loc, encoder=tiny_encoder, progress=False, mode="full")
    col = open_backend(loc).open()
    assert "from_log" not in col.manifest["spelling"] and "kohler" not in col.vocabulary()["counts"]
    col.close()


def test_server_backend_stores_the_log_words(catalog, tiny_encoder, tmp_path):
    client = QdrantClient(":memory:")
    loc = IndexLocation(client=client)
    index_catalog(catalog, loc, encoder=tiny_encoder, progress=False)
    assert _corrected(loc, tiny_encoder, ["kohler faucet"]) == ["cooler faucet"]
    summary = add_log_vocabulary(loc, _log(tmp_path / "log.parquet", GOOD_LOG))
    assert summary.words_added == ["kohler"]
    name = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["products"]
    meta = client.get_collection(name).config.metadata
    assert json.loads(meta["shopsearch_vocabulary"])["log_counts"]["kohler"] == 3
    col = open_backend(loc).open()
    assert col.manifest["spelling"]["from_log"]["words_added"] == 1
    assert col.vocabulary()["counts"]["kohler"] == 3 and col.count() == len(PRODUCTS)
    col.close()
    assert _corrected(loc, tiny_encoder, ["kohler faucet", "faucte"]) == [None, "faucet"]


# -- bad input: one line, nothing written -----------------------------------------------------


def test_a_log_without_a_chosen_search_changes_nothing(edge_index, tmp_path):
    before = _builds(edge_index)
    log = _log(tmp_path / "log.jsonl", [("ann", "kohler", None), ("bob", "kohler", None)])
    with pytest.raises(ShopsearchError, match="no search in the log led to a click") as err:
        add_log_vocabulary(edge_index, log)
    assert "the index was not changed" in str(err.value) and "\n" not in str(err.value)
    assert _builds(edge_index) == before


def test_a_log_without_shown_lists_still_teaches_its_words(edge_index, tmp_path):
    """Each click names its search: that is all the vocabulary needs, shown list or not
    (case 28)."""
    rows = [
        {k: v for k, v in e.items() if k != "results"}
        for i, s in enumerate(GOOD_LOG)
        for e in _search(s[0], i, *s[1:])
    ]
    log = tmp_path / "no-lists.jsonl"
    _write_log(rows, log)
    summary = add_log_vocabulary(edge_index, log)
    assert summary.words_added == ["kohler"]


def test_a_path_that_is_no_index_is_one_line_and_not_created(tmp_path):
    log = _log(tmp_path / "log.jsonl", GOOD_LOG)
    missing = tmp_path / "nothing-here"
    with pytest.raises(ShopsearchError, match="no shopsearch index at"):
        add_log_vocabulary(IndexLocation(path=missing), log)
    assert not missing.exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(ShopsearchError, match="no shopsearch index at"):
        add_log_vocabulary(IndexLocation(path=tmp_path / "junk"), log)
    assert sorted(p.name for p in (tmp_path / "junk").iterdir()) == ["notes.txt"]
    with pytest.raises(ShopsearchError, match="no shopsearch index at"):
        add_log_vocabulary(IndexLocation(client=QdrantClient(":memory:")), log)


def test_a_failure_while_writing_leaves_the_build_as_it_was(edge_index, tmp_path, monkeypatch):
    from retrieval.store.edge import EdgeCollection

    before = _builds(edge_index)

    def broken(self, vocabulary):
        raise OSError("disk full")

    monkeypatch.setattr(EdgeCollection, "set_vocabulary", broken)
    with pytest.raises(OSError, match="disk full"):
        add_log_vocabulary(edge_index, _log(tmp_path / "log.jsonl", GOOD_LOG))
    assert _builds(edge_index) == before  # no staging build left behind


# -- the command ----------------------------------------------------------------------------


def test_cli_vocabulary_adds_and_reports(edge_index, tmp_path, tiny_encoder):
    from shopsearch.cli import main

    log = _log(tmp_path / "log.jsonl", GOOD_LOG)
    runner = CliRunner()
    result = runner.invoke(main, ["vocabulary", log, "--index", str(edge_index.path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 1 word(s) from 12 search(es) of 5 shopper(s)")
    assert ": kohler;" in result.stdout and "counted 2 catalog word(s)" in result.stdout
    assert "skipped 3 word(s): " in result.stdout and "has a digit (1)" in result.stdout
    assert _corrected(edge_index, tiny_encoder, ["kohler faucet"]) == [None]

    args = ["vocabulary", log, "--index", str(edge_index.path), "--min-shoppers", "2", "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["words_added"] == ["kohler", "spigot"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-clicks", "no search in the log led to a click, add to cart or purchase"),
        ("not-an-index", "no shopsearch index at"),
        ("no-log", "no such file"),
        ("bad-guard", "Invalid value for '--min-shoppers'"),
    ],
)
def test_cli_vocabulary_errors_are_one_line(edge_index, tmp_path, case, message):
    from shopsearch.cli import main

    log = _log(tmp_path / "log.jsonl", GOOD_LOG)
    index = str(edge_index.path)
    args = {
        "no-clicks": [_log(tmp_path / "none.jsonl", [("ann", "kohler", None)]), "--index", index],
        "not-an-index": [log, "--index", str(tmp_path)],
        "no-log": [str(tmp_path / "missing.jsonl"), "--index", index],
        "bad-guard": [log, "--index", index, "--min-shoppers", "0"],
    }[case]
    before = _builds(edge_index)
    result = CliRunner().invoke(main, ["vocabulary", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    if case != "bad-guard":  # click's own usage error is several lines
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert _builds(edge_index) == before


def test_cli_vocabulary_leaves_out_forgotten_shoppers(
    edge_index, tmp_path, tiny_encoder, monkeypatch
):
    from shopsearch.cli import main

    log = _log(tmp_path / "log.jsonl", GOOD_LOG)
    profiles = tmp_path / "profiles"
    runner = CliRunner()
    index = ["--index", str(edge_index.path)]
    missing = runner.invoke(main, ["vocabulary", log, *index, "--profiles", str(profiles)])
    assert missing.exit_code == 2 and "no profile store there" in missing.stderr
    result = runner.invoke(main, ["events", "ingest", log, "--profiles", str(profiles), *index])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["forget-user", "cy", "--profiles", str(profiles)])
    assert result.exit_code == 0, result.output
    # "kohler" had three shoppers (ann, bob, cy): with cy forgotten it has two, under the guard
    args = ["vocabulary", log, *index, "--profiles", str(profiles), "--json"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["forgotten"] == 1 and summary["words_added"] == []
    assert _corrected(edge_index, tiny_encoder, ["kohler faucet"]) != [None]
    # the raw log alone still counts cy
    result = runner.invoke(main, ["vocabulary", log, *index, "--json"])
    assert json.loads(result.stdout)["words_added"] == ["kohler"]
    # a profile directory without its key (serving's key elsewhere): refused, not a new key
    key = (profiles / "pseudonym.key").read_bytes()
    (profiles / "pseudonym.key").unlink()
    before = _builds(edge_index)
    result = runner.invoke(main, ["vocabulary", log, *index, "--profiles", str(profiles)])
    assert result.exit_code == 2 and "no pseudonym.key there" in result.stderr
    assert not (profiles / "pseudonym.key").exists() and _builds(edge_index) == before
    # ... and with that key where serving keeps it (the environment), the command reads it and
    # passes it on: cy is still forgotten (the library itself reads no variable)
    env = {"SHOPSEARCH_PSEUDONYM_KEY": key.hex()}
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forgotten"] == 1
    monkeypatch.setenv("SHOPSEARCH_PSEUDONYM_KEY", key.hex())
    with pytest.raises(ShopsearchError, match="no pseudonym.key there"):
        add_log_vocabulary(edge_index, log, profiles=profiles)  # no key=: the variable unread
    assert add_log_vocabulary(edge_index, log, profiles=profiles, key=key.hex()).forgotten == 1


def test_the_services_search_log_teaches_the_same_words(edge_index, tmp_path):
    """The service's search log folder (pseudonyms, clicks joined by search_id, one anonymous
    search) adds what the event log of the same searches adds."""
    from personalization.searchlog import write_segment
    from personalization.searchlog_writer import log_pseudonymizer

    folder = tmp_path / "search-log"
    pz = log_pseudonymizer(folder)
    rows = []
    for e in (e for i, s in enumerate(GOOD_LOG) for e in _search(s[0], i, *s[1:])):
        row = {
            "event": e["event"],
            "timestamp": e["timestamp"],
            "search_id": e["search_id"],
            "pseudonym": pz.pseudonym(e["user_id"]),
            "session": pz.session_pseudonym(e["session_id"]),
        }
        if e["event"] == "search":
            rows.append({**row, "query": e["query"], "results": e["results"], "offset": 0})
        else:  # the page sends the click without its session: the search_id joins it
            rows.append({**row, "session": "", "product_id": e["product_id"]})
    rows.append({"event": "search", "timestamp": T0, "search_id": "x", "query": "kohler"})
    write_segment(folder / "20231114T221320.000000Z-host-1.parquet", rows)
    summary = add_log_vocabulary(edge_index, folder)
    assert summary.words_added == ["kohler"] and summary.searches == 12
    assert summary.anonymous == 1 and summary.shoppers == 5


def test_a_search_log_leaves_out_shoppers_erased_from_the_profile_store(edge_index, tmp_path):
    """A shopper erased with ``forget-user --profiles`` only (their log rows not rewritten)
    stops counting in a search log read with that store: the rows carry pseudonyms, matched
    against the store's tombstones."""
    from personalization.ingest import open_profiles
    from personalization.searchlog import write_segment

    profiles, folder = tmp_path / "profiles", tmp_path / "search-log"
    store, pz = open_profiles(profiles)
    try:
        store.forget("cy", pz)
    finally:
        store.close()
    rows = []
    for e in (e for i, s in enumerate(GOOD_LOG) for e in _search(s[0], i, *s[1:])):
        row = {
            "event": e["event"],
            "timestamp": e["timestamp"],
            "search_id": e["search_id"],
            "pseudonym": pz.pseudonym(e["user_id"]),
            "session": pz.session_pseudonym(e["session_id"]),
        }
        if e["event"] == "search":
            rows.append({**row, "query": e["query"], "results": e["results"], "offset": 0})
        else:
            rows.append({**row, "product_id": e["product_id"]})
    folder.mkdir()
    write_segment(folder / "20231114T221320.000000Z-host-1.parquet", rows)
    # "kohler" had three shoppers (ann, bob, cy): without cy it is under the guard of three
    assert add_log_vocabulary(edge_index, folder).words_added == ["kohler"]
    summary = add_log_vocabulary(edge_index, folder, profiles=profiles)
    assert summary.words_added == [] and summary.forgotten > 0

"""Typo tolerance: the corrector's guards, the vocabulary stored with the index, the corrected
query in Python / CLI / HTTP results, the off switch, and fusion weights recorded and used."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from core.errors import ShopsearchError
from indexer.build import index_catalog, tune_index
from rerank.pipeline import SearchPipeline
from retrieval.retriever import QueryTuning, Retriever
from retrieval.spelling import QueryCorrector, SpellingConfig, build_vocabulary
from retrieval.store import IndexLocation, open_backend

CATALOG_TEXTS = [
    "Delta Bathroom Faucet in Chrome | category: Plumbing > Faucets",
    "Kitchen Faucet with Sprayer | category: Plumbing > Faucets",
    "Heavy Duty Steel Shelving Unit, 5-Tier | category: Storage > Shelving",
    "White Interior Paint, 1 gal. | category: Paint > Interior Paint",
    "DEWALT DCD790 20V MAX Cordless Drill | category: Tools > Drills",
    "3/4 in. Copper Fitting | category: Plumbing > Fittings",
    "30x80 Prehung Interior Door | category: Doors",
    "GE Countertop Microwave | category: Appliances > Microwaves",
    "Led Light Bulb, Soft White | category: Lighting > Bulbs",
    "Fan Light Kit | category: Lighting > Fans",
]


@pytest.fixture(scope="module")
def corrector() -> QueryCorrector:
    return QueryCorrector(build_vocabulary(CATALOG_TEXTS))


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("delta bathroom falcet", "delta bathroom faucet"),
        ("heavy duty shevlving", "heavy duty shelving"),
        ("white intreior paint", "white interior paint"),
        ("ge micewave", "ge microwave"),
        ("Kitchen FAUCT", "Kitchen faucet"),  # unknown in any case; the rest kept as typed
    ],
)
def test_misspelled_words_are_fixed(corrector, typed, expected):
    fix = corrector.correct(typed)
    assert fix is not None and fix.corrected == expected
    assert fix.original == typed
    assert all(a != b for a, b in fix.changes)


@pytest.mark.parametrize(
    "query",
    [
        "dcd790 drill",  # model number
        "dcd79 drill",  # a model number the catalog does not have: still not a word
        "3/4 in. copper fitting",  # size
        "30x80 interior door",  # dimensions
        "30x81 door",
        "20v cordless drill",
        "faucets",  # the catalog knows it after BM25's stemming ("faucet")
        "shelving units",
        "led bulb",
        "fam light",  # three letters: too short to correct ("fan"? "fam"?)
        "paint for the interior",  # stopwords
        "1 gallon paint",  # a unit word
    ],
)
def test_guards_leave_numbers_sizes_known_and_short_words(corrector, query):
    assert corrector.correct(query) is None


def test_known_word_is_never_changed_even_next_to_a_typo(corrector):
    fix = corrector.correct("chrome falcet 3/4 in.")
    assert fix is not None
    assert fix.corrected == "chrome faucet 3/4 in."
    assert fix.changes == (("falcet", "faucet"),)


def test_four_letter_words_get_one_edit_only():
    c = QueryCorrector({"bulb": 3, "drill": 2})
    assert c.suggest("blub") == "bulb"  # one transposition
    assert c.suggest("bxxb") is None  # two edits on four letters: no
    assert c.suggest("drxxl") == "drill"  # five letters: two edits allowed
    assert c.suggest("bulb") is None


def test_min_count_keeps_rare_words_out_of_corrections():
    counts = {"shelving": 1, "shelling": 40}
    assert QueryCorrector(counts).suggest("shelvig") == "shelving"
    assert QueryCorrector(counts, SpellingConfig(min_count=2)).suggest("shelvig") == "shelling"


def test_bad_spelling_config_is_a_one_line_error():
    with pytest.raises(ShopsearchError, match="max_distance"):
        SpellingConfig(max_distance=7)


# -- stored with the index -------------------------------------------------------------------


@pytest.fixture(scope="module")
def typo_index(tmp_path_factory, sample_catalog, tiny_encoder):
    path = tmp_path_factory.mktemp("typo") / "index"
    index_catalog(sample_catalog, IndexLocation(path=path), encoder=tiny_encoder, progress=False)
    return path


def test_vocabulary_is_a_file_next_to_the_manifest_and_loaded_at_search(typo_index, tiny_encoder):
    build = typo_index / "builds" / (typo_index / "CURRENT").read_text().strip()
    stored = json.loads((build / "vocabulary.json").read_text())
    manifest = json.loads((build / "manifest.json").read_text())
    assert stored["counts"]["faucet"] >= 1 and "drill" in stored["counts"]
    assert manifest["spelling"]["words"] == len(stored["counts"])
    assert not any(ch.isdigit() for w in stored["counts"] for ch in w)
    with Retriever.open(typo_index, encoder=tiny_encoder) as r:
        assert r.corrector is not None and r.corrector.knows("faucet")
        hits = r.search("kitchen faucte", k=5)
        assert hits.corrected == "kitchen faucet"
        assert hits.correction.changes == (("faucte", "faucet"),)
        assert [h.product_id for h in hits] == [
            h.product_id for h in r.search("kitchen faucet", k=5)
        ]


def test_tampered_vocabulary_is_reported_as_damage(typo_index, tiny_encoder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(typo_index, copy)
    build = copy / "builds" / (copy / "CURRENT").read_text().strip()
    stored = json.loads((build / "vocabulary.json").read_text())
    stored["counts"]["faucte"] = 99
    (build / "vocabulary.json").write_text(json.dumps(stored))
    with pytest.raises(ShopsearchError, match="vocabulary does not match its checksum"):
        Retriever.open(copy, encoder=tiny_encoder)


def test_server_backend_stores_the_vocabulary_beside_its_manifest(sample_catalog, tiny_encoder):
    client = QdrantClient(":memory:")
    index_catalog(
        sample_catalog, IndexLocation(client=client), encoder=tiny_encoder, progress=False
    )
    name = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}["products"]
    meta = client.get_collection(name).config.metadata
    assert "faucet" in json.loads(meta["shopsearch_vocabulary"])["counts"]
    with Retriever.open(client=client, encoder=tiny_encoder) as r:
        assert r.search("kitchen faucte", k=3).corrected == "kitchen faucet"


def test_index_without_vocabulary_searches_as_typed(typo_index, tiny_encoder, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(typo_index, copy)
    build = copy / "builds" / (copy / "CURRENT").read_text().strip()
    manifest = json.loads((build / "manifest.json").read_text())
    del manifest["spelling"]
    (build / "manifest.json").write_text(json.dumps(manifest))
    (build / "integrity.json").unlink()  # an older, unsealed build
    (build / "vocabulary.json").unlink()
    with Retriever.open(copy, encoder=tiny_encoder) as r:
        assert r.corrector is None
        assert r.search("kitchen faucte", k=3).corrected is None


# -- the corrected query in every result, and the off switch ---------------------------------


def test_correct_false_searches_as_typed(typo_index, tiny_encoder):
    with Retriever.open(typo_index, encoder=tiny_encoder) as r:
        typed = r.search("faucte", k=5, mode="bm25", correct=False)
        assert typed.corrected is None and len(typed) == 0  # BM25 finds no "faucte"
        fixed = r.search("faucte", k=5, mode="bm25")
        assert fixed.corrected == "faucet" and len(fixed) == 5
        assert all("faucet" in h.title.lower() for h in fixed)
        assert r.search("kitchen faucet", k=5).corrected is None


def test_pipeline_returns_the_correction(typo_index, tiny_encoder):
    retriever = Retriever.open(typo_index, encoder=tiny_encoder)
    with SearchPipeline(retriever) as pipe:
        hits = pipe.search("cordless dril", k=3)
        assert hits.corrected == "cordless drill" and len(hits) == 3
        assert pipe.search("cordless dril", k=3, correct=False).corrected is None
        batch = pipe.search_batch(["cordless dril", "garden shovel"], k=2)
        assert [b.corrected for b in batch] == ["cordless drill", None]
        # each search's timings come with its hits: the pipeline keeps no per-call state
        first, second = pipe.search("drill", k=2), pipe.search("paint", k=2)
        assert set(first.stage_ms) == {"profile", "retrieve", "rerank", "personal", "rank"}
        assert first.stage_ms is not second.stage_ms and not hasattr(pipe, "stage_ms")


def test_cli_search_says_showing_results_for(typo_index, tiny_model):
    from shopsearch.cli import main

    runner = CliRunner()
    args = ["search", "kitchen faucte", "--index", str(typo_index), "--model", str(tiny_model)]
    result = runner.invoke(main, [*args, "-k", "3"])
    assert result.exit_code == 0, result.output
    assert 'showing results for "kitchen faucet"' in result.stdout
    result = runner.invoke(main, [*args, "--json"])
    payload = json.loads(result.stdout)
    assert payload["corrected"] == "kitchen faucet"
    assert payload["corrections"] == [{"from": "faucte", "to": "faucet"}]
    result = runner.invoke(main, [*args, "--json", "--no-correct"])
    assert json.loads(result.stdout)["corrected"] is None
    result = runner.invoke(main, [*args, "--no-correct"])
    assert "showing results for" not in result.stdout


def _service(index, encoder, tmp_path) -> TestClient:
    """A TestClient of the service over ``index``, its query tower ``encoder``."""
    from shopsearch.service import ServiceSettings, create_app

    def factory(settings):
        return SearchPipeline(Retriever.open(settings.index, encoder=encoder))

    settings = ServiceSettings(
        index=str(index), profiles=str(tmp_path / "profiles"), background_load=False
    )
    return TestClient(create_app(settings, pipeline_factory=factory))


def test_http_search_reports_the_correction_and_can_turn_it_off(typo_index, tiny_encoder, tmp_path):
    with _service(typo_index, tiny_encoder, tmp_path) as client:
        body = client.get("/search", params={"q": "kitchen faucte", "k": 3}).json()
        assert body["corrected"] == "kitchen faucet"
        assert body["corrections"] == [{"from": "faucte", "to": "faucet"}]
        body = client.get("/search", params={"q": "kitchen faucte", "correct": "false"}).json()
        assert body["corrected"] is None and body["corrections"] == []
        body = client.post("/search", json={"q": "kitchen faucte", "correct": False}).json()
        assert body["corrected"] is None


# -- fusion weights --------------------------------------------------------------------------


def test_fusion_weights_are_recorded_with_the_index_and_used(
    sample_catalog, tiny_encoder, tmp_path
):
    loc = IndexLocation(path=tmp_path / "index")
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False)
    queries = ["cordless drill kit", "kitchen faucet", "interior paint", "garden shovel"]
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert r.tuning == QueryTuning()
        equal = [[h.product_id for h in r.search(q, k=10)] for q in queries]
    tune_index(loc, QueryTuning(dense_weight=0.0, sparse_weight=1.0, how="test"))
    col = open_backend(loc).open()
    assert col.manifest["query"]["dense_weight"] == 0.0
    assert col.vocabulary() is not None  # the new build keeps the vocabulary
    col.close()
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert r.tuning.how == "test"
        for q in queries:
            hybrid = [h.product_id for h in r.search(q, k=10, mode="hybrid")]
            bm25 = [h.product_id for h in r.search(q, k=10, mode="bm25")]
            assert hybrid == bm25  # a dense weight of 0 leaves BM25's order
        assert any(
            [h.product_id for h in r.search(q, k=10)] != b
            for q, b in zip(queries, equal, strict=True)
        )
    # an upsert keeps the recorded tuning
    index_catalog(sample_catalog, loc, encoder=tiny_encoder, progress=False, mode="upsert")
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        assert r.tuning.dense_weight == 0.0 and r.corrector is not None


def test_bad_tuning_is_a_one_line_error():
    with pytest.raises(ShopsearchError, match="dense_weight"):
        QueryTuning(dense_weight=-1.0)
    with pytest.raises(ShopsearchError, match="both be 0"):
        QueryTuning(dense_weight=0.0, sparse_weight=0.0)
    with pytest.raises(ShopsearchError, match="dense_reads"):
        QueryTuning(dense_reads="typed")  # type: ignore[arg-type]


# -- a correction is applied only with evidence (case 26) ------------------------------------

EVIDENCE_CATALOG = [
    ("r1", "Ridgeline 20V Cordless Hammer Drill", "Ridgeline", "Tools > Drills"),
    ("r2", "Torqwell 24V Cordless Drill Driver Kit", "Torqwell", "Tools > Drills"),
    ("p1", "Truecoat 9 in. Foam Roller Cover", "Truecoat", "Paint > Rollers"),
    ("p2", "Brushworks Sage Green Exterior Paint", "Brushworks", "Paint > Exterior"),
    ("f1", "Stillwater Pull-Down Kitchen Faucet in Chrome", "Stillwater", "Plumbing > Faucets"),
    ("f2", "Pureline Single Hole Bathroom Faucet", "Pureline", "Plumbing > Faucets"),
    ("s1", "Wireworks 20 Amp Motion Sensor Switch", "Wireworks", "Electrical > Switches"),
    ("l1", "Brightwell Soft White LED Bulb", "Brightwell", "Lighting > Bulbs"),
    ("l2", "Halden Dusk to Dawn Outdoor Lantern", "Halden", "Lighting > Outdoor"),
]


@pytest.fixture(scope="module")
def evidence_index(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("evidence")
    rows = [
        {"product_id": i, "title": t, "brand": b, "category": c, "price": 10.0}
        for i, t, b, c in EVIDENCE_CATALOG
    ]
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index_catalog(catalog, IndexLocation(path=folder / "idx"), encoder=tiny_encoder, progress=False)
    return folder / "idx"


@pytest.mark.parametrize(
    ("typed", "offered"),
    [
        ("kohler faucet", None),  # a brand the shop lacks: "roller faucet" makes no sense
        ("safe current switch", None),  # "safe" is English, and "sage" fits no switch
        ("sofa", "soft"),  # a word of the language the shop does not sell: offered
        ("desk lamp", None),  # "dusk amp": no product has both
        ("bolts", "bulbs"),
    ],
)
def test_a_correction_without_evidence_is_not_applied(evidence_index, tiny_encoder, typed, offered):
    with Retriever.open(evidence_index, encoder=tiny_encoder) as r:
        hits = r.search(typed, k=5, mode="bm25")
        as_typed = r.search(typed, k=5, mode="bm25", correct=False)
        assert hits.corrected is None  # searched as typed ...
        assert [h.product_id for h in hits] == [h.product_id for h in as_typed]
        assert hits.suggestion == offered  # ... offered only where it makes sense
        if offered is None:
            assert hits.correction is None
        else:
            assert hits.correction.applied is False
            assert hits.correction.to_dict()["applied"] is False


@pytest.mark.parametrize(
    ("typed", "fixed"),
    [
        ("ridgline drill", "ridgeline drill"),  # the brand with a drill: one product has both
        ("cordles dril", "cordless drill"),
        ("bathrom faucte", "bathroom faucet"),
        ("faucte", "faucet"),  # one word: nothing to hold it against
    ],
)
def test_a_typo_with_evidence_is_corrected(evidence_index, tiny_encoder, typed, fixed):
    with Retriever.open(evidence_index, encoder=tiny_encoder) as r:
        hits = r.search(typed, k=3, mode="bm25")
        assert hits.corrected == fixed and hits.suggestion is None
        assert hits.correction.applied is True


def test_only_the_changes_with_evidence_are_applied(evidence_index, tiny_encoder):
    with Retriever.open(evidence_index, encoder=tiny_encoder) as r:
        # "sofa" stays (a word of the language), "faucte" is fixed
        (c,) = r.corrections(["sofa faucte"])
        assert c.applied and c.corrected == "sofa faucet"
        assert c.changes == (("faucte", "faucet"),)


def test_bm25_reads_the_typed_word_beside_its_correction(evidence_index, tiny_encoder):
    with Retriever.open(evidence_index, encoder=tiny_encoder) as r:
        corrections = r.corrections(["ridgline drill"])
        (spec,) = r.specs(["ridgline drill"], 5, None, "bm25", corrections=corrections)
        assert corrections[0].corrected == "ridgeline drill"
        assert spec.sparse == r.lexical.encode_query("ridgeline drill ridgline")
        assert spec.sparse != r.lexical.encode_query("ridgeline drill")


def test_cli_offers_a_correction_it_did_not_apply(evidence_index, tiny_model):
    from shopsearch.cli import main

    args = ["search", "sofa", "--index", str(evidence_index), "--model", str(tiny_model)]
    result = CliRunner().invoke(main, [*args, "--mode", "bm25"])
    assert result.exit_code == 0, result.output
    assert 'did you mean "soft"?' in result.stdout
    assert "showing results for" not in result.stdout
    payload = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert payload["corrected"] is None and payload["corrections"] == []
    assert payload["suggestion"] == "soft"


def test_http_offers_a_correction_it_did_not_apply(evidence_index, tiny_encoder, tmp_path):
    with _service(evidence_index, tiny_encoder, tmp_path) as client:
        body = client.get("/search", params={"q": "sofa", "k": 3}).json()
        assert body["corrected"] is None and body["corrections"] == []
        assert body["suggestion"] == "soft"
        body = client.get("/search", params={"q": "kohler faucet", "k": 3}).json()
        assert body["corrected"] is None and body["suggestion"] is None
        body = client.get("/search", params={"q": "cordles dril", "k": 3}).json()
        assert body["corrected"] == "cordless drill" and body["suggestion"] is None

"""bench-synonyms: the mining rule on a small handmade benchmark (each rule fires where it
should, only the training split is read, the list is the same every run), and the command end
to end on a tiny index, its report written into a docs page."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from evaluation.data import load_benchmark
from indexer.build import index_catalog
from research.bench_synonyms import mine_synonyms
from retrieval.spelling import QueryCorrector, build_vocabulary
from retrieval.store import IndexLocation

TITLES = {
    "r1": "Rust-Oleum Spray Paint Gloss Black",
    "r2": "Rust-Oleum Primer Flat Gray",
    "v1": "Shop Vacuum Wet Dry",
    "v2": "Vacuum Cartridge Filter",
    "v3": "Vacuum Hose Kit",
    "t1": "Steel Trash Can",
    "t2": "Plastic Trash Can",
    "t3": "Round Trash Bin",
    "t4": "Tall Trash Can",
    "t5": "Outdoor Trash Bin",
}
TRAIN = [
    ("rustoleum spray", ["r1"]),
    ("rustoleum primer", ["r2"]),
    ("shop vac", ["v1", "v3"]),
    ("vac filter", ["v2", "v3"]),
    ("garbage can", ["t1", "t2", "t4"]),
    ("garbage bin", ["t3", "t5"]),
]
#: Words only validation and test queries use: never mined.
HELD_OUT = [
    ("dustbin lid", ["t1", "t2", "t3", "t4", "t5"], "test"),
    ("wetvac", ["v1"], "validation"),
]


@pytest.fixture()
def bench(tmp_path):
    titles = dict(TITLES)
    titles.update({f"f{i}": f"Filler Widget Model {chr(97 + i % 26)}{i}" for i in range(600)})
    out = tmp_path / "data"
    out.mkdir()
    pl.DataFrame(
        [
            {"product_id": p, "title": t, "brand": "Acme", "category": "Misc"}
            for p, t in titles.items()
        ]
    ).write_parquet(out / "catalog.parquet")
    queries, qrels = [], []

    def add(text, products, split):
        qid = f"q{len(queries)}"
        queries.append({"query_id": qid, "query": text, "split": split})
        qrels.extend({"query_id": qid, "product_id": p, "grade": 3.0} for p in products)

    for text, products in TRAIN:
        add(text, products, "train")
    for text, products, split in HELD_OUT:
        add(text, products, split)
    for i in range(600):  # the relevant titles overall, against which co-occurrence is lift
        add(
            f"widget {chr(97 + i % 26)}{i}",
            [f"f{i}"],
            ("train", "train", "validation", "test")[i % 4],
        )
    pl.DataFrame(queries).write_parquet(out / "queries.parquet")
    pl.DataFrame(qrels).write_parquet(out / "qrels.parquet")
    (out / "manifest.json").write_text(json.dumps({"relevance_threshold": 2.5, "gain_offset": 1.0}))
    return out


def test_each_rule_mines_its_kind_from_the_training_split_only(bench):
    data = load_benchmark(bench)
    corrector = QueryCorrector(build_vocabulary(data.catalog["title"].to_list()))
    mined = mine_synonyms(data, corrector)
    got = {m.line: m.rule for m in mined}
    assert got == {
        "rustoleum -> rust oleum": "glued",
        "vac -> vacuum": "form",
        "garbage -> trash": "co-occurrence",
    }
    assert mine_synonyms(data, corrector) == mined  # deterministic
    assert not any("dustbin" in m.line or "wetvac" in m.line for m in mined)


def test_bench_synonyms_end_to_end_writes_its_docs_block(bench, tmp_path, tiny_encoder):
    from shopsearch.cli import main

    index = tmp_path / "idx"
    index_catalog(
        bench / "catalog.parquet", IndexLocation(path=index), encoder=tiny_encoder, progress=False
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# p\n\n## Synonyms on Home Depot\n\n<!-- written by: x -->\n"
        "<!-- end written: synonyms -->\n\n## Next\n"
    )
    work = tmp_path / "work"
    args = ["bench-synonyms", str(bench), "--index", str(index), "--workdir", str(work)]
    out = CliRunner().invoke(main, [*args, "--device", "cpu", "--docs", str(page)])
    assert out.exit_code == 0, out.output
    report = json.loads((work / "synonyms.json").read_text())
    assert report["mined"] == {"glued": 1, "form": 1, "co-occurrence": 1}
    assert report["chosen"]["list"] in ("form", "form+co-occurrence")
    assert {r["system"] for r in report["rows"]} == {"bm25", "hybrid"}
    assert (work / "synonyms-mined.txt").read_text().startswith("garbage -> trash  # co-occurrence")
    text = page.read_text()
    assert "<!-- written by: shopsearch" in text and "| bm25 |" in text  # argv: pytest's
    assert text.index("| bm25 |") < text.index("## Next")  # in its own section
    assert not (index / "synonyms.json").exists()  # the index's own list is left alone

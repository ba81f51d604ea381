"""Tests for evaluation.data (the benchmark format, label validation) and evaluation.homedepot
(the Home Depot import)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from core.errors import ShopsearchError
from evaluation.data import SPLITS, load_benchmark, validate_labels
from evaluation.homedepot import assign_splits, import_homedepot, query_id_for

# Latin-1 bytes: 0xE9 = "é", 0xB0 = "°". Row 4 re-types query "angle bracket" with other case
# and spacing (merged, and the pair (angle bracket, 100002) becomes a duplicate: 3 and 2 ->
# 2.5). Product 100003 has two titles (first kept). Row 7 has a non-numeric grade; product
# 100004 still enters the catalog.
TINY_CSV = (
    '"id","product_uid","product_title","search_term","relevance"\n'
    '1,100001,"Caf\xe9 Table 30\xb0 Tilt","cafe table",3\n'
    '2,100001,"Caf\xe9 Table 30\xb0 Tilt","table",2\n'
    '3,100002,"Angle Bracket","angle bracket",3\n'
    '4,100002,"Angle Bracket","Angle  Bracket ",2\n'
    '5,100003,"Cordless Drill","table",1\n'
    '6,100003,"Drill, Cordless","drill",2.33\n'
    '7,100004,"Saw","saw",abc\n'
)


def _write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("latin-1"))
    return path


def _synthetic_csv(path: Path, n_queries: int = 200, per_query: int = 3) -> Path:
    lines = ['"id","product_uid","product_title","search_term","relevance"']
    row = 0
    for q in range(n_queries):
        for j in range(per_query):
            row += 1
            pid = 200000 + (q * 7 + j) % 500
            lines.append(f'{row},{pid},"Product {pid}","query number {q}",{1 + (q + j) % 3}')
    return _write_csv(path, "\n".join(lines) + "\n")


def test_import_tiny_csv(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "train.csv", TINY_CSV)
    out = tmp_path / "bench"
    summary = import_homedepot(csv, out, seed=13)

    catalog = pl.read_parquet(out / "catalog.parquet")
    titles = dict(catalog.select("product_id", "title").iter_rows())
    assert titles == {
        "100001": "Café Table 30° Tilt",  # decoded as latin-1, not mojibake or an error
        "100002": "Angle Bracket",
        "100003": "Cordless Drill",
        "100004": "Saw",
    }
    assert catalog["brand"].null_count() == catalog.height == summary.products == 4

    queries = pl.read_parquet(out / "queries.parquet")
    assert set(queries["query"]) == {"cafe table", "table", "angle bracket", "drill"}
    assert queries["query_id"].to_list() == sorted(queries["query_id"])
    assert query_id_for("Angle  Bracket ") == query_id_for("angle bracket")
    assert query_id_for("angle bracket").startswith("q") and len(query_id_for("x")) == 11
    assert set(queries["split"]) <= set(SPLITS)

    qrels = pl.read_parquet(out / "qrels.parquet")
    grades = {(q, p): g for q, p, g in qrels.iter_rows()}
    assert grades[(query_id_for("angle bracket"), "100002")] == 2.5
    assert grades[(query_id_for("drill"), "100003")] == 2.33
    assert qrels.height == summary.qrels == 5
    assert summary.duplicate_pairs_averaged == 1

    text = " | ".join(summary.problems)
    assert "more than one title" in text
    assert "typed in more than one way" in text
    assert "judged more than once" in text
    assert "non-numeric relevance (id 7)" in text

    # Relevant (>= 2.5) queries: "cafe table" (3.0) and "angle bracket" (2.5 after averaging).
    assert sum(summary.relevant_queries_per_split.values()) == 2
    assert summary.test_queries_with_relevant == summary.relevant_queries_per_split["test"]
    assert sum(summary.queries_per_split.values()) == summary.queries == 4

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["relevance_threshold"] == 2.5 and manifest["gain_offset"] == 1.0
    assert manifest["seed"] == 13
    assert manifest["split_fractions"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert manifest["counts"]["products"] == 4
    assert len(manifest["source"]["sha256"]) == 64

    data = load_benchmark(out)
    assert data.problems == []
    assert data.threshold == 2.5 and data.gain_offset == 1.0
    all_qrels: dict[str, dict[str, float]] = {}
    for name in SPLITS:
        split_queries, split_qrels = data.split(name)
        assert set(split_qrels) <= set(split_queries["query_id"])
        all_qrels |= split_qrels
    assert all_qrels[query_id_for("table")] == {"100001": 2.0, "100003": 1.0}
    with pytest.raises(ShopsearchError, match="unknown split"):
        data.split("dev")


def test_split_is_deterministic_and_sized() -> None:
    ids = [f"q{i:03d}" for i in range(200)]
    first = assign_splits(ids, seed=13)
    assert assign_splits(list(reversed(ids)), seed=13) == first  # input order does not matter
    assert assign_splits(ids, seed=14) != first
    counts = {s: sum(1 for v in first.values() if v == s) for s in SPLITS}
    assert abs(counts["train"] - 160) <= 2
    assert abs(counts["validation"] - 20) <= 2
    assert abs(counts["test"] - 20) <= 2
    other = assign_splits(ids, seed=1, fractions=(0.5, 0.25, 0.25))
    assert sum(1 for v in other.values() if v == "train") == 100
    with pytest.raises(ShopsearchError, match="fractions"):
        assign_splits(ids, seed=1, fractions=(0.8, 0.1, 0.2))


def test_import_split_by_query(tmp_path: Path) -> None:
    csv = _synthetic_csv(tmp_path / "train.csv", n_queries=200, per_query=3)
    a = import_homedepot(csv, tmp_path / "a", seed=13)
    b = import_homedepot(csv, tmp_path / "b", seed=13)
    c = import_homedepot(csv, tmp_path / "c", seed=99)

    def read(name: str) -> pl.DataFrame:
        return pl.read_parquet(tmp_path / name / "queries.parquet")

    assert read("a").equals(read("b"))
    assert not read("a").equals(read("c"))
    assert a.queries_per_split == b.queries_per_split == c.queries_per_split  # same sizes
    assert abs(a.queries_per_split["train"] - 160) <= 2
    assert abs(a.queries_per_split["validation"] - 20) <= 2
    assert abs(a.queries_per_split["test"] - 20) <= 2

    # Every judgment of a query lands in that query's split: one split per query id, and
    # the split views partition the judgments.
    data = load_benchmark(tmp_path / "a")
    joined = data.qrels.join(data.queries, on="query_id", how="left")
    assert joined["split"].null_count() == 0
    assert joined.group_by("query_id").agg(pl.col("split").n_unique())["split"].max() == 1
    seen: set[str] = set()
    n_judgments = 0
    for name in SPLITS:
        _, split_qrels = data.split(name)
        assert not seen & set(split_qrels)
        seen |= set(split_qrels)
        n_judgments += sum(len(v) for v in split_qrels.values())
    assert n_judgments == data.qrels.height == 600


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "train.csv", TINY_CSV)
    out = tmp_path / "bench"
    out.mkdir()
    import_homedepot(csv, out)  # an existing empty directory is fine
    (out / "stale.txt").write_text("old")
    before = (out / "queries.parquet").read_bytes()
    with pytest.raises(ShopsearchError, match="not empty"):
        import_homedepot(csv, out, seed=1)
    assert (out / "queries.parquet").read_bytes() == before
    import_homedepot(csv, out, seed=1, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "train.csv"]  # no temp left
    with pytest.raises(ShopsearchError, match="not a directory"):
        import_homedepot(csv, csv, overwrite=True)


def test_import_errors(tmp_path: Path) -> None:
    with pytest.raises(ShopsearchError, match="not found"):
        import_homedepot(tmp_path / "missing.csv", tmp_path / "out")
    bad = _write_csv(tmp_path / "bad.csv", "id,product_uid,title\n1,2,x\n")
    with pytest.raises(ShopsearchError, match="missing column"):
        import_homedepot(bad, tmp_path / "out")
    with pytest.raises(ShopsearchError, match="fractions"):
        import_homedepot(bad, tmp_path / "out", fractions=(1.0, 0.1, 0.1))
    assert not (tmp_path / "out").exists()


def _labels() -> tuple[set[str], pl.DataFrame, pl.DataFrame]:
    catalog_ids = {"p1", "p2", "p3"}
    queries = pl.DataFrame(
        {
            "query_id": ["q1", "q2", "q2", "q3", "q4"],
            "query": ["drill", "saw", "saw again", "hammer", "nails"],
            "split": ["train", "test", "train", "validation", "dev"],
        }
    )
    qrels = pl.DataFrame(
        {
            "query_id": ["q1", "q1", "q1", "q2", "q9", "q1", "q3", "q4", "q3"],
            "product_id": ["p1", "p2", "p1", "p2", "p1", "p7", "p3", "p1", "p2"],
            "grade": ["3", "2", "1", "2.5", "3", "3", "abc", "3", None],
        }
    )
    return catalog_ids, queries, qrels


def test_validate_labels_reports_each_problem() -> None:
    clean, problems = validate_labels(*_labels())
    text = "\n".join(problems)
    assert "1 query ids appear on more than one row (e.g. 'q2')" in text
    assert "split other than train/validation/test (e.g. 'dev')" in text
    assert "2 judgments have a missing or non-numeric grade (e.g. 'abc', 'missing')" in text
    assert "judgments name 2 query ids missing" in text and "'q9'" in text and "'q4'" in text
    assert "1 judgments name 1 product ids missing from catalog.parquet (e.g. 'p7')" in text
    assert "1 (query_id, product_id) pairs are judged more than once (e.g. ('q1', 'p1'))" in text
    assert len(problems) == 6
    assert clean.schema == {"query_id": pl.Utf8, "product_id": pl.Utf8, "grade": pl.Float64}
    # The first (q1, p1) judgment (grade 3) is kept.
    assert clean.rows() == [("q1", "p1", 3.0), ("q1", "p2", 2.0), ("q2", "p2", 2.5)]


def test_validate_labels_clean_input_and_integer_ids() -> None:
    queries = pl.DataFrame({"query_id": [1, 2], "query": ["a", "b"], "split": ["train", "test"]})
    qrels = pl.DataFrame({"query_id": [1, 2], "product_id": [10, 11], "grade": [3, 1]})
    clean, problems = validate_labels({"10", "11"}, queries, qrels)
    assert problems == []
    assert clean.rows() == [("1", "10", 3.0), ("2", "11", 1.0)]
    with pytest.raises(ShopsearchError, match="missing column"):
        validate_labels({"10"}, queries, qrels.drop("grade"))


def _write_benchmark(root: Path, manifest: dict | None = None) -> Path:
    catalog_ids, queries, qrels = _labels()
    root.mkdir()
    pl.DataFrame({"product_id": sorted(catalog_ids), "title": ["A", "B", "C"]}).write_parquet(
        root / "catalog.parquet"
    )
    queries.write_parquet(root / "queries.parquet")
    qrels.write_parquet(root / "qrels.parquet")
    manifest = {"relevance_threshold": 2.5, "gain_offset": 1.0} if manifest is None else manifest
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_load_benchmark_keeps_problems(tmp_path: Path) -> None:
    data = load_benchmark(_write_benchmark(tmp_path / "b"))
    assert len(data.problems) == 6
    assert data.queries["query_id"].to_list() == ["q1", "q2", "q3"]  # dup q2 first row, q4 dropped
    assert data.queries.filter(pl.col("query_id") == "q2")["split"].item() == "test"
    test_queries, test_qrels = data.split("test")
    assert test_queries.height == 1 and test_qrels == {"q2": {"p2": 2.5}}
    _, train_qrels = data.split("train")
    assert train_qrels == {"q1": {"p1": 3.0, "p2": 2.0}}


def test_load_benchmark_errors(tmp_path: Path) -> None:
    with pytest.raises(ShopsearchError, match="does not exist"):
        load_benchmark(tmp_path / "nope")
    root = _write_benchmark(tmp_path / "no_threshold", manifest={"gain_offset": 1.0})
    with pytest.raises(ShopsearchError, match="relevance_threshold"):
        load_benchmark(root)
    (root / "qrels.parquet").unlink()
    with pytest.raises(ShopsearchError, match="missing qrels.parquet"):
        load_benchmark(root)

    empty = _write_benchmark(tmp_path / "nothing_valid")
    pl.DataFrame({"query_id": ["q9"], "product_id": ["p1"], "grade": [3.0]}).write_parquet(
        empty / "qrels.parquet"
    )
    with pytest.raises(ShopsearchError, match="no valid judgment remains.*'q9'"):
        load_benchmark(empty)
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(ShopsearchError, match="not valid JSON"):
        load_benchmark(empty)

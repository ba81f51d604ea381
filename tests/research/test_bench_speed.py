"""bench-index on tiny data: Recall@100 against exact search beside each latency, the exact rows,
and the int8-quantized build made from the first build's vectors (not re-encoded)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from catalog.reader import read_catalog
from catalog.sample import write_sample_catalog
from catalog.text import product_text
from core.errors import ShopsearchError
from indexer.build import index_catalog
from inference import backend as rb
from research.bench_speed import (
    Latency,
    QuantizedVectorsReport,
    ReusedDocumentVectors,
    SpeedReport,
    knn_recall,
    measure_queries,
    recall_against,
    side_by_side,
)
from research.cli import bench_index_cmd
from retrieval.hits import RankedHit
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from shopsearch.cli import main


def test_recall_against_exact_is_the_mean_overlap_share():
    got = [["a", "b", "c", "d"], ["a", "x"], ["z"]]
    exact = [["a", "b", "c", "e"], ["a", "b"], []]  # the third: exact found nothing (left out)
    assert recall_against(got, exact) == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert recall_against([["a"]], [[]]) is None


def test_knn_recall_counts_a_tie_at_the_cut_as_found():
    # query 1: exact top 3 scores .9 .8 .8; the search returned .9, another product at .8
    # (a tie: same vector, other id) and a real miss at .7 -> 2 of 3, where ids would say 1 of 3
    # query 2: within epsilon (1e-3) of the cut counts, beyond it does not -> 1 of 2
    got = [[0.9, 0.8, 0.7], [0.8, 0.6985]]
    exact = [[0.9, 0.8, 0.8], [0.8, 0.7]]
    assert knn_recall(got, exact) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert knn_recall([[0.8, 0.6995]], [[0.8, 0.7]]) == pytest.approx(1.0)
    assert knn_recall([[0.5]], [[]]) is None  # exact found nothing: left out
    assert knn_recall([[0.9]], [[0.9, 0.8]]) == pytest.approx(1 / 2)  # fewer hits returned


class _FakeRetriever:
    """Approximate dense search misses one exact hit in ten; BM25 and exact search do not."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, bool]] = []

    def search(self, q, k, mode, filters=None, exact=False):
        self.calls.append((mode, filters is not None, exact))
        ids = [f"{q}-{i}" for i in range(10)]
        if mode == "dense" and not exact:
            ids[-1] = "missed"
        return [RankedHit(p, 1.0, 1.0, r) for r, p in enumerate(ids, start=1)]


def test_measure_queries_pairs_each_row_with_exact_search():
    fake = _FakeRetriever()
    queries = ["q1", "q2", "q3"]
    lats, exact = measure_queries(fake, queries, ["w"], {"in_stock": True})
    names = [lat.name for lat in lats]
    assert names == [
        "dense k=100",
        "dense k=100+filter",
        "exact dense k=100",
        "exact dense k=100+filter",
        "bm25 k=100",
        "bm25 k=100+filter",
        "hybrid k=100",
        "hybrid k=100+filter",
        "exact hybrid k=100",
        "exact hybrid k=100+filter",
    ]
    recall = {lat.name: lat.recall_vs_exact for lat in lats}
    assert recall["dense k=100"] == recall["dense k=100+filter"] == pytest.approx(0.9)
    assert recall["hybrid k=100"] == 1.0
    assert recall["bm25 k=100"] is None and recall["exact dense k=100"] is None
    assert exact["dense k=100"] == [[f"{q}-{i}" for i in range(10)] for q in queries]
    # exact search ran with the same filter, for dense and hybrid only
    assert ("dense", True, True) in fake.calls and ("hybrid", False, True) in fake.calls
    assert not any(mode == "bm25" and ex for mode, _, ex in fake.calls)


def _report(recall: float, quantized: bool) -> SpeedReport:
    lat = [
        Latency("dense k=100", 10, 5.0, 7.0, 5.5, recall),
        Latency("exact dense k=100", 10, 9.0, 12.0, 9.5),
        Latency("bm25 k=100", 10, 1.0, 2.0, 1.5),
    ]
    q = QuantizedVectorsReport("int8", 3.0, 1.0, lat[:1] + lat[2:], 900.0, 50.0)
    return SpeedReport(
        "m", 300, 100.0, 100, 3.0, 100.0, 2.0, 0.3, latencies=lat, rss_mb=800.0,
        index_disk_mb=40.0, quantized_vectors=q if quantized else None,
    )  # fmt: skip


def test_tables_show_recall_beside_latency():
    table = "\n".join(side_by_side([_report(0.987, True), _report(0.991, False)]))
    assert "| dense k=100 Recall@100 vs exact | 0.987 | 0.991 |" in table
    assert "| exact dense k=100 p50 / p99 ms | 9.0 / 12.0 | 9.0 / 12.0 |" in table
    assert "bm25 k=100 Recall" not in table
    assert "| int8 vectors: dense k=100 Recall@100 vs exact | 0.987 | - |" in table
    assert "| int8 vectors: index on disk, MB | 50 | - |" in table
    md = "\n".join(_report(0.987, True).markdown())
    assert "| dense k=100 | 5.0 / 7.0 | 0.987 | 5.0 / 7.0 | 0.987 |" in md
    assert "| exact dense k=100 | 9.0 / 12.0 | exact | - | - |" in md
    assert "| index on disk, MB | 40 |  | 50 |  |" in md and "allocated" in md
    assert "Recall@100 vs exact" in "\n".join(_report(0.5, False).lines())


def test_quantized_build_reuses_the_stored_vectors(
    tmp_path, sample_catalog, tiny_encoder, monkeypatch
):
    fp32 = IndexLocation(path=tmp_path / "fp32")
    index_catalog(sample_catalog, fp32, encoder=tiny_encoder, progress=False)
    products = [p for b in read_catalog(sample_catalog) for p in b.products]
    reused = ReusedDocumentVectors.from_index(tiny_encoder, fp32, products)
    assert reused.fingerprint == tiny_encoder.fingerprint and reused.dim == tiny_encoder.dim

    def no_encoding(*args, **kwargs):
        raise AssertionError("the product tower ran: the vectors should have been reused")

    q8 = IndexLocation(path=tmp_path / "q8")
    with monkeypatch.context() as m:
        m.setattr(type(tiny_encoder), "encode_document", no_encoding)
        index_catalog(sample_catalog, q8, encoder=reused, quantize_vectors="int8", progress=False)
    with (
        Retriever.open(fp32.path, encoder=tiny_encoder) as a,
        Retriever.open(q8.path, encoder=tiny_encoder) as b,
    ):
        assert b.manifest["vectors"] == {"quantization": "int8"}
        assert b.manifest["model"] == a.manifest["model"]
        ids = [p.product_id for p in products]
        va, vb = a.vectors(ids), b.vectors(ids)
        assert len(vb) == len(va) == 300
        for pid in ids:
            np.testing.assert_allclose(vb[pid], va[pid], atol=1e-6)
        # exact search on the quantized build reads the same fp32 vectors
        for q in ("cordless drill", "white paint", "faucet"):
            for mode in ("dense", "hybrid"):
                ea = [h.product_id for h in a.search(q, k=100, mode=mode, exact=True)]
                eb = [h.product_id for h in b.search(q, k=100, mode=mode, exact=True)]
                assert ea == eb, (q, mode)
    with pytest.raises(ShopsearchError, match="did not store"):
        reused.encode_document([product_text(products[0]) + " changed"])


@pytest.mark.slow
def test_bench_index_reports_recall_against_exact_and_the_int8_build(
    tmp_path, sample_catalog, tiny_model
):
    out = tmp_path / "bench"
    argv = [str(sample_catalog), "--workdir", str(out), "--model", str(tiny_model)]
    argv += ["--n-queries", "10", "--encoder-sample", "100", "--quantize-vectors", "int8"]
    result = CliRunner().invoke(bench_index_cmd, argv)
    assert result.exit_code == 0, result.output
    speed = json.loads((out / "speed.json").read_text())
    lats = {lat["name"]: lat for lat in speed["latencies"]}
    for mode in ("dense", "hybrid"):
        for name in (f"{mode} k=100", f"{mode} k=100+filter"):
            # 300 products: under Qdrant's full-scan threshold, so HNSW search is exact too
            assert lats[name]["recall_vs_exact"] == 1.0, name
            assert lats[f"exact {name}"]["n"] == 10
            assert lats[f"exact {name}"]["recall_vs_exact"] is None
    assert lats["bm25 k=100"]["recall_vs_exact"] is None
    # ann-benchmarks' k-NN recall (scores, ties counted) on the dense rows, where scores are
    # similarities; hybrid's fused scores are not compared
    assert lats["dense k=100"]["knn_recall"] == 1.0 == lats["dense k=100+filter"]["knn_recall"]
    assert lats["hybrid k=100"]["knn_recall"] is None
    q = speed["quantized_vectors"]
    assert q["quantization"] == "int8" and q["index_disk_mb"] > 0 and q["rss_mb"] > 0
    # a separate search process was measured for each build (after its queries <= its peak),
    # after opening and after each mode's pass; its peak only grows, and ends at the total
    for memory in (speed["search_memory"], q["search_memory"]):
        assert 0 < memory["after_mb"] <= memory["peak_mb"]
        assert memory["anon_mb"] > 0 and memory["file_mb"] > 0
        assert memory["anon_mb"] + memory["file_mb"] <= memory["after_mb"] + 1
        names = [name for name, _, _ in memory["phases"]]
        assert names == ["opening", "dense", "dense+filter", "bm25", "bm25+filter", "hybrid",
                         "hybrid+filter"]  # fmt: skip
        assert abs(memory["phases"][-1][2] - memory["peak_mb"]) < 1  # the last phase's peak
    assert "search process alone" in (out / "speed.md").read_text()
    assert 0 < q["index_disk_allocated_mb"] <= q["index_disk_mb"]
    qlats = {lat["name"]: lat for lat in q["latencies"]}
    # the int8 build is measured against its own exact search (same fp32 vectors, int8 copy
    # ignored): two builds break ties between same-text products differently
    assert set(qlats) == {n for n in lats if not n.startswith("query encoder")}
    assert all(
        0.9 <= qlats[n]["recall_vs_exact"] <= 1.0
        for n in qlats
        if "bm25" not in n and not n.startswith("exact")
    )
    assert (out / "index-int8-vectors").is_dir()
    md = (out / "speed.md").read_text()
    assert "| query | p50 / p99 ms | Recall@100 vs exact | int8 vectors: p50 / p99 ms |" in md
    assert "| exact dense k=100 |" in md and "index on disk, MB" in md
    assert "Recall@100 vs exact" in result.output
    # --memory-only measures the same indexes again with the saved queries, building nothing
    saved = json.loads((out / "bench-queries.json").read_text())
    assert len(saved["queries"]) == 10 and saved["filter"] and saved["tower"]["backend"] == "torch"
    assert saved["indexes"] == ["index", "index-int8-vectors"]
    from research.bench_speed import bench_queries

    # the same arguments derive the same queries and filter (what a run from before the file
    # was saved falls back on)
    _, _, derived, warm, (flt, _) = bench_queries(sample_catalog, None, 10, 100, 0)
    assert derived == saved["queries"] and json.loads(json.dumps(flt)) == saved["filter"]
    assert warm and warm == saved["warm"]
    builds = sorted(out.glob("index*/builds/*"))
    speed_json = (out / "speed.json").read_text()
    again = CliRunner().invoke(bench_index_cmd, [*argv, "--memory-only"])
    assert again.exit_code == 0, again.output
    (written,) = out.glob("search-memory-*.json")
    memory = json.loads(written.read_text())
    assert set(memory) == {"index", "index-int8-vectors"}
    assert [p[0] for p in memory["index"]["phases"]] == [
        p[0] for p in speed["search_memory"]["phases"]
    ]
    assert "queries and the filter of the run that built" in again.output
    # nothing built again (opening an index may touch its files) and the report kept
    assert sorted(out.glob("index*/builds/*")) == builds and len(builds) == 2
    assert (out / "speed.json").read_text() == speed_json
    # --search-only measures latency and recall again too, on the same indexes and queries
    again = CliRunner().invoke(bench_index_cmd, [*argv, "--search-only"])
    assert again.exit_code == 0, again.output
    (written,) = (f for f in out.glob("search-*.json") if "memory" not in f.name)
    measured = json.loads(written.read_text())
    assert set(measured) == {"index", "index-int8-vectors"}
    for name, report in measured.items():
        got = {lat["name"]: lat for lat in report["latencies"]}
        assert set(got) == set(qlats), name  # the rows bench-index measured, no encoder row
        assert all(lat["n"] == 10 for lat in got.values())
        assert got["dense k=100+filter"]["recall_vs_exact"] == 1.0  # full scan at 300
        assert report["search_memory"]["peak_mb"] > 0
    table = written.with_suffix(".md").read_text()
    assert "| | index | index-int8-vectors |" in table and "| dense k=100 p50 / p99 ms |" in table
    assert sorted(out.glob("index*/builds/*")) == builds
    both = CliRunner().invoke(bench_index_cmd, [*argv, "--memory-only", "--search-only"])
    assert both.exit_code == 2 and "give one" in both.output
    other = CliRunner().invoke(bench_index_cmd, [*argv, "--memory-only", "--variant", "onnx:int8"])
    assert isinstance(other.exception, ShopsearchError) and "was measured with" in str(
        other.exception
    )
    # a damaged queries file is one line, not a traceback
    (out / "bench-queries.json").write_text('{"queries": ["a"')
    broken = CliRunner().invoke(bench_index_cmd, [*argv, "--memory-only"])
    assert isinstance(broken.exception, ShopsearchError)
    assert "not a bench-queries file" in str(broken.exception)
    empty = CliRunner().invoke(bench_index_cmd, [*argv[:1], "--workdir", str(tmp_path / "none"),
                                                 "--memory-only"])  # fmt: skip
    assert isinstance(empty.exception, ShopsearchError)  # the CLI prints it as one line
    assert "run bench-index without --memory-only or --search-only first" in str(empty.exception)


@pytest.fixture(scope="module")
def optimized(tmp_path_factory, tiny_model):
    """A copy of the tiny bi-encoder with onnx/model.onnx and its int8 copy."""
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("opt") / "model"
    shutil.copytree(tiny_model, folder)
    rb.optimize(folder, backend="onnx", quantize="int8")
    return folder


@pytest.mark.slow
def test_bench_index_runs_variants_side_by_side(tmp_path, optimized):
    from rerank.cross_encoder import new_cross_encoder

    runner = CliRunner()
    catalog = write_sample_catalog(tmp_path / "catalog.csv", n=80)
    rr = tmp_path / "rr"
    new_cross_encoder(optimized, device="cpu").save_pretrained(str(rr))
    rb.optimize(rr, backend="onnx", quantize="int8")
    args = ["bench-index", str(catalog), "--workdir", str(tmp_path / "b"), "--model"]
    args += [str(optimized), "--reranker", str(rr), "--n-queries", "10"]
    args += ["--encoder-sample", "100", "--variant", "torch", "--variant", "onnx:int8"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "b" / "compare.md").read_text()
    assert "| | torch | onnx int8 |" in table
    for row in ("indexing, items/s", "rerank 50 candidates", "hybrid + rerank 50", "memory"):
        assert row in table
    speed = json.loads((tmp_path / "b" / "onnxint8" / "speed.json").read_text())
    assert speed["backend"] == "onnx" and speed["quantize"] == "int8" and speed["rss_mb"] > 0
    bad = runner.invoke(main, [*args[:-1], "torch:int8"])
    assert bad.exit_code == 2 and "needs --backend onnx or openvino" in bad.output


def _fail(message: str) -> None:
    raise ShopsearchError(message)


@pytest.mark.integration
def test_run_isolated_runs_in_another_process_and_keeps_errors():
    import os

    from research.bench_speed import run_isolated

    assert run_isolated(os.getpid) != os.getpid()
    with pytest.raises(ShopsearchError, match="one line for the user"):
        run_isolated(_fail, "one line for the user")

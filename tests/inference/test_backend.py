"""ONNX Runtime / OpenVINO backends: export, int8, one-line errors, manifest probes, threads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from catalog.sample import write_sample_catalog
from core.errors import ShopsearchError
from indexer.build import index_catalog
from inference import backend as rb
from retrieval.encoder import PROBE_TEXTS, BiEncoder
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from shopsearch.cli import main

pytest.importorskip("onnxruntime")

TEXTS = ["cordless drill", "white paint for walls", "kitchen faucet chrome", "x"]


@pytest.fixture(scope="module")
def optimized(tmp_path_factory, tiny_model) -> Path:
    """A copy of the tiny bi-encoder with onnx/model.onnx and its int8 copy."""
    folder = tmp_path_factory.mktemp("opt") / "model"
    shutil.copytree(tiny_model, folder)
    written = rb.optimize(folder, backend="onnx", quantize="int8")
    assert [p.name for p in written] == ["model.onnx", f"model_qint8_{rb.cpu_isa()}.onnx"]
    return folder


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def test_onnx_fp32_equals_torch_and_int8_is_close_but_not_equal(optimized):
    torch_vecs = BiEncoder(optimized, device="cpu").encode_query(TEXTS)
    fp32 = BiEncoder(optimized, backend="onnx")
    int8 = BiEncoder(optimized, backend="onnx", quantize="int8")
    assert fp32.runtime["file"] == "onnx/model.onnx"
    assert int8.runtime["file"].startswith("onnx/model_qint8_")
    v32, v8 = fp32.encode_query(TEXTS), int8.encode_query(TEXTS)
    np.testing.assert_allclose(v32, torch_vecs, atol=1e-5)
    assert v8.dtype == np.float32 and v8.shape == torch_vecs.shape
    # really int8, not the fp32 file again: ten times further from torch than fp32 ONNX is
    assert np.abs(v8 - torch_vecs).max() > max(1e-5, 10 * np.abs(v32 - torch_vecs).max())
    assert _cos(v8, torch_vecs).min() > 0.98
    np.testing.assert_allclose(np.linalg.norm(v8, axis=1), 1.0, atol=1e-5)
    docs = int8.encode_document(TEXTS)
    assert docs.shape == (len(TEXTS), int8.dim)
    # same weights, same fingerprint: the index check is the probes', not the fingerprint's
    assert int8.fingerprint == fp32.fingerprint
    assert int8.describe()["backend"] == "onnx" and int8.describe()["quantize"] == "int8"
    # a bi-encoder's int8 copy quantizes every weight MatMul (only attention's stay fp32)
    import onnx

    graph = onnx.load(str(optimized / int8.runtime["file"])).graph
    weights = {i.name for i in graph.initializer}
    assert not [
        n.name for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)
    ]
    # ONNX Runtime's transformer fusions: one QAttention per layer, embeddings + layer norm
    ops = [n.op_type for n in graph.node]
    assert ops.count("QAttention") == 2 and ops.count("EmbedLayerNormalization") == 1
    assert "Softmax" not in ops


def test_backend_never_exported_is_a_one_line_error_naming_the_command(tiny_model):
    with pytest.raises(ShopsearchError, match=r"shopsearch optimize .* --backend onnx") as err:
        BiEncoder(tiny_model, backend="onnx")
    assert "\n" not in str(err.value)
    with pytest.raises(ShopsearchError, match="--quantize int8"):
        rb.model_file(tiny_model, "onnx", "int8")
    with pytest.raises(ShopsearchError, match="needs --backend onnx or openvino"):
        BiEncoder(tiny_model, quantize="int8")
    with pytest.raises(ShopsearchError, match="unknown backend"):
        BiEncoder(tiny_model, backend="tensorrt")
    with pytest.raises(ShopsearchError, match="runs on the CPU"):
        BiEncoder(tiny_model, backend="onnx", device="cuda")


def test_threads_default_to_physical_cores_and_are_passed(monkeypatch, optimized):
    cores = rb.cpu_threads()
    assert 1 <= cores <= (torch.get_num_threads() or 64) + 64
    monkeypatch.setenv("SHOPSEARCH_THREADS", "1")  # the library reads no environment
    assert rb.cpu_threads() == cores
    assert BiEncoder(optimized, backend="onnx").runtime["threads"] == cores
    enc = BiEncoder(optimized, backend="onnx", quantize="int8", threads=1)
    assert enc.runtime["threads"] == 1
    assert BiEncoder(optimized, backend="onnx", threads=2).runtime["threads"] == 2
    # idle workers sleep: spinning ones would take the cores from retrieval and the reranker
    session = rb._first_module(enc.model).model.session
    assert (
        session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        == "0"
    )


def test_manifest_records_backend_and_probes_and_int8_opens_an_fp32_index(
    optimized, sample_catalog, tmp_path
):
    loc = IndexLocation(path=tmp_path / "idx")
    index_catalog(sample_catalog, loc, model=str(optimized), progress=False)
    with Retriever.open(loc.path, backend="onnx", quantize="int8") as r:
        manifest = r.manifest
        assert manifest["model"]["backend"] == "torch" and manifest["model"]["quantize"] is None
        assert manifest["probes"]["texts"] == list(PROBE_TEXTS)
        assert np.asarray(manifest["probes"]["vectors"]).shape == (len(PROBE_TEXTS), r.encoder.dim)
        assert r.encoder.check_probes(manifest, "here") > 0.98
        now = r.encoder.encode_query(list(PROBE_TEXTS))
        assert np.abs(now - np.asarray(manifest["probes"]["vectors"])).max() > 1e-5  # not equal
        assert r.search("cordless drill", k=5)
    # an int8 build records it
    loc8 = IndexLocation(path=tmp_path / "idx8")
    index_catalog(
        sample_catalog, loc8, model=str(optimized), backend="onnx", quantize="int8", progress=False
    )
    with Retriever.open(loc8.path) as r:  # an fp32 torch query tower over an int8-built index
        assert r.manifest["model"]["backend"] == "onnx"
        assert r.manifest["model"]["quantize"] == "int8"
        assert r.manifest["model"]["file"].startswith("onnx/model_qint8_")


def test_a_query_tower_whose_vectors_differ_is_refused(
    optimized, tiny_model, sample_catalog, tmp_path
):
    from tiny_models import build_tiny_bert

    loc = IndexLocation(path=tmp_path / "idx")
    index_catalog(sample_catalog, loc, model=str(optimized), progress=False)
    # a stale export: the int8 file now holds another model's weights (same fingerprint, since
    # the fingerprint hashes model.safetensors)
    stale = tmp_path / "stale"
    shutil.copytree(optimized, stale)
    # same tokenizer and shapes, other weights (as after retraining)
    vocab = (tiny_model.parent / "hf" / "vocab.txt").read_text().split()
    vocab = [w for w in vocab if not w.startswith("[")]
    other = build_tiny_bert(tmp_path / "other", vocab, seed=7)
    rb.optimize(other, backend="onnx")
    int8 = next((stale / "onnx").glob("model_qint8_*.onnx"))
    shutil.copy(other / "onnx" / "model.onnx", int8)
    with pytest.raises(ShopsearchError, match=r"probe texts .* \(cosine -?0\.\d+ < 0\.98\)") as err:
        Retriever.open(loc.path, model=str(stale), backend="onnx", quantize="int8")
    assert "\n" not in str(err.value)
    # an index without probes (built before them) still opens
    enc = BiEncoder(stale, backend="onnx", quantize="int8")
    assert enc.check_probes({"model": {}}, "old") is None


def test_reranker_on_onnx_scores_like_torch_and_int8_close(tmp_path, tiny_model):
    from rerank.cross_encoder import Reranker, new_cross_encoder, write_settings

    torch.manual_seed(0)
    folder = tmp_path / "rr"
    new_cross_encoder(tiny_model, device="cpu").save_pretrained(str(folder))
    write_settings(folder, retrieval_weight=0.3)
    pairs = [("drill", "cordless drill red"), ("paint", "white paint"), ("x", "y z")] * 3
    with pytest.raises(ShopsearchError, match="shopsearch optimize"):
        Reranker.load(folder, backend="onnx")
    rb.optimize(folder, backend="onnx", quantize="int8")
    ref = Reranker.load(folder, device="cpu").score_pairs(pairs)
    fp32 = Reranker.load(folder, backend="onnx")
    int8 = Reranker.load(folder, backend="onnx", quantize="int8")
    assert fp32.runtime["backend"] == "onnx" and int8.runtime["quantize"] == "int8"
    assert fp32.fingerprint == int8.fingerprint
    np.testing.assert_allclose(fp32.score_pairs(pairs), ref, atol=1e-4)
    s8 = int8.score_pairs(pairs)
    assert not np.allclose(s8, ref, atol=1e-6)
    assert np.abs(s8 - ref).max() < 0.1 * (np.abs(ref).max() + 1e-3) + 0.05
    assert int8.retrieval_weight == 0.3
    # the first layer's feed-forward output stays fp32 in a reranker's int8 copy, and only it:
    # every other MatMul with a weight (an initializer input) is quantized
    import onnx

    graph = onnx.load(str(next((folder / "onnx").glob("model_qint8_*.onnx")))).graph
    weights = {i.name for i in graph.initializer}
    fp32_with_weight = [
        n.name for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)
    ]
    assert len(fp32_with_weight) == 1 and fp32_with_weight[0].endswith(
        "layer.0/output/dense/MatMul"
    )
    # attention fused and quantized whole (QAttention), one per layer; the rest MatMulInteger
    assert sum(n.op_type == "QAttention" for n in graph.node) == 2
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) >= 6
    # --all-int8 quantizes that one too, and is refused without --quantize int8
    with pytest.raises(ShopsearchError, match="--all-int8 needs --quantize int8"):
        rb.optimize(folder, backend="onnx", all_int8=True)
    rb.optimize(folder, backend="onnx", quantize="int8", all_int8=True)
    graph = onnx.load(str(next((folder / "onnx").glob("model_qint8_*.onnx")))).graph
    weights = {i.name for i in graph.initializer}
    assert not [
        n.name for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)
    ]
    s8 = Reranker.load(folder, backend="onnx", quantize="int8").score_pairs(pairs)
    assert np.abs(s8 - ref).max() < 0.1 * (np.abs(ref).max() + 1e-3) + 0.05


@pytest.mark.slow
def test_openvino_backend_runs_the_export(optimized):
    pytest.importorskip("openvino")
    written = rb.optimize(optimized, backend="openvino", quantize="int8")
    assert any(p.name == "openvino_model.xml" for p in written)
    ref = BiEncoder(optimized, device="cpu").encode_query(TEXTS)
    ov32 = BiEncoder(optimized, backend="openvino").encode_query(TEXTS)
    ov8 = BiEncoder(optimized, backend="openvino", quantize="int8").encode_query(TEXTS)
    np.testing.assert_allclose(ov32, ref, atol=1e-4)
    assert _cos(ov8, ref).min() > 0.98 and np.abs(ov8 - ref).max() > 1e-5


def test_cli_optimize_index_info_and_search_with_backend(tmp_path, tiny_model):
    runner = CliRunner()
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    catalog = write_sample_catalog(tmp_path / "catalog.csv", n=60)
    index = tmp_path / "index"
    base = ["index", str(catalog), "--index", str(index), "--model", str(model), "--no-progress"]
    result = runner.invoke(main, [*base, "--backend", "onnx", "--quantize", "int8"])
    assert result.exit_code == 2
    assert "error:" in result.stderr and f"shopsearch optimize {model}" in result.stderr
    result = runner.invoke(main, ["optimize", str(model), "--all-int8"])
    assert result.exit_code == 2 and "--all-int8 needs --quantize int8" in result.stderr
    result = runner.invoke(main, ["optimize", str(model), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.stdout and "qint8" in result.stdout
    result = runner.invoke(main, [*base, "--backend", "onnx", "--quantize", "int8", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(main, ["info", "--index", str(index)]).stdout)
    assert info["model"]["backend"] == "onnx" and info["model"]["quantize"] == "int8"
    assert info["probes"] == {"texts": len(PROBE_TEXTS), "min_cosine": 0.98}
    for extra in ([], ["--backend", "onnx"], ["--backend", "onnx", "--quantize", "int8"]):
        args = ["search", "cordless drill", "--index", str(index), "--json", *extra]
        result = runner.invoke(main, [*args, "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["hits"]
    result = runner.invoke(main, ["search", "drill", "--index", str(index), "--quantize", "int8"])
    assert result.exit_code == 2 and "needs --backend onnx or openvino" in result.stderr


def test_int8_scalar_quantized_vectors_on_edge_and_server_agree(
    tiny_encoder, sample_catalog, tmp_path
):
    from qdrant_client import QdrantClient

    edge = IndexLocation(path=tmp_path / "q8")
    index_catalog(
        sample_catalog, edge, encoder=tiny_encoder, quantize_vectors="int8", progress=False
    )
    # the embedded store keeps the fp32 vectors memory-mapped (not loaded into RAM)
    segments = [json.loads(p.read_text()) for p in edge.path.rglob("segment.json")]
    kinds = {s["config"]["vector_data"]["dense"]["storage_type"] for s in segments}
    assert segments and kinds <= {"Mmap", "ChunkedMmap"}, kinds
    client = QdrantClient(":memory:")
    server = IndexLocation(client=client)
    index_catalog(
        sample_catalog, server, encoder=tiny_encoder, quantize_vectors="int8", progress=False
    )
    name = next(c.name for c in client.get_collections().collections)
    params = client.get_collection(name).config.params.vectors["dense"]
    assert params.quantization_config.scalar.type.value == "int8"
    assert params.on_disk  # the fp32 vectors: memory-mapped, the int8 copy in RAM
    with (
        Retriever.open(edge.path, encoder=tiny_encoder) as a,
        Retriever.open(client=client, encoder=tiny_encoder) as b,
    ):
        assert a.manifest["vectors"] == b.manifest["vectors"] == {"quantization": "int8"}
        for q in ["cordless drill", "white paint", "faucet"]:
            for mode in ("dense", "hybrid"):
                ha, hb = a.search(q, k=10, mode=mode), b.search(q, k=10, mode=mode)
                assert [h.product_id for h in ha] == [h.product_id for h in hb], (q, mode)
    # upsert keeps the index's setting
    index_catalog(sample_catalog, edge, mode="upsert", encoder=tiny_encoder, progress=False)
    with Retriever.open(edge.path, encoder=tiny_encoder) as a:
        assert a.manifest["vectors"] == {"quantization": "int8"}
    with pytest.raises(ShopsearchError, match="unknown vector quantization"):
        index_catalog(sample_catalog, edge, encoder=tiny_encoder, quantize_vectors="int4")


def test_keep_fp32_that_matches_nothing_is_said(optimized, tmp_path):
    src = tmp_path / "model.onnx"
    shutil.copy(optimized / "onnx" / "model.onnx", src)
    with pytest.warns(UserWarning, match="no MatMul .* matches"):
        out = rb.quantize_onnx(src, keep_fp32=(r"no-such-node$",))
    assert out.is_file() and out.parent == tmp_path


def test_int8_without_fusion_quantizes_the_plain_graph_and_says_so(optimized, tmp_path):
    """Attention that cannot fuse (here: a head count that does not divide the hidden size)
    is said in a warning, and the int8 copy still quantizes every weight MatMul."""
    import onnx

    src = tmp_path / "model.onnx"
    shutil.copy(optimized / "onnx" / "model.onnx", src)
    with pytest.warns(UserWarning, match="did not fuse"):
        out = rb.quantize_onnx(src, attention=(3, 32))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QAttention" not in ops and ops.count("Softmax") == 2
    assert ops.count("MatMulInteger") >= 8
    assert not list(tmp_path.glob(".quantize-*"))  # the work folder is gone
    ref = BiEncoder(optimized, device="cpu").encode_query(TEXTS)
    plain = tmp_path / "plain"
    shutil.copytree(optimized, plain)
    shutil.copy(out, plain / "onnx" / out.name)
    vecs = BiEncoder(plain, backend="onnx", quantize="int8").encode_query(TEXTS)
    assert _cos(vecs, ref).min() > 0.98


def _token_feed(folder: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    feed = dict(tok(TEXTS, padding=True, return_tensors="np"))
    assert feed["attention_mask"].min() == 0  # some rows padded
    return {k: v.astype(np.int64) for k, v in feed.items()}


def test_fused_export_computes_what_the_plain_one_does(optimized, tmp_path):
    """The fused fp32 graph gives the export's outputs on real, padded token rows."""
    import onnx

    src = optimized / "onnx" / "model.onnx"
    out = tmp_path / "fused.onnx"
    assert rb.fuse_attention(src, out, 2, 32)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("Attention") == 2 and "SkipLayerNormalization" in ops
    feed = _token_feed(optimized)
    names = {i.name for i in onnx.load(str(src)).graph.input}
    feed = {k: v for k, v in feed.items() if k in names}
    keep = feed["attention_mask"].astype(bool)
    want = rb._ort_outputs(src, feed)[keep]
    np.testing.assert_allclose(rb._ort_outputs(out, feed)[keep], want, atol=1e-4)
    # a head count the graph does not have fuses nothing and writes nothing
    assert not rb.fuse_attention(src, tmp_path / "x.onnx", 4, 32)
    assert not (tmp_path / "x.onnx").exists()


def test_a_fused_graph_that_computes_otherwise_or_fails_is_not_used(
    optimized, tmp_path, monkeypatch
):
    """The check after fusing rejects a graph whose outputs differ, and an optimizer error
    leaves the unfused int8 copy (with a warning), not a failed optimize."""
    import onnx

    src = optimized / "onnx" / "model.onnx"
    real = rb._ort_outputs

    def off_when_fused(file, feed):
        got = real(file, feed)
        return got + 0.1 if Path(file).name == "fused.onnx" else got

    monkeypatch.setattr(rb, "_ort_outputs", off_when_fused)
    assert not rb.fuse_attention(src, tmp_path / "fused.onnx", 2, 32)
    assert not (tmp_path / "fused.onnx").exists()
    monkeypatch.setattr(rb, "_ort_outputs", real)

    import onnxruntime.transformers.optimizer as ort_optimizer

    def broken(*args, **kwargs):
        raise RuntimeError("cannot optimize this graph")

    monkeypatch.setattr(ort_optimizer, "optimize_model", broken)
    copy = tmp_path / "model.onnx"
    shutil.copy(src, copy)
    with pytest.warns(UserWarning, match="did not fuse"):
        out = rb.quantize_onnx(copy, attention=(2, 32))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QAttention" not in ops and ops.count("MatMulInteger") >= 8


def test_export_restores_the_attention_implementation(tmp_path, tiny_model, monkeypatch):
    """Exported eager with the 4-D mask when that computes the same, else with the model's
    own attention; either way the loaded model keeps its implementation afterwards."""
    st = rb.load_torch_model(tiny_model)
    hf = st[0].model
    original = hf.config._attn_implementation
    seen = []
    real_export = torch.onnx.export

    def spy(wrapper, *args, **kwargs):
        seen.append((wrapper.mask_4d, hf.config._attn_implementation))
        return real_export(wrapper, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    rb.export_onnx(st, tmp_path / "a")
    assert seen[-1] == (True, "eager") and hf.config._attn_implementation == original
    # a mask the model does not compute the same with: the plain export, on its own attention
    monkeypatch.setattr(rb, "additive_mask", lambda mask: torch.zeros(mask.shape[0], 1, 1, 1))
    rb.export_onnx(st, tmp_path / "b")
    assert seen[-1] == (False, original) and hf.config._attn_implementation == original
    assert (tmp_path / "b" / "onnx" / "model.onnx").is_file()
    assert not list((tmp_path / "b" / "onnx").glob("*.tmp"))

"""``shopsearch optimize``: write the ONNX / OpenVINO (int8) copy of a model into its folder."""

from __future__ import annotations

import click


@click.command("optimize")
@click.argument("model")
@click.option(
    "--backend",
    type=click.Choice(["onnx", "openvino"]),
    default="onnx",
    show_default=True,
    help="onnx: onnx/model.onnx for ONNX Runtime; openvino: also openvino/openvino_model.xml.",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="Also write the dynamically quantized int8 copy (onnx/model_qint8_<isa>.onnx).",
)
@click.option(
    "--all-int8",
    is_flag=True,
    help="With --quantize int8 on a reranker: quantize the one MatMul kept in fp32 for "
    "closeness to fp32 too (faster on a small reranker; check its quality with bench). A "
    "bi-encoder's int8 copy has every MatMul int8 already.",
)
def optimize_cmd(model: str, backend: str, quantize: str | None, all_int8: bool) -> None:
    """Export MODEL (a bi-encoder or reranker folder) for --backend onnx|openvino.

    The files go into MODEL's folder the way sentence-transformers lays them out; index,
    search, serve and the benchmarks then run them with --backend (and --quantize int8).
    """
    import time

    from inference.backend import optimize

    start = time.perf_counter()
    written = optimize(model, backend=backend, quantize=quantize, all_int8=all_int8)
    for file in written:
        click.echo(f"wrote {file} ({file.stat().st_size / 1e6:.1f} MB)")
    click.echo(f"done in {time.perf_counter() - start:.1f} s")


COMMANDS = [optimize_cmd]

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
def optimize_cmd(model: str, backend: str, quantize: str | None) -> None:
    """Export MODEL (a bi-encoder or reranker folder) for --backend onnx|openvino.

    The files go into MODEL's folder the way sentence-transformers lays them out; index,
    search, serve and the benchmarks then run them with --backend (and --quantize int8).
    """
    import time

    from retrieval.backend import optimize

    start = time.perf_counter()
    written = optimize(model, backend=backend, quantize=quantize)
    for file in written:
        click.echo(f"wrote {file} ({file.stat().st_size / 1e6:.1f} MB)")
    click.echo(f"done in {time.perf_counter() - start:.1f} s")


COMMANDS = [optimize_cmd]

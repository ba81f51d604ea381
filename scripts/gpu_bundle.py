"""Prepare what ``scripts/gpu_train.py`` needs on a GPU machine that has torch and nothing else.

    python scripts/gpu_bundle.py BENCHMARK_DIR OUT_DIR [--candidates-index INDEX_DIR] [--wheels]

Writes ``OUT_DIR/judgments.json.gz`` (queries, grades and product texts), ``OUT_DIR/minilm-fp16``
(the packaged all-MiniLM-L6-v2 with float16 weights, to fit a 64 MiB transfer) and, with
``--candidates-index``, ``OUT_DIR/candidates.json.gz``: that index's hybrid top 50 for every train
and validation query (the reranker's negatives, as retrieval will serve them), and with
``--wheels``, ``OUT_DIR/.whl``: the wheels of ``datasets`` and ``accelerate`` (the trainers' needs)
and their dependencies that transformers does not bring, for ``--python-version`` /
``--platform`` (``gpu_train.py --wheels OUT_DIR/.whl`` installs them there).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from evaluation.data import judgments_from, load_benchmark  # noqa: E402
from inference.models import default_model_path

#: What the trainers need beyond torch + sentence-transformers + transformers (no deps resolved:
#: accelerate would pull torch).
TRAIN_WHEELS = [
    "datasets",
    "accelerate",
    "dill",
    "multiprocess",
    "xxhash",
    "pyarrow",
    "pandas",
    "fsspec",
    "psutil",
    "python-dateutil",
    "six",
    "tzdata",
]


def download_wheels(out: Path, python_version: str, platform: str) -> Path:
    """``pip download`` of :data:`TRAIN_WHEELS` (binary only, no deps) into ``out/.whl``."""
    import subprocess

    dest = out / ".whl"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--platform", platform, "-d", str(dest)]
    subprocess.run([*cmd, *TRAIN_WHEELS], check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("benchmark")
    ap.add_argument("out")
    ap.add_argument("--candidates-index", default=None)
    ap.add_argument("--wheels", action="store_true", help="also fetch the trainers' wheels")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    ap.add_argument("--platform", default="manylinux2014_x86_64", help="the GPU machine's")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judgments = judgments_from(load_benchmark(args.benchmark))
    judgments.save(out / "judgments.json.gz")
    src, dst = default_model_path(), out / "minilm-fp16"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    weights = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.to(torch.float16).contiguous() for k, v in weights.items()},
        str(dst / "model.safetensors"),
        metadata={"format": "pt"},
    )
    if args.candidates_index:
        from retrieval.retriever import Retriever

        found: dict[str, list[str]] = {}
        with Retriever.open(args.candidates_index) as r:
            for split in ("train", "validation"):
                items = sorted(judgments.queries[split].items())
                for i in range(0, len(items), 64):
                    chunk = items[i : i + 64]
                    hits = r.search_batch([t for _, t in chunk], k=50, mode="hybrid")
                    found.update(
                        {
                            q: [h.product_id for h in hs]
                            for (q, _), hs in zip(chunk, hits, strict=True)
                        }
                    )
        with gzip.open(out / "candidates.json.gz", "wt") as fh:
            json.dump(found, fh)
    if args.wheels:
        download_wheels(out, args.python_version, args.platform)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

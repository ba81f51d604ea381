"""Train both models on a GPU machine that has only torch, sentence-transformers and transformers.

Runs shopsearch's own training functions (``retrieval.train.train_retriever``,
``rerank.train.train_reranker``: sentence-transformers' trainers) on a Judgments file
(``evaluation.labels``, written by ``scripts/gpu_bundle.py``) and a starting bi-encoder folder:
trains the retriever, mines reranker negatives from the fine-tuned retriever's top 50 (brute
force on the GPU; or takes ``--candidates``), trains the reranker (a standard ``CrossEncoder``
folder), and writes both models in float16, split in pieces of at most 16,000,000 bytes inside a
tar (the machine returns at most 8 files of at most 16 MiB). ``scripts/gpu_unpack.py`` reassembles
them.

    python3 scripts/gpu_train.py --judgments J.json.gz --base MODEL_DIR --work DIR --out OUT \\
        [--wheels .whl]

**The trainers need ``datasets`` and ``accelerate``** (the ``train`` extra), which such a machine
lacks and cannot download. Carry them as wheels, fetched on a machine with a package index:

    pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --platform manylinux2014_x86_64 -d .whl datasets accelerate \\
        dill multiprocess xxhash pyarrow pandas fsspec psutil python-dateutil six tzdata

(``scripts/gpu_bundle.py --wheels`` runs exactly that into its output folder. ``--no-deps``
because accelerate depends on torch: resolving it would fetch a multi-GB CUDA torch the machine
already has; the list is datasets' and accelerate's own dependencies minus what transformers
already brings. ``--python-version`` and ``--platform`` must match the GPU machine's Python and
OS. ``tensorboard`` is optional: without it, no ``logs/``.) Then run
this script with ``--wheels .whl``: when ``datasets`` or ``accelerate`` cannot be imported it
first runs ``pip install --no-index --find-links .whl datasets accelerate``.

``--quick`` is a dry run with tiny settings (e.g. on a CPU, on tiny models and tiny data).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from evaluation.labels import Judgments  # noqa: E402

PIECE = 16_000_000


def ensure_train_packages(wheels: str | None) -> None:
    """Installs datasets + accelerate from a folder of wheels when they are missing."""
    missing = [m for m in ("datasets", "accelerate") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if not wheels:
        raise SystemExit(
            f"missing {', '.join(missing)}: carry their wheels and pass --wheels DIR "
            "(see this script's docstring)"
        )
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, *missing]
    print("installing", " ".join(missing), "from", wheels, flush=True)
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


def to_fp32(src: Path, dst: Path) -> Path:
    """Copy of a model folder with float32 weights (training starts from fp32)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for f in dst.rglob("*.safetensors"):
        w = load_file(str(f))
        save_file(
            {k: v.float().contiguous() if v.is_floating_point() else v for k, v in w.items()},
            str(f),
            metadata={"format": "pt"},
        )
    return dst


def pack(model_dir: Path, out: Path, name: str) -> list[Path]:
    """The model folder with float16 weights, as a tar split into pieces of <= 16,000,000 bytes."""
    import tarfile

    staging = Path("/tmp") / f"pack-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("logs", "checkpoints"))
    for f in staging.rglob("*.safetensors"):
        w = load_file(str(f))
        save_file(
            {k: v.half().contiguous() if v.is_floating_point() else v for k, v in w.items()},
            str(f),
            metadata={"format": "pt"},
        )
    tar_path = Path("/tmp") / f"{name}.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(staging, arcname=name)
    data = tar_path.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    pieces = []
    for i in range(0, len(data), PIECE):
        piece = out / f"{name}.tar.part{i // PIECE:02d}"
        piece.write_bytes(data[i : i + PIECE])
        pieces.append(piece)
    return pieces


def mine(model_dir: Path, data: Judgments, device: str | None) -> dict[str, list[str]]:
    """Top 50 of a bi-encoder (brute force) for every train and validation query."""
    from sentence_transformers import SentenceTransformer

    from inference.models import pick_device
    from training.retriever import brute_force_top_k

    st = SentenceTransformer(str(model_dir), device=pick_device(device))
    ids = sorted(data.texts)
    candidates: dict[str, list[str]] = {}
    for split in ("train", "validation"):
        qids = sorted(data.queries[split])
        _, idx = brute_force_top_k(st, data, ids, split, qids, 50, batch_size=1024)
        for q, row in zip(qids, idx, strict=True):
            candidates[q] = [ids[i] for i in row]
    del st
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return candidates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judgments", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheels", default=None, help="folder of datasets/accelerate wheels")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a dry run on a CPU")
    ap.add_argument("--device", default=None, help="torch device (default: cuda when present)")
    ap.add_argument("--retriever-budget", type=float, default=150, help="seconds")
    ap.add_argument("--reranker-budget", type=float, default=240, help="seconds")
    ap.add_argument(
        "--reranker-only",
        action="store_true",
        help="skip the retriever; mine negatives with the base model",
    )
    ap.add_argument(
        "--candidates",
        default=None,
        help="gzipped JSON {query_id: [product_id, ...]}: stage-1 candidates to use (e.g. hybrid), instead of mining",
    )
    ap.add_argument("--reranker-epochs", type=int, default=3)
    args = ap.parse_args(argv)
    ensure_train_packages(args.wheels)

    from training.reranker import RerankerTrainConfig, train_reranker
    from training.retriever import RetrieverTrainConfig, train_retriever

    t0 = time.time()
    work, out = Path(args.work), Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    print(
        "torch",
        torch.__version__,
        "cuda",
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        flush=True,
    )
    data = Judgments.load(args.judgments)
    base = to_fp32(Path(args.base), work / "base")
    rconf = RetrieverTrainConfig(
        base_model=str(base),
        epochs=1 if args.quick else 6,
        batch_size=16 if args.quick else 128,
        lr=5e-5,
        hard_negatives=0 if args.quick else 1,
        val_queries=None,
        val_catalog=2000 if args.quick else None,
        patience=2,
        time_budget_s=args.retriever_budget,
        device=args.device,
    )
    rrep = None
    if not args.reranker_only:
        rrep = train_retriever(
            data,
            work / "retriever",
            rconf,
            progress=False,
            log=lambda m: print("[retriever]", m, flush=True),
        )
        print("retriever done", round(time.time() - t0), "s", flush=True)
        pack(work / "retriever", out, "retriever")  # back first, whatever happens next

    if args.candidates:
        import gzip

        with gzip.open(args.candidates, "rt") as fh:
            candidates = json.load(fh)
    else:
        candidates = mine(base if args.reranker_only else work / "retriever", data, args.device)
    print("candidates mined", round(time.time() - t0), "s", flush=True)
    kconf = RerankerTrainConfig(
        base_model=str(base),
        epochs=1 if args.quick else args.reranker_epochs,
        batch_size=16 if args.quick else 128,
        lr=4e-5,
        negatives_per_query=2 if args.quick else 8,
        val_queries=20 if args.quick else 960,
        patience=2,
        eval_every=None,
        time_budget_s=args.reranker_budget,
        device=args.device,
    )
    krep = train_reranker(
        data,
        work / "reranker",
        candidates,
        kconf,
        progress=False,
        log=lambda m: print("[reranker]", m, flush=True),
    )
    print("reranker done", round(time.time() - t0), "s", flush=True)
    pack(work / "reranker", out if args.reranker_only else work / "packed", "reranker")
    for name, rep in (("retriever", rrep), ("reranker", krep)):
        if rep is not None:
            brief = {k: v for k, v in rep.as_dict().items() if k != "history"}
            print(f"{name} report:", json.dumps(brief, default=str)[:3000], flush=True)
    print("all done", round(time.time() - t0), "s", flush=True)


if __name__ == "__main__":
    main()

"""Train both models on a GPU machine that has torch but none of the data tools.

Reads a Judgments file (``evaluation.labels``, written by ``scripts/gpu_bundle.py``) and a
starting bi-encoder folder; trains the retriever with shopsearch's own ``train_retriever``, mines
reranker negatives from the fine-tuned retriever's top 50 (brute force on the GPU), trains the
reranker with ``train_reranker``, and writes both models in float16, split in pieces of at most
16,000,000 bytes inside a tar (the machine returns at most 8 files of at most 16 MiB). ``scripts/gpu_unpack.py`` reassembles them.

    python3 scripts/gpu_train.py --judgments J.json.gz --base MODEL_DIR --work DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from evaluation.labels import Judgments  # noqa: E402
from rerank.train import RerankerTrainConfig, train_reranker  # noqa: E402
from retrieval.train import RetrieverTrainConfig, brute_force_top_k, train_retriever  # noqa: E402

PIECE = 16_000_000


def to_fp32(src: Path, dst: Path) -> Path:
    """Copy of a model folder with float32 weights (training starts from fp32)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    for f in dst.rglob("*.safetensors"):
        w = load_file(str(f))
        save_file(
            {k: v.float().contiguous() for k, v in w.items()}, str(f), metadata={"format": "pt"}
        )
    return dst


def pack(model_dir: Path, out: Path, name: str) -> list[Path]:
    """The model folder with float16 weights, as a tar split into pieces of <= 16,000,000 bytes."""
    import tarfile

    staging = Path("/tmp") / f"pack-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("logs"))
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


def mine(model_dir: Path, data: Judgments) -> dict[str, list[str]]:
    """Top 50 of a bi-encoder (brute force) for every train and validation query."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cuda" if torch.cuda.is_available() else "cpu")
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--judgments", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny settings for a dry run on a CPU")
    ap.add_argument("--retriever-budget", type=float, default=150)
    ap.add_argument("--reranker-budget", type=float, default=240)
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
    args = ap.parse_args()
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
    if args.quick:
        data = data.subset("train", 0.02).subset("validation", 0.1)
    base = to_fp32(Path(args.base), work / "base")
    rconf = RetrieverTrainConfig(
        base_model=str(base),
        epochs=1 if args.quick else 6,
        batch_size=32 if args.quick else 128,
        lr=5e-5,
        hard_negatives=0 if args.quick else 1,
        val_queries=None,
        val_catalog=2000 if args.quick else None,
        patience=2,
        time_budget_s=args.retriever_budget,
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
        candidates = mine(base if args.reranker_only else work / "retriever", data)
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
    if rrep is not None:
        print("retriever report:", json.dumps(rrep.__dict__, default=str)[:3000], flush=True)
    print("reranker report:", json.dumps(krep.__dict__, default=str)[:3000], flush=True)
    print("all done", round(time.time() - t0), "s", flush=True)


if __name__ == "__main__":
    main()

"""Brute-force BM25 on the Home Depot data: how much do stemming and size tokens help?

Scores every sampled query against the whole catalog (every distinct product title)
with the same BM25 that Qdrant computes from ``retrieval.lexical`` vectors (IDF
modifier ``ln(1 + (N - n + 0.5) / (n + 0.5))``, Lucene term-frequency part), using
scipy sparse matrices, and prints NDCG@10 (gain = grade - 1) and Recall@100
(relevant = grade >= 2.5) per tokeniser variant.

Usage:
    python scripts/bm25_experiment.py [--data ../shared/data/homedepot/train.csv]
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse

from retrieval.lexical import Bm25Params, LexicalEncoder, _Tokenizer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/homedepot/train.csv"


def load(path: Path) -> tuple[list[str], list[str], dict[str, dict[int, float]]]:
    """Read the catalog (ids, titles) and the graded judgments per query."""
    df = pl.read_csv(path, encoding="latin1")
    products = df.unique("product_uid", keep="first").sort("product_uid")
    ids = [str(x) for x in products["product_uid"].to_list()]
    titles = products["product_title"].to_list()
    row_of = {pid: i for i, pid in enumerate(ids)}
    qrels: dict[str, dict[int, float]] = {}
    for q, pid, grade in df.select("search_term", "product_uid", "relevance").iter_rows():
        qrels.setdefault(q, {})[row_of[str(pid)]] = float(grade)
    return ids, titles, qrels


def sample_queries(queries: Sequence[str], percent: int = 10) -> list[str]:
    """Deterministic sample: queries whose CRC-32 falls in the first ``percent`` buckets."""
    return sorted(q for q in queries if zlib.crc32(q.encode("utf-8")) % 100 < percent)


def doc_matrix(
    docs: list[list[str]], k1: float, b: float
) -> tuple[sparse.csr_matrix, dict[str, int], np.ndarray]:
    """Document x term matrix of BM25 term-frequency values, vocabulary and idf."""
    vocab: dict[str, int] = {}
    rows, cols, tfs = [], [], []
    lengths = np.array([len(d) for d in docs], dtype=np.float64)
    avgdl = lengths.mean()
    for r, toks in enumerate(docs):
        counts: dict[int, int] = {}
        for t in toks:
            j = vocab.setdefault(t, len(vocab))
            counts[j] = counts.get(j, 0) + 1
        for j, c in counts.items():
            rows.append(r)
            cols.append(j)
            tfs.append(c)
    tf = np.array(tfs, dtype=np.float64)
    rows_a = np.array(rows)
    norm = k1 * (1 - b + b * lengths[rows_a] / avgdl)
    vals = tf * (k1 + 1) / (tf + norm)
    mat = sparse.csr_matrix((vals, (rows_a, cols)), shape=(len(docs), len(vocab)))
    n = len(docs)
    df_ = np.bincount(np.array(cols), minlength=len(vocab))
    idf = np.log(1 + (n - df_ + 0.5) / (df_ + 0.5))
    return mat, vocab, idf


def evaluate(
    tokenize: Callable[[str], list[str]],
    titles: list[str],
    queries: list[str],
    qrels: dict[str, dict[int, float]],
    params: Bm25Params,
    query_counts: bool = False,
) -> dict[str, float]:
    """NDCG@10 and Recall@100 of brute-force BM25 with the given tokeniser."""
    mat, vocab, idf = doc_matrix([tokenize(t) for t in titles], params.k1, params.b)
    mat_t = mat.T.tocsr().astype(np.float32)
    discounts = 1.0 / np.log2(np.arange(2, 12))
    ndcgs, recalls = [], []
    chunk = 256
    for start in range(0, len(queries), chunk):
        batch = queries[start : start + chunk]
        rows, cols, vals = [], [], []
        for i, q in enumerate(batch):
            toks = [t for t in tokenize(q) if t in vocab]
            weights: dict[int, float] = {}
            for t in toks:
                j = vocab[t]
                weights[j] = (weights.get(j, 0.0) + 1.0) if query_counts else 1.0
            for j, w in weights.items():
                rows.append(i)
                cols.append(j)
                vals.append(w * idf[j])
        qmat = sparse.csr_matrix((vals, (rows, cols)), shape=(len(batch), len(vocab)))
        scores = (qmat.astype(np.float32) @ mat_t).toarray()
        top = np.argpartition(-scores, 100, axis=1)[:, :100]
        for i, q in enumerate(batch):
            order = top[i][np.argsort(-scores[i, top[i]], kind="stable")]
            order = order[scores[i, order] > 0]
            judged = qrels[q]
            gains = np.array([judged.get(int(d), 1.0) - 1.0 for d in order[:10]])
            dcg = float((gains * discounts[: len(gains)]).sum())
            ideal = sorted((g - 1.0 for g in judged.values()), reverse=True)[:10]
            idcg = float((np.array(ideal) * discounts[: len(ideal)]).sum())
            ndcgs.append(dcg / idcg if idcg > 0 else 0.0)
            relevant = {d for d, g in judged.items() if g >= 2.5}
            if relevant:
                hit = sum(1 for d in order[:100] if int(d) in relevant)
                recalls.append(hit / len(relevant))
    return {"ndcg@10": float(np.mean(ndcgs)), "recall@100": float(np.mean(recalls))}


def main() -> None:
    """Run every variant and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--percent", type=int, default=10)
    args = parser.parse_args()

    _, titles, qrels = load(args.data)
    queries = sample_queries(list(qrels), args.percent)
    print(f"catalog {len(titles)} products, {len(queries)} sampled queries")

    enc = LexicalEncoder()
    t0 = time.perf_counter()
    enc.fit_avg_len(titles)
    print(
        f"tokenise {len(titles)} titles (stem+sizes, cold cache): "
        f"{time.perf_counter() - t0:.2f} s, avg len {enc.avg_doc_len:.2f}"
    )
    t0 = time.perf_counter()
    fresh = LexicalEncoder(avg_doc_len=enc.avg_doc_len)
    fresh.encode_documents(titles)
    print(
        f"encode_documents on {len(titles)} titles (cold cache): {time.perf_counter() - t0:.2f} s"
    )

    params = Bm25Params()
    variants: list[tuple[str, Callable[[str], list[str]], bool]] = [
        ("no stemming", _Tokenizer(stem=False, keep_sizes=False), False),
        ("stemming", _Tokenizer(stem=True, keep_sizes=False), False),
    ]
    for mode in ("num+unit", "glued", "num+glued", "num+unit+glued"):
        variants.append((f"stem+sizes [{mode}]", _Tokenizer(True, True, size_mode=mode), False))
    variants.append(("stem+sizes [default], query counts", enc.tokenize, True))
    for name, tok, counts in variants:
        res = evaluate(tok, titles, queries, qrels, params, query_counts=counts)
        print(f"{name:40s} NDCG@10 {res['ndcg@10']:.4f}  Recall@100 {res['recall@100']:.4f}")


if __name__ == "__main__":
    main()

"""Labelled data as plain Python: what trainers and benchmarks read (no dataframe library).

``Judgments`` is built from a benchmark directory (``evaluation.data``) and can be written
to / read from one JSON file, so training runs anywhere that has torch, e.g. a GPU machine.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import ShopsearchError
from evaluation.metrics import Qrels

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Judgments:
    """Queries and graded (query, product) pairs, per split, with the product texts.

    Attributes:
        texts: product_id -> product text (``catalog.text.product_text``) for the whole catalog.
        queries: split -> {query_id: query text}.
        qrels: split -> {query_id: {product_id: grade}}.
        threshold: Grade at or above which a product is relevant.
        gain_offset: NDCG gain is ``grade - gain_offset``.
    """

    texts: dict[str, str]
    queries: dict[str, dict[str, str]]
    qrels: dict[str, Qrels]
    threshold: float
    gain_offset: float

    def relevant_pairs(self, split: str = "train") -> list[tuple[str, str]]:
        """(query_id, product_id) pairs graded at or above the threshold."""
        return [
            (qid, pid)
            for qid, judged in self.qrels[split].items()
            for pid, grade in judged.items()
            if grade >= self.threshold and pid in self.texts
        ]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes one gzipped JSON file."""
        path = Path(path)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(
                {
                    "texts": self.texts,
                    "queries": self.queries,
                    "qrels": self.qrels,
                    "threshold": self.threshold,
                    "gain_offset": self.gain_offset,
                },
                fh,
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Judgments:
        """Reads a file written by :meth:`save`."""
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                raw = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ShopsearchError(
                f"{path}: not a judgments file written by shopsearch ({exc})"
            ) from exc
        return cls(
            texts=raw["texts"],
            queries=raw["queries"],
            qrels=raw["qrels"],
            threshold=float(raw["threshold"]),
            gain_offset=float(raw["gain_offset"]),
        )

    def subset(self, split: str, fraction: float, seed: int = 0) -> Judgments:
        """A copy keeping a seeded ``fraction`` of one split's queries (the others whole)."""
        import random

        ids = sorted(self.queries[split])
        keep = set(random.Random(seed).sample(ids, max(1, round(len(ids) * fraction))))
        queries = dict(self.queries)
        qrels = dict(self.qrels)
        queries[split] = {q: t for q, t in self.queries[split].items() if q in keep}
        qrels[split] = {q: j for q, j in self.qrels[split].items() if q in keep}
        return Judgments(self.texts, queries, qrels, self.threshold, self.gain_offset)

"""The learned final stage: a LightGBM lambdarank model over one feature vector per candidate.

    ranker_features(query, hits, corrected=None) -> np.ndarray (n, len(FEATURE_NAMES))
    LearnedRanker.open(folder).rank(query, hits)   # in place of the blend (rerank.blend)

The relevance blend is one number, ``(1 - w) * z(cross) + w * z(retrieval)``. The final stage of
the strongest shop search systems is a learned ranker over many features instead (LambdaMART:
Burges, "From RankNet to LambdaRank to LambdaMART", MSR-TR-2010-82; the LTR plugins of
Elasticsearch, OpenSearch and Solr, Vespa's GBDT phase, Metarank), and the Home Depot
competition was won on lexical features the models do not see: how many query words, numbers
and units the title holds, model numbers, brand words, lengths. Each (query, candidate) gets:

* the first stage's evidence per source: the fused score and rank, BM25's and the dense
  tower's score and rank (NaN when the product was not in that list), each score also relative
  to the best of the candidates (:attr:`retrieval.hits.RankedHit.sources`);
* the cross-encoder's logit, and its gap to the best, when a reranker ran (NaN when not);
* lexical matches of the query's tokens (the BM25 tokenizer's: stems, canonical numbers, and
  measurements glued to their unit, so ``18v``, ``18-Volt`` and ``18 volt`` all give ``18v``)
  in the title (and in title + brand + category): words, numbers, measurements,
  model-number-like tokens (letters and digits, or 4+ digits), the query's first and last
  word, its word pairs, the brand (the ``brand`` field, else the title's first word); query and title lengths; whether a
  spelling correction was applied;
* the product's own fields: price and in_stock (NaN when absent).

Missing values are NaN: LightGBM learns a direction for them. :func:`ranker_features` is the
one function training (:mod:`training.ranker`) and serving call, so both see the same vector.
A saved model keeps :data:`FEATURE_NAMES` beside the booster and refuses to open under another
list.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from core.io import atomic_write
from rerank.blend import sort_hits
from retrieval.hits import RankedHit
from retrieval.lexical import _UNITS, _Tokenizer

#: Feature groups, in order; the ablations of ``bench-ltr`` leave groups out by name.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "retrieval": (
        "fused_score",
        "fused_score_rel",
        "fused_rank",
        "bm25_score",
        "bm25_score_rel",
        "bm25_rank",
        "dense_score",
        "dense_score_gap",
        "dense_rank",
    ),
    "cross": ("cross", "cross_gap"),
    "lexical": (
        "query_tokens",
        "query_chars",
        "title_tokens",
        "title_matched",
        "title_covered",
        "text_covered",
        "words_covered",
        "numbers_in_query",
        "numbers_covered",
        "measures_in_query",
        "measures_covered",
        "models_in_query",
        "models_covered",
        "first_word_matched",
        "last_word_matched",
        "pairs_covered",
        "brand_matched",
        "corrected",
    ),
    "product": ("price", "in_stock"),
}
#: The feature vector's columns, in order (:func:`ranker_features`).
FEATURE_NAMES: tuple[str, ...] = tuple(n for names in FEATURE_GROUPS.values() for n in names)
#: The file names of a saved model.
MODEL_FILE = "model.txt"
META_FILE = "ranker.json"
FORMAT = "shopsearch-learned-ranker/v1"

_NAN = math.nan
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
#: The BM25 tokenizer's steps, but a measurement kept as its number and number + unit.
_TOKENIZE = _Tokenizer(stem=True, keep_sizes=True, size_mode="num+glued")
_MEASURE = re.compile(
    r"^\d*\.?\d+(?:" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r")$"
)
_NUMBER = re.compile(r"^\d*\.?\d+$")


#: Product texts whose tokens are kept (LRU): tokenizing a title costs 10-30 us, and a shop's
#: searches meet the same products again and again.
ANALYSIS_CACHE = 50_000


@lru_cache(maxsize=ANALYSIS_CACHE)
def _analyse(text: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """A product text's tokens (in order) and their set."""
    tokens = tuple(_TOKENIZE(text))
    return tokens, frozenset(tokens)


def _kind(token: str) -> str:
    """``number``, ``measure``, ``model`` (letters and digits, or 4+ digits) or ``word``."""
    if not any(c.isdigit() for c in token):
        return "word"
    if _MEASURE.match(token):
        return "measure"
    if _NUMBER.match(token):
        return "model" if len(token) >= 4 and token.isdigit() else "number"
    return "model"


@dataclass(frozen=True)
class _Query:
    """What the features need of a query, computed once per list."""

    tokens: tuple[str, ...]
    distinct: tuple[str, ...]
    kinds: dict[str, tuple[str, ...]]
    pairs: frozenset[tuple[str, str]]
    chars: int

    @staticmethod
    @lru_cache(maxsize=4096)
    def of(text: str) -> _Query:
        tokens = tuple(_TOKENIZE(text))
        distinct = tuple(dict.fromkeys(tokens))
        kinds: dict[str, list[str]] = {"word": [], "number": [], "measure": [], "model": []}
        for t in distinct:
            kinds[_kind(t)].append(t)
        return _Query(
            tokens,
            distinct,
            {k: tuple(v) for k, v in kinds.items()},
            frozenset(zip(tokens, tokens[1:], strict=False)),
            len(text.strip()),
        )


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return _NAN


def ranker_features(
    query: str, hits: Sequence[RankedHit], corrected: str | None = None
) -> np.ndarray:
    """The feature vector of each candidate of one query: training and serving call this.

    Args:
        query: The query as searched.
        hits: The first stage's candidates (``sources`` read for the per-source scores;
            ``cross`` for the cross-encoder's logit when a reranker ran, else NaN).
        corrected: The query's spelling correction when one was applied: the lexical features
            read it instead of ``query``, and ``corrected`` is 1.

    Returns:
        float32 array of shape ``(len(hits), len(FEATURE_NAMES))``, columns in
        :data:`FEATURE_NAMES` order; NaN where a value is missing.
    """
    n = len(hits)
    x = np.full((n, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    if n == 0:
        return x
    read = corrected if corrected else query
    q = _Query.of(read)
    # first stage, per source
    fused = np.array([h.retrieval for h in hits], dtype=np.float64)
    x[:, _COL["fused_score"]] = fused
    top = fused.max()
    x[:, _COL["fused_score_rel"]] = fused / top if top > 0 else np.nan
    x[:, _COL["fused_rank"]] = [h.retrieval_rank or np.nan for h in hits]
    for source, score, rel, rank, gap in (
        ("bm25", "bm25_score", "bm25_score_rel", "bm25_rank", False),
        ("dense", "dense_score", "dense_score_gap", "dense_rank", True),
    ):
        scores = np.full(n, np.nan)
        ranks = np.full(n, np.nan)
        for i, h in enumerate(hits):
            for name, s, r in h.sources:
                if name == source:
                    scores[i], ranks[i] = s, r
                    break
        x[:, _COL[score]] = scores
        x[:, _COL[rank]] = ranks
        if not np.isnan(scores).all():
            best = np.nanmax(scores)
            if gap:
                x[:, _COL[rel]] = scores - best
            elif best > 0:
                x[:, _COL[rel]] = scores / best
    cross = np.array([np.nan if h.cross is None else h.cross for h in hits], dtype=np.float64)
    x[:, _COL["cross"]] = cross
    if not np.isnan(cross).all():
        x[:, _COL["cross_gap"]] = cross - np.nanmax(cross)
    # lexical matches: which query tokens (and word pairs) each candidate holds
    distinct, pairs = q.distinct, sorted(q.pairs)
    title_rows: list[list[bool]] = []
    text_rows: list[list[bool]] = []
    pair_rows: list[list[bool]] = []
    title_len: list[int] = []
    brand_in_query: list[float] = []
    product: list[tuple[float, float]] = []
    query_set = set(distinct)
    for h in hits:
        payload = h.payload
        t_tokens, t_set = _analyse(str(payload.get("title") or ""))
        title_len.append(len(t_tokens))
        row = [t in t_set for t in distinct]
        title_rows.append(row)
        brand, category = payload.get("brand"), payload.get("category")
        if brand or category:
            extra = [_analyse(v)[1] for v in (brand, category) if isinstance(v, str)]
            row = [t in t_set or any(t in e for e in extra) for t in distinct]
        text_rows.append(row)
        if pairs:
            t_pairs = set(zip(t_tokens, t_tokens[1:], strict=False))
            pair_rows.append([p in t_pairs for p in pairs])
        brand_tokens = _analyse(brand)[0] if isinstance(brand, str) and brand else t_tokens[:1]
        brand_in_query.append(all(t in query_set for t in brand_tokens) if brand_tokens else _NAN)
        product.append((_number(payload.get("price")), _number(payload.get("in_stock"))))
    in_title = np.array(title_rows, dtype=bool).reshape(n, len(distinct))
    in_text = np.array(text_rows, dtype=bool).reshape(n, len(distinct))
    in_pairs = np.array(pair_rows, dtype=bool).reshape(n, len(pairs))
    x[:, _COL["price"] : _COL["in_stock"] + 1] = product

    def share(found: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray | float:
        part = found if columns is None else found[:, list(columns)]
        return part.mean(axis=1) if part.shape[1] else _NAN

    kinds = {k: [distinct.index(t) for t in q.kinds[k]] for k in q.kinds}
    words = kinds["word"]
    x[:, _COL["query_tokens"]] = len(q.tokens)
    x[:, _COL["query_chars"]] = q.chars
    x[:, _COL["title_tokens"]] = title_len
    x[:, _COL["title_matched"]] = in_title.sum(axis=1)
    x[:, _COL["title_covered"]] = share(in_title)
    x[:, _COL["text_covered"]] = share(in_text)
    x[:, _COL["words_covered"]] = share(in_title, words)
    for kind in ("number", "measure", "model"):
        x[:, _COL[f"{kind}s_in_query"]] = len(kinds[kind])
        x[:, _COL[f"{kind}s_covered"]] = share(in_title, kinds[kind])
    if words:
        x[:, _COL["first_word_matched"]] = in_title[:, words[0]]
        x[:, _COL["last_word_matched"]] = in_title[:, words[-1]]
    x[:, _COL["pairs_covered"]] = share(in_pairs)
    x[:, _COL["brand_matched"]] = brand_in_query
    x[:, _COL["corrected"]] = 1.0 if corrected else 0.0
    return x


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _lightgbm():
    try:
        import lightgbm
    except ImportError as exc:  # a core dependency: a broken install, said in one line
        raise ShopsearchError(
            "the learned stage needs LightGBM: pip install 'lightgbm>=4.0'"
        ) from exc
    return lightgbm


class LearnedRanker:
    """A trained LightGBM ranker over :func:`ranker_features` (lambdarank: LambdaMART).

    Args:
        booster: A ``lightgbm.Booster`` trained on columns in :data:`FEATURE_NAMES` order.
        meta: What made it (``features``, ``dropped`` groups, versions, training summary).

    Open a saved one with :meth:`open`; :meth:`rank` takes the blend's place in the pipeline.
    """

    def __init__(self, booster: Any, meta: dict[str, Any]) -> None:
        self.booster = booster
        self.meta = meta
        dropped = [n for g in meta.get("dropped", ()) for n in FEATURE_GROUPS.get(g, ())]
        self._dropped = [_COL[n] for n in dropped]
        #: Identifies the model (recorded by a personal model trained on top of it).
        self.fingerprint: str = str(meta.get("fingerprint") or "")

    def check_reranker(self, fingerprint: str | None) -> None:
        """Refuses a pipeline whose cross-encoder is not the one the model was trained with.

        Args:
            fingerprint: The pipeline's reranker's fingerprint, None without one.

        Raises:
            ShopsearchError: Trained with another cross-encoder's logits, or with none where
                the pipeline has one (or the reverse).
        """
        trained = self.meta.get("reranker")
        if trained == fingerprint:
            return
        if trained is None:
            raise ShopsearchError(
                "the learned ranker was trained without a cross-encoder: serve it without "
                "--reranker, or retrain it with 'shopsearch train ranker ... --reranker R'"
            )
        raise ShopsearchError(
            f"the learned ranker was trained on the logits of reranker {trained}, not "
            f"{fingerprint or 'none'}: serve it with that reranker, or retrain it with "
            "'shopsearch train ranker ... --reranker <this one>'"
        )

    def features(
        self, query: str, hits: Sequence[RankedHit], corrected: str | None = None
    ) -> np.ndarray:
        """:func:`ranker_features`, with the groups the model was trained without set to NaN."""
        x = ranker_features(query, hits, corrected)
        if self._dropped:
            x[:, self._dropped] = np.nan
        return x

    def score(
        self, query: str, hits: Sequence[RankedHit], corrected: str | None = None
    ) -> np.ndarray:
        """The learned relevance of each candidate (higher is better).

        Args:
            query: The query as searched.
            hits: Its candidates (``cross`` set when a reranker ran).
            corrected: The applied correction, if any (see :func:`ranker_features`).

        Returns:
            float64 array of shape ``(len(hits),)``; comparable within one query only.
        """
        if not hits:
            return np.zeros(0)
        return np.asarray(
            self.booster.predict(self.features(query, hits, corrected), num_threads=1),
            dtype=np.float64,
        )

    def rank(
        self,
        query: str,
        hits: Sequence[RankedHit],
        corrected: str | None = None,
        top_k: int | None = None,
    ) -> list[RankedHit]:
        """The relevance stage with this model: ``relevance = score =`` the learned score.

        Returns:
            Hits by learned score descending (ties keep the first stage's order).
        """
        if not hits:
            return []
        scores = self.score(query, hits, corrected)
        scored = [
            replace(h, score=float(s), relevance=float(s))
            for h, s in zip(hits, scores, strict=True)
        ]
        return sort_hits(scored, top_k)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Writes ``model.txt`` (the booster, LightGBM's text format) and ``ranker.json``
        (the feature names, the versions that made it, the training summary).

        Returns:
            The folder.
        """
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        text = self.booster.model_to_string()
        meta = {
            "format": FORMAT,
            "features": list(FEATURE_NAMES),
            "lightgbm": _version("lightgbm"),
            "shopsearch": _version("shopsearch"),
            **{k: v for k, v in self.meta.items() if k not in ("format", "features")},
        }
        meta["fingerprint"] = hashlib.sha256(text.encode()).hexdigest()[:16]
        atomic_write(path / MODEL_FILE, text)
        atomic_write(path / META_FILE, json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        self.fingerprint = meta["fingerprint"]
        return path

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> LearnedRanker:
        """Loads a model saved by :meth:`save`.

        Raises:
            ShopsearchError: No such folder or files, or a model made for another feature
                list than this shopsearch computes (one line naming the difference: retrain
                it with ``shopsearch train ranker``).
        """
        path = Path(folder)
        meta_path, model_path = path / META_FILE, path / MODEL_FILE
        if not meta_path.is_file() or not model_path.is_file():
            raise ShopsearchError(
                f"--ranker {path}: not a learned ranker folder (no {META_FILE} and {MODEL_FILE}); "
                "train one with 'shopsearch train ranker'"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise ShopsearchError(
                f"{meta_path}: not valid JSON ({exc}); retrain the ranker"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ShopsearchError(
                f"{meta_path}: not a shopsearch learned ranker ({FORMAT}); retrain the ranker"
            )
        saved = list(meta.get("features") or [])
        if saved != list(FEATURE_NAMES):
            missing = [n for n in FEATURE_NAMES if n not in saved]
            extra = [n for n in saved if n not in FEATURE_NAMES]
            diff = (
                "; ".join(
                    part
                    for part in (
                        f"this shopsearch computes {', '.join(missing)} too" if missing else "",
                        f"it reads {', '.join(extra)}, which this shopsearch does not compute"
                        if extra
                        else "",
                    )
                    if part
                )
                or "the same features in another order"
            )
            raise ShopsearchError(
                f"the learned ranker at {path} was trained on other features than this "
                f"shopsearch computes ({diff}; made by shopsearch {meta.get('shopsearch')}): "
                "retrain it with 'shopsearch train ranker'"
            )
        booster = _lightgbm().Booster(model_str=model_path.read_text())
        if booster.num_feature() != len(FEATURE_NAMES):
            raise ShopsearchError(
                f"{model_path}: the booster reads {booster.num_feature()} features, "
                f"{META_FILE} names {len(FEATURE_NAMES)}: retrain the ranker"
            )
        return cls(booster, meta)

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
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from core.io import atomic_write
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


#: Product texts whose analysis is kept (LRU, keyed by title, brand and category): tokenizing a
#: title costs 10-30 us, and a shop's searches meet the same products again and again.
ANALYSIS_CACHE = 50_000


def _kind(token: str) -> str:
    """``number``, ``measure``, ``model`` (letters and digits, or 4+ digits) or ``word``."""
    if not any(c.isdigit() for c in token):
        return "word"
    if _MEASURE.match(token):
        return "measure"
    if _NUMBER.match(token):
        return "model" if len(token) >= 4 and token.isdigit() else "number"
    return "model"


def _tokens(text: str) -> tuple[str, ...]:
    # interned: products share a small vocabulary, so the cache holds each token once
    return tuple(sys.intern(t) for t in _TOKENIZE(text))


#: A product's analysis (:func:`_product`): the title's tokens in order; the tokens of title,
#: brand and category (the same tuple when it has neither); the brand's tokens (the brand
#: field's, else the title's first; empty when that has none); the title's tokens joined by
#: :data:`_SEP` between and around, where a query's word pair is found as a substring. Tuples
#: and a string rather than sets: a query's few tokens are looked up in them, and 50,000 of
#: them stay small (about 0.6 KB each, tokens interned).
_Analysis = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]
#: Never inside a token (the tokenizer splits text on what is not a letter, digit or point).
_SEP = "\x1f"


@lru_cache(maxsize=1024)
def _field_tokens(text: str) -> tuple[str, ...]:
    """A brand's or category's tokens (shared by many products: cached apart)."""
    return _tokens(text)


@lru_cache(maxsize=ANALYSIS_CACHE)
def _product(title: str, brand: str | None, category: str | None) -> _Analysis:
    """The analysis of a product's texts (``brand`` and ``category``: non-empty text or None)."""
    tokens = _tokens(title)
    brand_tokens = _field_tokens(brand) if brand is not None else ()
    extra = brand_tokens + (_field_tokens(category) if category is not None else ())
    return (
        tokens,
        tokens + extra if extra else tokens,
        brand_tokens if brand is not None else tokens[:1],
        _SEP + _SEP.join(tokens) + _SEP,
    )


def clear_caches() -> None:
    """Forgets every product's and query's analysis (a cold start; ``bench-ltr`` times it)."""
    _product.cache_clear()
    _field_tokens.cache_clear()
    _Query.of.cache_clear()


@dataclass(frozen=True, slots=True)
class _Query:
    """What the features need of a query, computed once per query text (cached).

    Attributes:
        tokens: Its tokens in order.
        distinct: Its distinct tokens.
        kinds: ``word``, ``number``, ``measure``, ``model`` -> its distinct tokens of that kind.
        first_word: Its first word-kind token (None without one); last_word: its last.
        pairs: Its distinct adjacent token pairs, each as ``_SEP a _SEP b _SEP`` (a substring
            of a product's joined tokens exactly when the title holds ``a`` then ``b``).
        chars: Its length in characters, stripped.
    """

    tokens: tuple[str, ...]
    distinct: frozenset[str]
    kinds: dict[str, frozenset[str]]
    first_word: str | None
    last_word: str | None
    pairs: tuple[str, ...]
    chars: int

    @staticmethod
    @lru_cache(maxsize=4096)
    def of(text: str) -> _Query:
        tokens = _tokens(text)
        ordered = tuple(dict.fromkeys(tokens))
        kinds: dict[str, list[str]] = {"word": [], "number": [], "measure": [], "model": []}
        for t in ordered:
            kinds[_kind(t)].append(t)
        words = kinds["word"]
        return _Query(
            tokens,
            frozenset(ordered),
            {k: frozenset(v) for k, v in kinds.items()},
            words[0] if words else None,
            words[-1] if words else None,
            tuple(
                dict.fromkeys(
                    f"{_SEP}{a}{_SEP}{b}{_SEP}" for a, b in zip(tokens, tokens[1:], strict=False)
                )
            ),
            len(text.strip()),
        )


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return _NAN


#: Per-candidate values gathered in one pass (:func:`ranker_features`), then placed in columns.
_GATHERED = (
    "fused_score",
    "fused_rank",
    "bm25_score",
    "bm25_rank",
    "dense_score",
    "dense_rank",
    "cross",
    "title_tokens",
    "text_matched",
    "title_matched",
    "words_matched",
    "numbers_matched",
    "measures_matched",
    "models_matched",
    "first_word_matched",
    "last_word_matched",
    "pairs_matched",
    "brand_matched",
    "price",
    "in_stock",
)
_G = {name: i for i, name in enumerate(_GATHERED)}
#: The title counts of a candidate holding none of the query's tokens.
_NONE_FOUND = (0, 0, 0, 0, 0, False, False, 0)


def ranker_features(
    query: str, hits: Sequence[RankedHit], corrected: str | None = None
) -> np.ndarray:
    """The feature vector of each candidate of one query: training and serving call this.

    Each product's texts are analysed once and cached (:data:`ANALYSIS_CACHE`); per query the
    work is a few set intersections per candidate and column arithmetic in numpy: 0.15-0.2 ms
    for 50 analysed candidates on the 2-core machine, 0.6x the first implementation's time,
    with its values (``tests/rerank/test_ltr_features.py`` holds them).

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
    q = _Query.of(corrected if corrected else query)
    qset, kinds, qpairs = q.distinct, q.kinds, q.pairs
    words, numbers, measures, models = (
        kinds["word"],
        kinds["number"],
        kinds["measure"],
        kinds["model"],
    )
    first, last = q.first_word, q.last_word
    nan = _NAN
    rows = []
    for h in hits:
        bm25 = dense = (nan, nan)
        for source in reversed(h.sources):  # the first entry of a source wins
            if source[0] == "bm25":
                bm25 = source[1:]
            elif source[0] == "dense":
                dense = source[1:]
        payload = h.payload
        brand, category = payload.get("brand"), payload.get("category")
        tokens, text, brand_tokens, joined = _product(
            str(payload.get("title") or ""),
            brand if isinstance(brand, str) and brand else None,
            category if isinstance(category, str) and category else None,
        )
        found = qset.intersection(tokens)  # the query's distinct tokens in the title
        in_text = len(qset.intersection(text)) if text is not tokens else len(found)
        counts = (
            (
                len(found),
                len(words & found),
                len(numbers & found),
                len(measures & found),
                len(models & found),
                first in found,
                last in found,
                sum([pair in joined for pair in qpairs]),
            )
            if found
            else _NONE_FOUND
        )
        price, in_stock = payload.get("price"), payload.get("in_stock")
        rows.append(
            (
                h.retrieval,
                h.retrieval_rank or nan,
                *bm25,
                *dense,
                nan if h.cross is None else h.cross,
                len(tokens),
                in_text,
                *counts,
                qset.issuperset(brand_tokens) if brand_tokens else nan,
                nan if price is None else _number(price),
                nan if in_stock is None else _number(in_stock),
            )
        )
    g = np.array(rows, dtype=np.float64)
    col = _COL

    def put(name: str, values: Any) -> None:
        x[:, col[name]] = values

    # first stage, per source
    fused = g[:, _G["fused_score"]]
    put("fused_score", fused)
    top = fused.max()
    if top > 0:
        put("fused_score_rel", fused / top)
    put("fused_rank", g[:, _G["fused_rank"]])
    for source in ("bm25", "dense"):
        scores = g[:, _G[f"{source}_score"]]
        put(f"{source}_score", scores)
        put(f"{source}_rank", g[:, _G[f"{source}_rank"]])
        if not np.isnan(scores).all():
            best = np.nanmax(scores)
            if source == "dense":
                put("dense_score_gap", scores - best)
            elif best > 0:
                put("bm25_score_rel", scores / best)
    cross = g[:, _G["cross"]]
    put("cross", cross)
    if not np.isnan(cross).all():
        put("cross_gap", cross - np.nanmax(cross))
    # lexical matches: the shares of the query's distinct tokens (of each kind) matched
    put("query_tokens", len(q.tokens))
    put("query_chars", q.chars)
    put("title_tokens", g[:, _G["title_tokens"]])
    put("title_matched", g[:, _G["title_matched"]])
    for name, matched, asked in (
        ("title_covered", "title_matched", qset),
        ("text_covered", "text_matched", qset),
        ("words_covered", "words_matched", words),
        ("numbers_covered", "numbers_matched", numbers),
        ("measures_covered", "measures_matched", measures),
        ("models_covered", "models_matched", models),
        ("pairs_covered", "pairs_matched", qpairs),
    ):
        if asked:
            put(name, g[:, _G[matched]] / len(asked))
    for kind, asked in (("numbers", numbers), ("measures", measures), ("models", models)):
        put(f"{kind}_in_query", len(asked))
    if first is not None:
        put("first_word_matched", g[:, _G["first_word_matched"]])
        put("last_word_matched", g[:, _G["last_word_matched"]])
    put("brand_matched", g[:, _G["brand_matched"]])
    put("corrected", 1.0 if corrected else 0.0)
    put("price", g[:, _G["price"]])
    put("in_stock", g[:, _G["in_stock"]])
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


def _rescored(hit: RankedHit, score: float) -> RankedHit:
    """``dataclasses.replace(hit, score=score, relevance=score)`` at a fifth of its cost.

    ``replace`` runs ``__init__`` over every field (5.5 us a hit, 0.2 ms for 50 candidates);
    a frozen dataclass's fields live in its ``__dict__``, so the copy takes that and sets two
    entries (the test checks it against ``replace`` on every field).
    """
    new = object.__new__(type(hit))
    fields = new.__dict__
    fields.update(hit.__dict__)
    fields["score"] = score
    fields["relevance"] = score
    return new


def _ordered(
    hits: Sequence[RankedHit], scores: np.ndarray, top_k: int | None = None
) -> list[RankedHit]:
    """The hits with ``score = relevance = scores``, in :func:`rerank.blend.sort_hits`' order
    (score descending, ties by the first stage's rank, then as given: ``lexsort`` is stable),
    without a Python sort key per hit; only the kept ``top_k`` are copied."""
    ranks = np.fromiter((h.retrieval_rank for h in hits), np.int64, len(hits))
    order = np.lexsort((ranks, -scores))[:top_k]
    return [_rescored(hits[i], float(scores[i])) for i in order.tolist()]


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
        return _ordered(hits, self.score(query, hits, corrected), top_k)

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

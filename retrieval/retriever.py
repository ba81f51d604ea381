"""Query-time retrieval: embed the query, ask the store, return hits."""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from catalog.fields import FieldSchema
from core.errors import ShopsearchError
from inference.models import model_fingerprint, resolve_model_path
from retrieval.encoder import BiEncoder
from retrieval.filters import Filters
from retrieval.hits import Hits, QueryCorrection, RankedHit, hit_text
from retrieval.lexical import _UNIT_WORDS, STOPWORDS, LexicalEncoder
from retrieval.spelling import QueryCorrector, vocabulary_words
from retrieval.store import (
    Backend,
    Collection,
    IndexLocation,
    Mode,
    QuerySpec,
    open_backend,
    public_payload,
)
from retrieval.synonyms import (
    SYNONYM_WEIGHT,
    SynonymMatcher,
    Synonyms,
    token_idf,
    watch_synonyms,
)

DEFAULT_MODE: Mode = "hybrid"
#: RRF weight of the shopper-taste prefetch against 1.0 for each query prefetch.
USER_PREFETCH_WEIGHT = 0.5
MAX_K = 1000
#: Hybrid RRF weights (dense, BM25) of an index whose manifest records none (no labels to
#: choose on): equal, the one weighting that is no benchmark's setting. With
#: :data:`DEFAULT_FUSION` the products holding every query word come first (see
#: :func:`words_first`). The earlier default, dense 0.1 against BM25 1.0, was Home Depot's
#: validation choice; on another shop's judgments it gave up about 2% NDCG@10 and Recall@100
#: to equal weights. ``shopsearch bench-fusion`` (docs/benchmarks/fusion.md) has the run.
DEFAULT_DENSE_WEIGHT = 1.0
DEFAULT_SPARSE_WEIGHT = 1.0
#: How hybrid lists are fused: ``words-first`` (weighted RRF, then the products whose text holds
#: every query word ahead of the others, by :func:`words_first`) or ``rrf`` (weighted RRF alone).
DEFAULT_FUSION = "words-first"
Fusion = Literal["rrf", "words-first"]
#: Which query the dense tower reads when a query was corrected: ``original`` or ``corrected``.
DEFAULT_DENSE_READS = "corrected"
DenseReads = Literal["original", "corrected"]


@dataclass(frozen=True)
class QueryTuning:
    """How queries are fused and corrected; recorded in the index manifest under ``"query"``.

    Hybrid mode fuses the dense and BM25 lists by weighted reciprocal-rank fusion (Cormack,
    Clarke and Buettcher, SIGIR 2009): a product scores ``sum_s w_s / (60 + rank_s)``. With
    ``fusion="words-first"`` the products whose text holds every word of the (corrected) query
    then come first, each group in RRF order (:func:`words_first`).

    The built-in default, for an index that records nothing (a shop without labels), is equal
    weights with ``words-first``: not a weight tuned on one benchmark but a rule from the lists
    themselves. On the Home Depot test split it is within noise of BM25 at the top 10 and of
    equal-weight RRF at Recall@100 (which no fixed weight is), and it leaves a query without an
    all-words match to equal-weight RRF, which held on another shop's catalog where the dense
    tower is the stronger list (``shopsearch bench-fusion``). An index whose manifest records
    weights (``bench-typo`` chooses them on a shop's own validation split) keeps them, fused by
    the recorded ``fusion``: ``rrf`` for a manifest written before ``fusion`` was recorded.

    Attributes:
        dense_weight: RRF weight of the dense list (>= 0).
        sparse_weight: RRF weight of the BM25 list (>= 0).
        dense_reads: ``corrected`` or ``original``: what the dense tower reads when the
            corrector changed a query (BM25 always reads the corrected query: a word the
            catalog does not have matches nothing there).
        how: How these were chosen (e.g. "chosen on the validation split").
        fusion: ``words-first`` or ``rrf`` (see above).
    """

    dense_weight: float = DEFAULT_DENSE_WEIGHT
    sparse_weight: float = DEFAULT_SPARSE_WEIGHT
    dense_reads: DenseReads = DEFAULT_DENSE_READS  # type: ignore[assignment]
    how: str = "default"
    fusion: Fusion = DEFAULT_FUSION  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("dense_weight", "sparse_weight"):
            w = getattr(self, name)
            if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0):
                raise ShopsearchError(f"{name} must be a finite number >= 0, got {w!r}")
        if self.dense_weight == 0 and self.sparse_weight == 0:
            raise ShopsearchError("dense_weight and sparse_weight cannot both be 0")
        if self.dense_reads not in ("original", "corrected"):
            raise ShopsearchError(
                f"dense_reads must be 'original' or 'corrected', got {self.dense_reads!r}"
            )
        if self.fusion not in ("rrf", "words-first"):
            raise ShopsearchError(f"fusion must be 'rrf' or 'words-first', got {self.fusion!r}")

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> QueryTuning:
        """The tuning an index records; the defaults for an index that records none.

        Recorded weights are kept as recorded; a manifest that records weights but no
        ``fusion`` (written before it was) is fused by weighted RRF alone, as it was then.
        """
        recorded = manifest.get("query") or {}
        weighted = "dense_weight" in recorded or "sparse_weight" in recorded
        return cls(
            dense_weight=float(recorded.get("dense_weight", DEFAULT_DENSE_WEIGHT)),
            sparse_weight=float(recorded.get("sparse_weight", DEFAULT_SPARSE_WEIGHT)),
            dense_reads=recorded.get("dense_reads", DEFAULT_DENSE_READS),
            how=str(recorded.get("how", "default")),
            fusion=recorded.get("fusion", "rrf" if weighted else DEFAULT_FUSION),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in the manifest."""
        return asdict(self)


def query_words(tokenize: Callable[[str], list[str]], query: str) -> frozenset[str]:
    """The tokens of a query that :func:`words_first` asks a product to hold: BM25's tokens
    (lowercased, folded, sizes kept, stemmed; ``20 volt`` is ``20``, ``v``) less stop words."""
    return frozenset(t for t in tokenize(query) if t not in STOPWORDS)


def words_first(
    hits: Sequence[RankedHit], words: frozenset[str], tokenize: Callable[[str], Iterable[str]]
) -> list[RankedHit]:
    """A fused list with the products whose text holds every query word first.

    A structural rule (no weight to tune): when BM25 found products holding all the query's
    words, they go ahead of the rest, each group kept in its fused (RRF) order; a query none
    holds, or one without a content word, keeps its fused order. The shop's own words ranked
    first is the lexical side's strongest evidence (Algolia's ``words`` ranking criterion ranks
    by matched query words first); everything else, and every query where that evidence is
    missing (the vocabulary gap where a dense tower helps most), is ranked by the fusion.

    Args:
        hits: One query's fused hits, best first (their payloads hold the product text).
        words: :func:`query_words` of the query.
        tokenize: BM25's tokenizer (``LexicalEncoder.tokenize``, or a cache of it).

    Returns:
        The same hits, reordered; a product holding every word scores ``score + 1`` so that
        scores still fall with rank (RRF sums are below 1).
    """
    if not words:
        return list(hits)
    full = [words <= set(tokenize(hit_text(h))) for h in hits]
    if not any(full) or all(full):
        return list(hits)
    first = [
        replace(h, score=h.score + 1.0, retrieval=h.score + 1.0)
        for h, f in zip(hits, full, strict=True)
        if f
    ]
    return first + [h for h, f in zip(hits, full, strict=True) if not f]


#: Product texts whose tokens a retriever keeps for :func:`words_first` (a popular product is
#: tokenized once, not at every search that returns it).
TOKEN_CACHE = 16_384


def _token_cache(lexical: LexicalEncoder) -> Callable[[str], frozenset[str]]:
    """``lexical``'s tokens of a text, as a set, remembered for the last :data:`TOKEN_CACHE`."""
    return functools.lru_cache(maxsize=TOKEN_CACHE)(lambda text: frozenset(lexical.tokenize(text)))


#: BM25 hits of a corrected query searched for a product that holds the correction beside
#: another word of the query (the evidence a correction makes sense).
EVIDENCE_DEPTH = 20


def _content_words(text: str) -> list[str]:
    return [w for w in vocabulary_words(text) if w not in STOPWORDS and w not in _UNIT_WORDS]


def _only(
    corrector: QueryCorrector,
    text: str,
    correction: QueryCorrection | None,
    changes: set[tuple[str, str]],
) -> QueryCorrection | None:
    """``correction`` of ``text`` with only ``changes`` made (None when none is left)."""
    if correction is None or not changes:
        return None
    if len(changes) == len(correction.changes):
        return correction
    return corrector.correct(text, keep=lambda typed, fix: (typed, fix) in changes)


def load_corrector(collection: Collection) -> QueryCorrector | None:
    """The spelling corrector of an index version; None when it stores no vocabulary."""
    stored = collection.vocabulary()
    return QueryCorrector.from_stored(stored) if stored is not None else None


def check_query(query: str) -> str:
    """The query stripped; ShopsearchError when there is nothing to search for.

    A query without a letter or digit in any script (only spaces, punctuation, symbols
    or emoji) counts as empty, in every mode: the dense tower would otherwise turn it
    into a vector near arbitrary products.
    """
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}")
    stripped = query.strip()
    if not any(c.isalnum() for c in stripped):
        raise ShopsearchError(
            "query is empty (no letter or digit): give at least one word to search for"
        )
    return stripped


def check_model(manifest: dict[str, Any], encoder_fingerprint: str, where: str) -> None:
    """Refuses a model other than the one that built the index."""
    built = manifest["model"]
    if built["fingerprint"] != encoder_fingerprint:
        raise ShopsearchError(
            f"the index at {where} was built with model '{built['name']}' (weights {built['fingerprint']}), "
            f"not this one (weights {encoder_fingerprint}): pass --model {built['path']} or rebuild the index"
        )


class Retriever:
    """First stage: recall-oriented retrieval from a shopsearch index.

    Open with :meth:`open`; then :meth:`search` / :meth:`search_batch`.
    """

    def __init__(
        self,
        backend: Backend,
        collection: Collection,
        encoder: BiEncoder,
        auto_refresh_s: float | None = 1.0,
        synonyms: Callable[[], Synonyms] | None = None,
    ) -> None:
        self.backend = backend
        self.collection = collection
        self.encoder = encoder
        self.lexical = LexicalEncoder.from_config(collection.manifest["lexical"])
        self._text_tokens = _token_cache(self.lexical)
        self.tuning = QueryTuning.from_manifest(collection.manifest)
        self.corrector = load_corrector(collection)
        #: False applies every correction the corrector proposes, without the evidence
        #: :meth:`corrections` asks for (the policy before 2026-12; ``bench-typo`` compares).
        self.require_evidence = True
        #: The shop's synonyms, asked at each search (``watch_synonyms(dir).get`` re-reads
        #: ``synonyms.json`` when it changed); applied to BM25's query and the corrector.
        self.synonyms: Callable[[], Synonyms] = synonyms or Synonyms
        #: ``w`` of :mod:`retrieval.synonyms`' weighting (``bench-synonyms`` varies it).
        self.synonym_weight = SYNONYM_WEIGHT
        self._synonym_state: tuple[Any, ...] = ()
        self._version = backend.current_version()
        self._checked_at = time.monotonic()
        self.auto_refresh_s = auto_refresh_s
        #: A newer build opened in the background (or why it could not be), and the thread.
        self._loaded: tuple[str, Collection, QueryCorrector | None] | BaseException | None = None
        self._loader: threading.Thread | None = None

    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str] | None = None,
        *,
        qdrant_url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        collection: str = "products",
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        encoder: BiEncoder | None = None,
        auto_refresh_s: float | None = 1.0,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
        rules_dir: str | os.PathLike[str] | None = None,
    ) -> Retriever:
        """Opens an index for searching.

        Args:
            index: Directory of an embedded index.
            qdrant_url: URL of a Qdrant server (instead of ``index``).
            api_key: Server API key.
            client: A ready ``QdrantClient`` (instead of ``index``/``qdrant_url``).
            collection: Collection (alias) name on a server.
            model: Query-tower model; None uses the model recorded in the index.
            device: Torch device; None picks CUDA when present.
            encoder: A loaded encoder to share (e.g. between retriever and indexer).
            auto_refresh_s: Look for a newer build at most this often (seconds); None: only
                on :meth:`refresh`.
            backend: Query-tower backend (torch, onnx, openvino), see ``BiEncoder``.
            quantize: None or ``int8`` (onnx/openvino).
            threads: Intra-op CPU threads of the query tower; None: the physical cores.
            rules_dir: Where the shop's ``synonyms.json`` is kept; None: beside an embedded
                index (a server index then has no synonyms). See ``retrieval.synonyms``.

        Raises:
            ShopsearchError: Another model than the index's (fingerprint), or a query tower whose
                probe vectors differ from the index's (``BiEncoder.check_probes``).
        """
        location = IndexLocation(
            path=Path(index) if index is not None else None,
            url=qdrant_url,
            api_key=api_key,
            client=client,
            collection=collection,
        )
        model_backend, backend = backend, open_backend(location)  # backend: the store from here
        col = backend.open()
        if encoder is None:
            recorded = col.manifest["model"]
            chosen = model
            if chosen is None and not Path(recorded["path"]).exists():
                chosen = recorded["name"]  # the packaged default moved with a new venv
            encoder = BiEncoder(
                chosen if chosen is not None else recorded["path"],
                device=device,
                backend=model_backend,
                quantize=quantize,
                threads=threads,
            )
        check_model(col.manifest, encoder.fingerprint, location.describe())
        encoder.check_probes(col.manifest, location.describe())
        side = Path(rules_dir) if rules_dir is not None else location.path
        if rules_dir is not None and not side.is_dir():
            raise ShopsearchError(f"rules_dir {side}: no such directory")
        synonyms = watch_synonyms(side).get if side is not None else None
        return cls(backend, col, encoder, auto_refresh_s, synonyms=synonyms)

    @property
    def manifest(self) -> dict[str, Any]:
        """What the index records about itself (model, recipe, counts, build id)."""
        return self.collection.manifest

    @property
    def schema(self) -> FieldSchema:
        """The index's fields and what each can do (filter, facet, sort, search)."""
        return self.collection.schema

    def refresh(self) -> bool:
        """Switches to a newer build of the index if one was promoted; True when it did."""
        version = self.backend.current_version()
        if version is None or version == self._version:
            return False
        self._swap(self._prepare(version))
        return True

    def _prepare(self, version: str) -> tuple[str, Collection, QueryCorrector | None]:
        """Opens (and checks) a newer build without touching the one searches use."""
        new = self.backend.open()
        try:
            check_model(new.manifest, self.encoder.fingerprint, self.backend.location.describe())
            self.encoder.check_probes(new.manifest, self.backend.location.describe())
            return version, new, load_corrector(new)
        except BaseException:
            new.close()
            raise

    def _swap(
        self, prepared: tuple[str, Collection, QueryCorrector | None], close_later: bool = False
    ) -> None:
        version, new, corrector = prepared
        old, self.collection, self._version = self.collection, new, version
        self.lexical = LexicalEncoder.from_config(new.manifest["lexical"])
        self._text_tokens = _token_cache(self.lexical)
        self.tuning = QueryTuning.from_manifest(new.manifest)
        self.corrector = corrector
        if close_later:  # closing a large build takes a while too: not on a search's time
            threading.Thread(target=old.close, name="shopsearch-close", daemon=True).start()
        else:
            old.close()

    def _maybe_refresh(self) -> None:
        """With ``auto_refresh_s`` > 0 a newer build is opened in a background thread (a
        build's checks and load take seconds on a large index: searches go on meanwhile) and
        swapped in by the first call after it is ready; with 0, on the calling thread."""
        if self.auto_refresh_s is None:
            return
        loaded, self._loaded = self._loaded, None
        if isinstance(loaded, BaseException):
            raise loaded  # the newer build failed its checks: say so once, then look again
        if loaded is not None:
            if loaded[0] != self._version and loaded[0] == self.backend.current_version():
                self._swap(loaded, close_later=True)
            else:  # already there (an explicit refresh), or superseded meanwhile
                loaded[1].close()
        now = time.monotonic()
        if now - self._checked_at > self.auto_refresh_s:
            self._checked_at = now
            if not self.auto_refresh_s:
                self.refresh()
            elif self._loader is None or not self._loader.is_alive():
                self._loader = threading.Thread(
                    target=self._load_newer, name="shopsearch-refresh", daemon=True
                )
                self._loader.start()

    def _load_newer(self) -> None:
        try:
            version = self.backend.current_version()
            if version is not None and version != self._version:
                self._loaded = self._prepare(version)
        except Exception as exc:
            self._loaded = exc

    def _synonyms(
        self,
    ) -> tuple[SynonymMatcher, frozenset[str], Callable[[str], float | None] | None]:
        """The synonyms now: their matcher, their words' stems (known to the corrector), and
        the IDF of a token (None: no product holds it, or no vocabulary to count it in).

        Compiled again only when the list, the index version or its corrector changed.
        """
        synonyms = self.synonyms()
        state = self._synonym_state
        key = (synonyms, self.collection, self.synonym_weight)
        if state and state[0] is synonyms and state[1] is self.collection and state[2] == key[2]:
            return state[3]
        matcher = SynonymMatcher(synonyms, self.lexical.tokenize, self.synonym_weight)
        corrector = self.corrector
        stems = frozenset(corrector.stem(w) for w in synonyms.words()) if corrector else frozenset()
        n_docs = int(self.collection.manifest.get("count") or 0)
        idf = (
            token_idf(corrector.counts, n_docs, self.lexical.tokenize)
            if matcher and corrector is not None
            else None
        )
        compiled = (matcher, stems, idf)
        self._synonym_state = (*key, compiled)
        return compiled

    def specs(
        self,
        queries: Sequence[str],
        k: int,
        filters: Filters | dict | None,
        mode: Mode | None,
        candidates: int | None = None,
        user_vector: np.ndarray | None = None,
        user_weight: float = USER_PREFETCH_WEIGHT,
        with_vectors: bool = False,
        corrections: Sequence[QueryCorrection | None] | None = None,
        exact: bool = False,
    ) -> list[QuerySpec]:
        """Store queries for these texts (the query tower runs here).

        ``corrections`` (one per query, None where nothing changed) decide what BM25 and the
        dense tower read: BM25 the corrected query, dense per :attr:`QueryTuning.dense_reads`.
        """
        mode = mode or DEFAULT_MODE
        if not 1 <= k <= MAX_K:
            raise ShopsearchError(f"k must be between 1 and {MAX_K}, got {k}")
        flt = Filters.coerce(filters)
        texts = [check_query(q) for q in queries]
        applied = [
            c if c is not None and c.applied else None for c in (corrections or [None] * len(texts))
        ]
        if len(applied) != len(texts):
            raise ValueError(f"{len(applied)} corrections for {len(texts)} queries")
        fixed = [c.corrected if c is not None else t for t, c in zip(texts, applied, strict=True)]
        # BM25 reads the typed words beside their corrections: a word the corrector took for a
        # typo still matches wherever the catalog has it after all (a log word, a glued form).
        lexical = [
            " ".join([f, *(a for a, _ in c.changes)]) if c is not None else f
            for f, c in zip(fixed, applied, strict=True)
        ]
        dense_texts = fixed if self.tuning.dense_reads == "corrected" else texts
        dense = (
            self.encoder.encode_query(dense_texts)
            if mode in ("dense", "hybrid")
            else [None] * len(texts)
        )
        sparse: list[Any] = [None] * len(texts)
        if mode in ("bm25", "hybrid"):
            matcher, _, idf = self._synonyms()
            sparse = [
                self.lexical.encode_query(
                    t, matcher.expand(self.lexical.tokenize(t), idf).weights if matcher else None
                )
                for t in lexical
            ]
        extra = (
            ((np.asarray(user_vector, dtype=np.float32), user_weight),)
            if user_vector is not None
            else ()
        )
        return [
            QuerySpec(
                k=k,
                mode=mode,
                dense=d,
                sparse=s,
                filters=flt,
                candidates=candidates,
                extra_dense=extra,
                with_vectors=with_vectors,
                dense_weight=self.tuning.dense_weight,
                sparse_weight=self.tuning.sparse_weight,
                exact=exact,
            )
            for d, s in zip(dense, sparse, strict=True)
        ]

    def search(
        self,
        query: str,
        k: int = 100,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
        candidates: int | None = None,
        user_vector: np.ndarray | None = None,
        with_vectors: bool = False,
        correct: bool = True,
        exact: bool = False,
    ) -> Hits:
        """Top ``k`` products for a query.

        Args:
            query: What the shopper typed (an over-long query is truncated).
            k: Number of hits.
            filters: ``Filters`` or a dict with category, brands, min_price, max_price, in_stock.
            mode: ``dense``, ``bm25`` or ``hybrid`` (default).
            candidates: Prefetch depth per source in hybrid mode.
            user_vector: A shopper's taste vector
                (:func:`~personalization.personalizer.taste_vector`): adds a prefetch of the
                products nearest to it, fused with the query's, so products this shopper
                prefers can enter the candidates.
            with_vectors: Also return each hit's dense vector (``RankedHit.vector``), in the
                same store call.
            correct: Correct misspelled words from the catalog's vocabulary (see
                ``retrieval.spelling``); False searches the query as typed.
            exact: Scan the dense vectors exactly (no HNSW; the fp32 vectors, never an int8
                copy), in every dense prefetch (the query's and ``user_vector``'s), on both
                backends. Slower, and grows with the catalog: the reference approximate
                search is measured against (``shopsearch bench-index``). BM25 is exact anyway.

        Returns:
            Up to ``k`` hits, best first, with ``score == retrieval``; ``.corrected`` is the
            corrected query when a correction was applied (else None), ``.suggestion`` one
            only offered (see :meth:`corrections`).
        """
        return self.search_batch(
            [query],
            k=k,
            filters=filters,
            mode=mode,
            candidates=candidates,
            user_vector=user_vector,
            with_vectors=with_vectors,
            correct=correct,
            exact=exact,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 100,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
        candidates: int | None = None,
        user_vector: np.ndarray | None = None,
        with_vectors: bool = False,
        correct: bool = True,
        exact: bool = False,
    ) -> list[Hits]:
        """:meth:`search` for many queries at once (one encoder batch, one store batch)."""
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one")
        if not queries:
            return []
        self._maybe_refresh()
        corrections = self.corrections(queries) if correct else [None] * len(queries)
        specs = self.specs(
            queries,
            self._store_k(k, mode, candidates),
            filters,
            mode,
            candidates,
            user_vector,
            with_vectors=with_vectors,
            corrections=corrections,
            exact=exact,
        )
        return [
            Hits(to_hits(self._ordered(r, q, c, k, mode)), c)
            for r, q, c in zip(
                self.collection.search_batch(specs), queries, corrections, strict=True
            )
        ]

    def _words_first(self, mode: Mode | None) -> bool:
        return (mode or DEFAULT_MODE) == "hybrid" and self.tuning.fusion == "words-first"

    def _store_k(self, k: int, mode: Mode | None, candidates: int | None) -> int:
        """Hits to ask the store for: with ``words-first`` fusion the whole fused depth (an
        all-words product may sit below ``k`` in RRF order), cut to ``k`` after."""
        if not 1 <= k <= MAX_K:
            raise ShopsearchError(f"k must be between 1 and {MAX_K}, got {k}")
        if not self._words_first(mode):
            return k
        return min(MAX_K, max(k, candidates or 0, 100))

    def _ordered(
        self,
        results: Sequence[RankedHit],
        query: str,
        correction: QueryCorrection | None,
        k: int,
        mode: Mode | None,
    ) -> list[RankedHit]:
        """The store's fused list in the tuning's order (:func:`words_first`), cut to ``k``."""
        if not self._words_first(mode):
            return list(results)[:k]
        text = correction.corrected if correction is not None and correction.applied else query
        words = query_words(self.lexical.tokenize, text)
        return words_first(results, words, self._text_tokens)[:k]

    def search_filtered(
        self,
        query: str,
        filters: Sequence[Filters | dict | None],
        k: int = 100,
        mode: Mode | None = None,
        user_vector: np.ndarray | None = None,
        with_vectors: bool = False,
        correct: bool = True,
    ) -> list[Hits]:
        """:meth:`search` for one query under each of several filters: one correction, one
        query encoding and one store batch (disjunctive facets' "the same query without this
        field's conditions"). One list per filter, in order; the arguments as for :meth:`search`.
        """
        if not filters:
            return []
        self._maybe_refresh()
        correction = self.corrections([query])[0] if correct else None
        first, *_ = self.specs(
            [query],
            self._store_k(k, mode, None),
            filters[0],
            mode,
            user_vector=user_vector,
            with_vectors=with_vectors,
            corrections=[correction],
        )
        specs = [first, *(replace(first, filters=Filters.coerce(f)) for f in filters[1:])]
        return [
            Hits(to_hits(self._ordered(r, query, correction, k, mode)), correction)
            for r in self.collection.search_batch(specs)
        ]

    def corrections(self, queries: Sequence[str]) -> list[QueryCorrection | None]:
        """What the corrector does to each query (None where nothing, or no vocabulary).

        A proposed change is applied only with evidence that the typed word is a typo:

        1. the word is unknown to the language as well as to the catalog
           (:func:`retrieval.spelling.language_words`): ``sofa`` in a shop without sofas is
           a word the shop does not sell, not a misspelled ``soft``;
        2. the correction makes sense with the rest of the query: when the query has other
           words, one product among BM25's top :data:`EVIDENCE_DEPTH` for the corrected query
           holds the correction and one of them (``kohler faucet`` -> ``roller faucet`` has
           none; ``ridgline drill`` -> ``ridgeline drill`` has).

        Without such a change the query is searched as typed. A change of a word of the
        language that makes sense with the rest of the query (rule 2) is then offered
        instead ("did you mean": ``applied=False``); one that makes no sense with it
        (``roller faucet``) is not offered either.
        """
        if self.corrector is None:
            return [None] * len(queries)
        corrector = self.corrector
        texts = [check_query(q) for q in queries]
        _, synonym_stems, _ = self._synonyms()
        proposed = [corrector.correct(t, also_known=synonym_stems) for t in texts]
        if not self.require_evidence:
            return proposed
        # 1. only words unknown to the language; the query with just those changes
        sure: list[set[tuple[str, str]]] = [
            {c for c in p.changes if not corrector.is_language_word(c[0].lower())}
            if p is not None
            else set()
            for p in proposed
        ]
        candidates = [
            _only(corrector, t, p, ok) for t, p, ok in zip(texts, proposed, sure, strict=True)
        ]
        # 2. each change beside another catalog word of the query: one product holds both
        applied = self._supported(candidates)
        # nothing applied: the words of the language, where they make sense, are offered
        offers = [
            None if p is None or done else _only(corrector, t, p, set(p.changes) - ok)
            for t, p, ok, done in zip(texts, proposed, sure, applied, strict=True)
        ]
        offered = self._supported(offers)
        out: list[QueryCorrection | None] = []
        for text, c, kept, o, shown in zip(
            texts, candidates, applied, offers, offered, strict=True
        ):
            if kept:
                out.append(_only(corrector, text, c, kept))
            elif shown:
                out.append(replace(_only(corrector, text, o, shown), applied=False))
            else:
                out.append(None)
        return out

    def _supported(
        self, corrections: Sequence[QueryCorrection | None]
    ) -> list[set[tuple[str, str]]]:
        """Per correction, its changes with rule 2's evidence (one BM25 batch for them all)."""
        asks = [
            i
            for i, c in enumerate(corrections)
            if c is not None and any(self._others(c, fix) for _, fix in c.changes)
        ]
        found = dict(zip(asks, self._cooccurring([corrections[i] for i in asks]), strict=True))
        return [
            set()
            if c is None
            else {(t, f) for t, f in c.changes if i not in found or self._holds(c, f, found[i])}
            for i, c in enumerate(corrections)
        ]

    def _others(self, correction: QueryCorrection, fix: str) -> set[str]:
        """Stems of the corrected query's other words the catalog knows (the evidence's partners)."""
        stem = self.corrector.stem
        return {
            stem(w) for w in _content_words(correction.corrected) if self.corrector.knows(w)
        } - {stem(fix)}

    def _holds(self, correction: QueryCorrection, fix: str, products: Sequence[set[str]]) -> bool:
        """Whether one product holds ``fix`` and another catalog word of the query."""
        others = self._others(correction, fix)
        fixed = self.corrector.stem(fix)
        return not others or any(fixed in words and words & others for words in products)

    def _cooccurring(self, corrections: Sequence[QueryCorrection]) -> list[list[set[str]]]:
        """Per correction, the stemmed words of each product BM25 ranks first for it."""
        if not corrections:
            return []
        specs = self.specs([c.corrected for c in corrections], EVIDENCE_DEPTH, None, "bm25")
        return [
            [
                {self.corrector.stem(w) for w in vocabulary_words(hit_text(h))}
                for h in to_hits(result)
            ]
            for result in self.collection.search_batch(specs)
        ]

    def vectors(self, product_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored dense vectors of products (float32, ``(dim,)`` each); unknown ids absent.

        The index is the one place product vectors are kept: personalization reads them here.
        """
        if not product_ids:
            return {}
        self._maybe_refresh()
        got = self.collection.retrieve(list(product_ids), with_vectors=True)
        return {
            pid: np.asarray(hit.vector, dtype=np.float32)
            for pid, hit in got.items()
            if hit.vector is not None
        }

    def payloads(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored fields of products (title, brand, category, price, ...); unknown ids absent."""
        if not product_ids:
            return {}
        self._maybe_refresh()
        got = self.collection.retrieve(list(product_ids))
        return {pid: dict(hit.payload) for pid, hit in got.items()}

    def why_empty(self, filters: Filters | dict | None) -> str | None:
        """Why ``filters`` match no product (e.g. ``"no product has brand 'dewalt'"``), or None.

        A few counts: call it only after a search came back empty, not on every search.
        """
        return self.collection.why_empty(filters)

    def close(self) -> None:
        """Releases the index (and a newer build being opened in the background)."""
        if self._loader is not None:
            self._loader.join()
        loaded, self._loaded = self._loaded, None
        if isinstance(loaded, tuple):
            loaded[1].close()
        self.collection.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_hits(results: Sequence[RankedHit]) -> list[RankedHit]:
    """The store's hits as the retriever returns them: numbered from 1, store-only keys dropped."""
    return [
        replace(r, retrieval_rank=rank, payload=public_payload(r.payload))
        for rank, r in enumerate(results, start=1)
    ]


__all__ = [
    "DEFAULT_FUSION",
    "DEFAULT_MODE",
    "QueryTuning",
    "Retriever",
    "check_query",
    "model_fingerprint",
    "query_words",
    "resolve_model_path",
    "words_first",
]

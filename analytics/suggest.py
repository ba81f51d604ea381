"""Search-box suggestions: complete a typed prefix from the shop's own searches and catalog.

    Suggester.build(log_paths, catalog, min_shoppers=5) -> Suggester   # in the background
    Suggester.from_index(index, log_paths=None) -> Suggester
    suggester.suggest("cordless dri", k=8, context=profile) -> list[Suggestion]

Two sources, merged into one list of completions (*entries*), each with a popularity score:

* **log**: queries of the service's search log (:mod:`personalization.searchlog`) whose search
  led to a ``click``, ``add_to_cart`` or ``purchase`` (interaction rows joined by
  ``search_id``), as searched (the corrected query when the corrector changed it, so a typo
  that found its product is not suggested back), normalized (:func:`normalize`: NFKC,
  lowercase, spaces collapsed; accents folded for matching). A query is kept only when at
  least ``min_shoppers`` distinct shoppers typed it (k-anonymity, default
  :data:`MIN_SHOPPERS`): a shopper is their pseudonym, an anonymous search counts by its
  session, and an anonymous search without a session counts towards popularity but towards
  no shopper. Entries never carry a shopper's pseudonym. Score: ``1 + log(1 + searches)``
  (searches that led to an interaction; the 1 puts what shoppers type above catalog text of
  equal count).
* **catalog**: the catalog's own text from the index payloads: title phrases, brands and
  every level of the category paths. Title phrases are the runs of one to
  :data:`MAX_PHRASE_WORDS` consecutive words inside a title segment (titles are cut at
  ``, ; ( ) |`` and `` - ``; ``drill/driver`` is two words), starting with a letter and not
  ending on a stopword; a phrase must be in at least :data:`MIN_PHRASE_PRODUCTS` products (a
  phrase of one product is mostly a model number). Runs start at any word, not only the title's first, so ``dri`` completes
  to ``drill`` and ``cordless drill`` though titles start with the brand. Score:
  ``log(1 + products having it)``.

When a text comes from both, the higher score wins (with its source).

Matching: every earlier word of the prefix must match exactly; the last word is a prefix, and
typo-tolerant when the exact completions are fewer than ``k``: one edit (insert, delete,
substitute, swap) for a last word of :data:`MIN_TYPO_CHARS` characters or more, found by trying
each one-edit variant against the sorted word list, and two edits for a word of
:data:`LONG_WORD` or more, through SymSpell (``symspellpy``, as :mod:`retrieval.spelling`).
A completion found through a typo scores :data:`TYPO_FACTOR` times its score.

Context: with the shopper's profile (:class:`personalization.profiles.UserProfile`) each
candidate's score is multiplied by ``1 + CONTEXT_BOOST * a``, where ``a`` (0 to 1) is the larger
of the shopper's affinity to the entry's category and to its brand (a phrase's category is the
deepest category common to the products having it, a logged query's the most frequent one of
its clicked products). :data:`CONTEXT_BOOST` is 0.5: at most one and a half times, so a
shopper's taste reorders near-equals and never buries what everyone searches. The boost
re-ranks the :data:`POOL` best candidates of the prefix.

Speed: everything is computed by :meth:`Suggester.build`; a request does two bisections over
the sorted entries and reads the best :data:`POOL` of its prefix (precomputed for every prefix
matching more than :data:`BIG_RANGE` entries, a partial sort of at most that many otherwise).

Forgetting: ``forget-user`` removes the shopper's rows from the search log, so a Suggester
built again from the log no longer counts them; the service rebuilds (see
``shopsearch.service.suggestions``).
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from core.errors import ShopsearchError
from personalization import searchlog
from retrieval.lexical import STOPWORDS

__all__ = [
    "CONTEXT_BOOST",
    "MIN_SHOPPERS",
    "CatalogText",
    "LogQueries",
    "SuggestContext",
    "Suggester",
    "Suggestion",
    "catalog_text",
    "log_queries",
    "normalize",
]

#: Distinct shoppers who must have typed a logged query before it is suggested.
MIN_SHOPPERS = 5
#: The most suggestions one call returns.
MAX_K = 50
#: Candidates a prefix keeps, best first, for the context boost to re-rank.
POOL = 64
#: Prefixes matching more entries than this have their best POOL precomputed.
BIG_RANGE = 256
#: Largest factor of the shopper's context: ``score * (1 + CONTEXT_BOOST * affinity)``.
CONTEXT_BOOST = 0.5
#: Added to a logged query's score (over a catalog phrase of the same count).
LOG_BONUS = 1.0
#: Score factor of a completion found through a typo in the last word.
TYPO_FACTOR = 0.5
#: A last word this long or longer is typo-tolerant (one edit).
MIN_TYPO_CHARS = 4
#: A last word this long or longer may be two edits from a complete word.
LONG_WORD = 8
#: Words of a title phrase, at most.
MAX_PHRASE_WORDS = 3
#: Products a title phrase must be in (brands and categories always count).
MIN_PHRASE_PRODUCTS = 2
#: Interactions that make a logged search count.
ANSWERED = ("click", "add_to_cart", "purchase")
#: Word beginnings up to this long are kept in a set (longer ones are looked up by bisection).
PREFIX_SET_CHARS = 12
#: Characters a one-edit variant may insert or substitute.
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SPACES = re.compile(r"\s+")
_SEGMENTS = re.compile(r"[,;()|\[\]{}]| - | – ")
_SLASHED = re.compile(r"(?<=[^\W\d_])/(?=[^\W\d_])")  # drill/driver: two words
_EDGE_PUNCT = "\"'.,:;!?*()[]{}"
_END = "\U0010ffff"

Source = Literal["log", "catalog"]
_SOURCES: tuple[Source, Source] = ("log", "catalog")


@dataclass(frozen=True)
class Suggestion:
    """One completion.

    Attributes:
        text: What to put in the search box (lowercase).
        source: ``log`` (a query shoppers searched) or ``catalog`` (the catalog's text).
        score: Its rank score (popularity, times the context boost and the typo factor);
            comparable within one answer only.
    """

    text: str
    source: Source
    score: float


@dataclass(frozen=True)
class SuggestContext:
    """The shopper's taste the ranking leans to (affinities 0 to 1, as in a profile).

    Attributes:
        categories: Category path (every level, ``"Tools > Power Tools"``) -> affinity.
        brands: Brand -> affinity.
    """

    categories: Mapping[str, float] = field(default_factory=dict)
    brands: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, profile: Any) -> SuggestContext | None:
        """The context of a :class:`~personalization.profiles.UserProfile` (None for a cold
        one, or None)."""
        if profile is None or isinstance(profile, SuggestContext):
            return profile
        if getattr(profile, "n_events", 0) == 0:
            return None
        return cls(categories=dict(profile.category_affinity), brands=dict(profile.brand_affinity))


def _fold(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _display(text: str) -> str:
    """NFKC, lowercase, spaces collapsed and stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalize(text: str) -> str:
    """The matching key of a text: NFKC, lowercase, accents folded, spaces collapsed and
    stripped (``"  Café  Table"`` -> ``"cafe table"``)."""
    return _fold(_display(text))


# -- the log ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogQueries:
    """What :func:`log_queries` read from a search log.

    Attributes:
        queries: Normalized query -> (text shown, searches that led to an interaction,
            category, brand), for the queries that passed the shopper guard.
        searches: Search rows read.
        answered: Of them, searches that led to a click, add to cart or purchase.
        kept_out: Distinct queries typed by fewer than ``min_shoppers`` shoppers.
        min_shoppers: The guard used.
    """

    queries: Mapping[str, tuple[str, int, str | None, str | None]]
    searches: int
    answered: int
    kept_out: int
    min_shoppers: int


def log_queries(
    paths: Any,
    min_shoppers: int = MIN_SHOPPERS,
    products: Mapping[str, tuple[str | None, str | None]] | None = None,
    since: float | None = None,
    pseudonymizer: Any = None,
) -> LogQueries:
    """The queries of a search log that led to an interaction, with the shopper guard.

    Args:
        paths: Search log folders or segment files (:func:`personalization.searchlog.scan`).
        min_shoppers: Distinct shoppers a query needs (pseudonyms; an anonymous search counts
            by its session; one without a session counts for no shopper).
        products: Product id -> (category, brand), to give each query the most frequent
            category and brand of the products chosen from it (the context boost); None: none.
        since: Read rows from this time on (epoch seconds); None: the whole log.
        pseudonymizer: The key the log was written with
            (:class:`personalization.privacy.Pseudonymizer`): with it, the rows of shoppers
            tombstoned in a log folder's ``forgotten.txt`` (``forget-user``) are left out even
            from a segment not rewritten yet. None: the rows as they are.

    Raises:
        ShopsearchError: ``min_shoppers`` below 1, or a log path that is missing or not a
            segment.
    """
    if min_shoppers < 1:
        raise ShopsearchError(f"min_shoppers must be at least 1, got {min_shoppers}")
    lf = searchlog.scan(paths, since=since)
    gone = searchlog.forgotten_pseudonyms(paths, pseudonymizer, lf)
    if gone:
        lf = lf.filter(~pl.col("pseudonym").is_in(gone) | pl.col("pseudonym").is_null())
    searches = lf.filter(pl.col("event") == "search").select(
        "search_id",
        shopper=pl.when(pl.col("pseudonym").is_not_null())
        .then(pl.lit("p:") + pl.col("pseudonym"))
        .when(pl.col("session").is_not_null() & (pl.col("session") != ""))
        .then(pl.lit("s:") + pl.col("session")),
        display=pl.coalesce("corrected", "query")
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars(),
    )
    acts = lf.filter(pl.col("event").is_in(ANSWERED)).select("search_id", "product_id")
    answered = searches.join(acts.select("search_id").unique(), on="search_id", how="semi")
    answered = answered.filter(pl.col("display").is_not_null() & (pl.col("display") != ""))
    frames = pl.collect_all([searches.select(pl.len()), answered])
    n_searches = int(frames[0].item())
    df = frames[1]
    # the matching key (accents folded) in Python: one call per distinct text
    displays = df.select(pl.col("display").unique())
    displays = displays.with_columns(
        key=pl.Series([_fold(d) for d in displays["display"].to_list()], dtype=pl.String)
    )
    df = df.join(displays, on="display")
    per_key = df.group_by("key").agg(
        searches=pl.len(), shoppers=pl.col("shopper").drop_nulls().n_unique()
    )
    kept = per_key.filter(pl.col("shoppers") >= min_shoppers)
    shown = (
        df.join(kept.select("key"), on="key", how="semi")
        .group_by("key", "display")
        .len()
        .sort(["len", "display"], descending=[True, False])
        .unique("key", keep="first")
    )
    kept = kept.join(shown.select("key", "display"), on="key")
    where: dict[str, tuple[str | None, str | None]] = {}
    if products and kept.height:
        where = _query_products(df, acts, kept, products)
    queries = {
        key: (display, int(n), *where.get(key, (None, None)))
        for key, display, n in kept.select("key", "display", "searches").iter_rows()
    }
    return LogQueries(
        queries=queries,
        searches=n_searches,
        answered=df.height,
        kept_out=per_key.height - kept.height,
        min_shoppers=min_shoppers,
    )


def _query_products(
    answered: pl.DataFrame,
    acts: pl.LazyFrame,
    kept: pl.DataFrame,
    products: Mapping[str, tuple[str | None, str | None]],
) -> dict[str, tuple[str | None, str | None]]:
    """Kept query -> the most frequent category and brand of the products chosen from it."""
    chosen = (
        answered.lazy()
        .join(kept.lazy().select("key"), on="key", how="semi")
        .join(acts.drop_nulls("product_id"), on="search_id")
        .select("key", "product_id")
        .collect()
    )
    ids = chosen["product_id"].unique().to_list()
    info = pl.DataFrame(
        {
            "product_id": ids,
            "category": [(products.get(p) or (None, None))[0] for p in ids],
            "brand": [(products.get(p) or (None, None))[1] for p in ids],
        },
        schema={"product_id": pl.String, "category": pl.String, "brand": pl.String},
    )
    top = (
        chosen.join(info, on="product_id")
        .group_by("key")
        .agg(
            category=pl.col("category").drop_nulls().mode().sort().first(),
            brand=pl.col("brand").drop_nulls().mode().sort().first(),
        )
    )
    return {k: (c, b) for k, c, b in top.iter_rows()}


# -- the catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogText:
    """The catalog's completions (what :func:`catalog_text` read from the payloads).

    Attributes:
        entries: Normalized text -> (text shown, products having it, category, brand).
        products: Product id -> (category, brand), for the log's queries.
        count: Products read.
    """

    entries: Mapping[str, tuple[str, int, str | None, str | None]]
    products: Mapping[str, tuple[str | None, str | None]]
    count: int


def _common_category(a: str | None, b: str | None) -> str | None:
    """The deepest category path both are under (None: none)."""
    if a is None or b is None:
        return None
    if a == b:
        return a
    pa, pb = a.split(" > "), b.split(" > ")
    n = 0
    while n < min(len(pa), len(pb)) and pa[n] == pb[n]:
        n += 1
    return " > ".join(pa[:n]) or None


def _title_phrases(title: str) -> set[str]:
    """The phrases of one title (see the module's docstring)."""
    out: set[str] = set()
    for segment in _SEGMENTS.split(_SLASHED.sub(" ", _display(title))):
        words = [w.strip(_EDGE_PUNCT) for w in segment.split()]
        words = [w for w in words if w and any(c.isalnum() for c in w)]
        for i, first in enumerate(words):
            if not first[0].isalpha() or first in STOPWORDS:
                continue
            for n in range(1, MAX_PHRASE_WORDS + 1):
                if i + n > len(words):
                    break
                last = words[i + n - 1]
                if last in STOPWORDS or sum(c.isalpha() for c in last) < 2:
                    continue
                out.add(" ".join(words[i : i + n]))
    return out


def catalog_text(payloads: Iterable[Mapping[str, Any]]) -> CatalogText:
    """The completions of a catalog: title phrases, brands and category levels.

    Args:
        payloads: One mapping per product with ``product_id``, ``title``, ``brand`` and
            ``category`` (index payloads, ``Product`` fields); missing fields are skipped.

    Returns:
        The entries, with the products' category and brand.
    """
    phrases: Counter[str] = Counter()
    where: dict[str, list[Any]] = {}  # phrase -> [common category, brand or None]
    brands: Counter[str] = Counter()
    brand_shown: dict[str, str] = {}
    levels: Counter[str] = Counter()  # category path -> products under it
    products: dict[str, tuple[str | None, str | None]] = {}
    count = 0
    for p in payloads:
        count += 1
        category = p.get("category") or None
        brand = p.get("brand") or None
        pid = p.get("product_id")
        if pid is not None:
            products[str(pid)] = (category, brand)
        if brand:
            key = normalize(str(brand))
            if key:
                brands[key] += 1
                brand_shown.setdefault(key, str(brand).strip())
        if category:
            parts = str(category).split(" > ")
            for i in range(len(parts)):
                levels[" > ".join(parts[: i + 1])] += 1
        for phrase in _title_phrases(str(p.get("title") or "")):
            phrases[phrase] += 1
            seen = where.get(phrase)
            if seen is None:
                where[phrase] = [category, brand]
            else:
                if seen[0] != category:
                    seen[0] = _common_category(seen[0], category)
                if seen[1] != brand:
                    seen[1] = None
    entries: dict[str, tuple[str, int, str | None, str | None]] = {}

    def add(shown: str, n: int, category: str | None, brand: str | None) -> None:
        key = normalize(shown)
        if key and (key not in entries or entries[key][1] < n):
            entries[key] = (shown, n, category, brand)

    for phrase, n in phrases.items():
        if n >= MIN_PHRASE_PRODUCTS:
            add(phrase, n, *where[phrase])
    for path, n in levels.items():
        add(_SPACES.sub(" ", path.rsplit(" > ", 1)[-1]).strip(), n, path, None)
    for key, n in brands.items():
        add(_SPACES.sub(" ", brand_shown[key]), n, None, brand_shown[key])
    return CatalogText(entries=entries, products=products, count=count)


#: The payload keys :func:`catalog_text` reads.
PAYLOAD_KEYS = ("product_id", "title", "brand", "category")


def _payloads(catalog: Any) -> Iterable[Mapping[str, Any]]:
    """Payloads of a Retriever, a Collection, or an iterable of mappings / Products."""
    collection = getattr(catalog, "collection", None)
    if collection is not None and hasattr(collection, "scroll_payloads"):
        return collection.scroll_payloads(list(PAYLOAD_KEYS))
    if hasattr(catalog, "scroll_payloads"):
        return catalog.scroll_payloads(list(PAYLOAD_KEYS))
    return (
        p if isinstance(p, Mapping) else {k: getattr(p, k, None) for k in PAYLOAD_KEYS}
        for p in catalog
    )


# -- the suggester ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuggesterStats:
    """What a :class:`Suggester` was built from.

    Attributes:
        entries: Completions it holds.
        log_entries: Of them, from the log.
        catalog_entries: Of them, from the catalog.
        products: Catalog products read.
        searches: Search rows of the log read (0 without a log).
        answered: Searches that led to a click, add to cart or purchase.
        kept_out: Logged queries typed by fewer than ``min_shoppers`` shoppers.
        min_shoppers: The shopper guard.
        build_s: Seconds the build took.
        built_at: When it was built (epoch seconds).
    """

    entries: int
    log_entries: int
    catalog_entries: int
    products: int
    searches: int
    answered: int
    kept_out: int
    min_shoppers: int
    build_s: float
    built_at: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


class Suggester:
    """Completes typed prefixes; immutable once built, so threads may share it.

    Build with :meth:`build` (or :meth:`from_index`), not per request.
    """

    def __init__(
        self,
        entries: Mapping[str, tuple[str, Source, float, str | None, str | None]],
        stats: SuggesterStats,
    ) -> None:
        keys = sorted(entries)
        self.stats = stats
        self._keys = keys
        self._texts = [entries[k][0] for k in keys]
        self._sources = np.array([_SOURCES.index(entries[k][1]) for k in keys], dtype=np.int8)
        self._scores = np.array([entries[k][2] for k in keys], dtype=np.float64)
        cats: dict[str, int] = {}
        brands: dict[str, int] = {}
        self._cat = np.array(
            [cats.setdefault(c, len(cats)) if (c := entries[k][3]) else -1 for k in keys],
            dtype=np.int32,
        )
        self._brand = np.array(
            [brands.setdefault(b, len(brands)) if (b := entries[k][4]) else -1 for k in keys],
            dtype=np.int32,
        )
        self._cat_names = list(cats)
        self._brand_names = list(brands)
        self._words = sorted({w for k in keys for w in k.split(" ")})
        # every beginning of a word, up to PREFIX_SET_CHARS: a typo variant's test is one lookup
        self._word_starts = frozenset(
            w[:i] for w in self._words for i in range(1, min(len(w), PREFIX_SET_CHARS) + 1)
        )
        self._top = self._precompute()
        # plain lists for the request path: small reads cost less than numpy's calls
        self._score_list: list[float] = self._scores.tolist()
        self._cat_list: list[int] = self._cat.tolist()
        self._brand_list: list[int] = self._brand.tolist()
        self._symspell = self._long_words()

    # -- building --------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        log_paths: Any = None,
        catalog: Any = None,
        min_shoppers: int = MIN_SHOPPERS,
        since: float | None = None,
        pseudonymizer: Any = None,
    ) -> Suggester:
        """A suggester from a search log and a catalog.

        Args:
            log_paths: Search log folders or segment files; None: no log (catalog only).
            catalog: A :class:`CatalogText`, a ``Retriever`` or index ``Collection`` (its
                payloads are read), or an iterable of payload mappings or ``Product``; None:
                no catalog text.
            min_shoppers: Distinct shoppers a logged query needs (k-anonymity).
            since: Read the log from this time on (epoch seconds).
            pseudonymizer: The log's key: leaves out the shoppers tombstoned in the log
                folder (:func:`log_queries`).

        Raises:
            ShopsearchError: ``min_shoppers`` below 1, or a missing or unreadable log path.
        """
        if min_shoppers < 1:
            raise ShopsearchError(f"min_shoppers must be at least 1, got {min_shoppers}")
        t0 = time.perf_counter()
        if catalog is None:
            text = CatalogText(entries={}, products={}, count=0)
        elif isinstance(catalog, CatalogText):
            text = catalog
        else:
            text = catalog_text(_payloads(catalog))
        entries: dict[str, tuple[str, Source, float, str | None, str | None]] = {
            key: (shown, "catalog", math.log1p(n), category, brand)
            for key, (shown, n, category, brand) in text.entries.items()
        }
        n_catalog = len(entries)
        logged = None
        if log_paths is not None:
            logged = log_queries(
                log_paths, min_shoppers, text.products, since=since, pseudonymizer=pseudonymizer
            )
            for key, (shown, n, category, brand) in logged.queries.items():
                score = LOG_BONUS + math.log1p(n)
                known = entries.get(key)
                if known is not None and known[2] > score:
                    continue
                if known is not None:
                    n_catalog -= 1
                entries[key] = (shown, "log", score, category, brand)
        stats = SuggesterStats(
            entries=len(entries),
            log_entries=len(entries) - n_catalog,
            catalog_entries=n_catalog,
            products=text.count,
            searches=logged.searches if logged else 0,
            answered=logged.answered if logged else 0,
            kept_out=logged.kept_out if logged else 0,
            min_shoppers=min_shoppers,
            build_s=0.0,
            built_at=time.time(),
        )
        out = cls(entries, stats)
        out.stats = SuggesterStats(
            **{**stats.as_dict(), "build_s": round(time.perf_counter() - t0, 3)}
        )
        return out

    @classmethod
    def from_index(
        cls,
        index: Any,
        log_paths: Any = None,
        min_shoppers: int = MIN_SHOPPERS,
        since: float | None = None,
        pseudonymizer: Any = None,
    ) -> Suggester:
        """A suggester from an index's payloads (no model is loaded) and a search log.

        Args:
            index: An index directory or a ``retrieval.store.IndexLocation``.
            log_paths, min_shoppers, since, pseudonymizer: As :meth:`build`.

        Raises:
            ShopsearchError: No index there, or as :meth:`build`.
        """
        from retrieval.store import IndexLocation, open_backend
        from retrieval.store.base import missing_index

        location = index if isinstance(index, IndexLocation) else IndexLocation(path=index)
        backend = open_backend(location)
        if not backend.exists():
            raise missing_index(location)
        collection = backend.open()
        try:
            text = catalog_text(collection.scroll_payloads(list(PAYLOAD_KEYS)))
        finally:
            collection.close()
        return cls.build(
            log_paths, text, min_shoppers=min_shoppers, since=since, pseudonymizer=pseudonymizer
        )

    def _best(self, lo: int, hi: int, n: int = POOL) -> np.ndarray:
        """Indices of the ``n`` best entries in ``[lo, hi)``, best first (ties: key order)."""
        scores = self._scores[lo:hi]
        if hi - lo > n:  # the n best; of the entries tied at the cut, those first in key order
            cut = np.partition(scores, hi - lo - n)[hi - lo - n]
            above = np.flatnonzero(scores > cut)
            part = np.concatenate([above, np.flatnonzero(scores == cut)[: n - len(above)]])
        else:
            part = np.arange(hi - lo)
        order = np.lexsort((part, -scores[part]))
        return part[order] + lo

    def _precompute(self) -> dict[str, list[int]]:
        """The best POOL entries of every prefix that matches more than BIG_RANGE entries."""
        keys = self._keys
        top: dict[str, list[int]] = {}
        stack = [("", 0, len(keys))]
        while stack:
            prefix, lo, hi = stack.pop()
            if hi - lo <= BIG_RANGE:
                continue
            top[prefix] = self._best(lo, hi).tolist()
            at, i = len(prefix), lo
            while i < hi:
                if len(keys[i]) == at:
                    i += 1
                    continue
                child = prefix + keys[i][at]
                j = bisect.bisect_left(keys, child + _END, i, hi)
                stack.append((child, i, j))
                i = j
        return top

    def _long_words(self) -> Any:
        """SymSpell over the words long enough to be two edits from a long typed word."""
        long = [w for w in self._words if len(w) >= LONG_WORD - 2 and w.isalpha()]
        if not long:
            return None
        from symspellpy import SymSpell

        sym = SymSpell(max_dictionary_edit_distance=2)
        for w in long:
            sym.create_dictionary_entry(w, 1)
        return sym

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._keys)

    def _candidates(self, prefix: str) -> list[int]:
        """The best POOL entries starting with ``prefix`` (any order for a short range)."""
        keys = self._keys
        lo = bisect.bisect_left(keys, prefix)
        hi = bisect.bisect_left(keys, prefix + _END, lo)
        if hi - lo > BIG_RANGE:
            return self._top[prefix]
        if hi - lo <= POOL:
            return list(range(lo, hi))
        # stable: of equal scores, the first in key order
        return heapq.nlargest(POOL, range(lo, hi), key=self._score_list.__getitem__)

    def _is_word_prefix(self, text: str) -> bool:
        if len(text) <= PREFIX_SET_CHARS:
            return text in self._word_starts
        i = bisect.bisect_left(self._words, text)
        return i < len(self._words) and self._words[i].startswith(text)

    def _typo_prefixes(self, word: str) -> set[str]:
        """Last words within the edit budget of ``word`` that start some known word."""
        n = len(word)
        variants = {word[:i] + word[i + 1 :] for i in range(n)}
        variants.update(word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(n - 1))
        variants.update(word[:i] + c + word[i:] for i in range(n + 1) for c in _ALPHABET)
        variants.update(word[:i] + c + word[i + 1 :] for i in range(n) for c in _ALPHABET)
        variants.discard(word)
        if n < PREFIX_SET_CHARS:  # every variant is at most n + 1 long: one set intersection
            out = set(variants & self._word_starts)
        else:
            out = {v for v in variants if v and self._is_word_prefix(v)}
        if n >= LONG_WORD and self._symspell is not None and word.isalpha():
            from symspellpy import Verbosity

            for found in self._symspell.lookup(word, Verbosity.CLOSEST, max_edit_distance=2):
                out.add(found.term)
        return out

    def _boost(self, i: int, context: SuggestContext) -> float:
        """``1 + CONTEXT_BOOST * affinity`` of entry ``i`` (affinity clipped to 0..1)."""
        aff = 0.0
        c, b = self._cat_list[i], self._brand_list[i]
        if c >= 0 and context.categories:
            aff = context.categories.get(self._cat_names[c], 0.0)
        if b >= 0 and context.brands:
            aff = max(aff, context.brands.get(self._brand_names[b], 0.0))
        return 1.0 + CONTEXT_BOOST * min(max(aff, 0.0), 1.0)

    def suggest(self, prefix: str, k: int = 8, context: Any = None) -> list[Suggestion]:
        """Completions of a typed prefix, best first.

        Args:
            prefix: What the shopper typed so far (any case; a trailing space means the last
                word is complete).
            k: Suggestions wanted, 1 to :data:`MAX_K`.
            context: The shopper's :class:`~personalization.profiles.UserProfile` or a
                :class:`SuggestContext`; None: popularity only.

        Returns:
            Up to ``k`` suggestions; ``[]`` for a prefix with nothing to complete (blank).

        Raises:
            ShopsearchError: ``k`` outside 1 to :data:`MAX_K`.
        """
        if not 1 <= k <= MAX_K:
            raise ShopsearchError(f"k must be between 1 and {MAX_K}, got {k}")
        key = normalize(prefix)
        if not key:
            return []
        if prefix[-1:].isspace():
            key += " "
        ctx = SuggestContext.of(context)
        found: dict[int, float] = {}
        self._collect(key, 1.0, ctx, found)
        head, _, last = key.rpartition(" ")
        if len(found) < k and len(last) >= MIN_TYPO_CHARS:
            head = head + " " if head else ""
            for variant in self._typo_prefixes(last):
                self._collect(head + variant, TYPO_FACTOR, ctx, found)
        best = sorted(found.items(), key=lambda item: (-item[1], self._keys[item[0]]))[:k]
        return [
            Suggestion(self._texts[i], _SOURCES[self._sources[i]], round(s, 6)) for i, s in best
        ]

    def _collect(
        self, key: str, factor: float, ctx: SuggestContext | None, found: dict[int, float]
    ) -> None:
        scores = self._score_list
        for i in self._candidates(key):
            score = scores[i] * factor
            if ctx is not None:
                score *= self._boost(i, ctx)
            if score > found.get(i, -1.0):
                found[i] = score

    def entries(self) -> Iterator[Suggestion]:
        """Every completion it holds, in key order (for inspection and tests)."""
        for i, text in enumerate(self._texts):
            yield Suggestion(text, _SOURCES[self._sources[i]], float(self._scores[i]))

"""Query spelling correction from the shop's own vocabulary.

At indexing time :func:`build_vocabulary` counts the words of every product's text (the text
BM25 indexes); the counts are stored with the index. At query time :class:`QueryCorrector`
replaces each word the catalog does not know by the most frequent catalog word within a small
edit distance, found with SymSpell (Wolf Garbe's symmetric-delete algorithm, through the
``symspellpy`` package: a maintained, tested implementation of the lookup and of the
Damerau-Levenshtein (OSA) distance, fast enough for every query, instead of a hand-written
search).

Guards (a correction must never make a good query worse):

* only words of letters are touched: a token with a digit (``dcd790``, ``30x80``, ``3/4``,
  ``2x4``) is left as typed, and so is a word glued to a digit;
* a word the catalog knows is never changed; "knows" is judged after BM25's own
  normalisation, so ``faucets`` is known when ``faucet`` is, and stopwords and unit words
  (``in``, ``gallons``) are known;
* words of up to :attr:`SpellingConfig.min_length` - 1 letters (``g``, ``ge``, ``led``) are
  left alone: at that length most edits give another word;
* words of 4 letters get at most one edit, longer ones :attr:`SpellingConfig.max_distance`;
* words outside ASCII letters (other scripts) are left alone.

The original query is kept: :class:`~retrieval.hits.QueryCorrection` holds both.

A correction is a proposal; the retriever applies it only with evidence that the typed query
is worse (:meth:`retrieval.retriever.Retriever.corrections`): the word must be unknown to the
language as well as to the catalog (:func:`language_words`: ``sofa``, ``desk`` and ``bolts``
are words a shop may simply not sell, not typos), and the correction must make sense with the
rest of the query (one product holds both). Otherwise it is only offered ("did you mean").

Words shoppers search for but no product text has (a brand the titles spell out differently,
a trade word) can be added from the shop's search log: :func:`count_log_words` counts the words
of queries whose search led to a click, add to cart or purchase, with guards, and the stored
vocabulary keeps that part apart (``log_counts``) so that adding a newer log replaces it
(``indexer.build.add_log_vocabulary`` writes it).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from core.errors import ShopsearchError
from retrieval.hits import QueryCorrection
from retrieval.lexical import _UNIT_WORDS, STOPWORDS, _fold

__all__ = [
    "VOCABULARY_KIND",
    "LogWords",
    "QueryCorrector",
    "SpellingConfig",
    "build_vocabulary",
    "count_log_words",
    "split_vocabulary",
    "vocabulary_with_log",
    "vocabulary_words",
]

VOCABULARY_KIND = "shopsearch-vocabulary/v1"
#: A word: a run of letters not glued to a letter or digit on either side.
_WORD_RE = re.compile(r"(?<![a-z0-9])[a-z]+(?![a-z0-9])")
#: The same over the typed query (any case); a run glued to a digit is not matched.
_QUERY_WORD_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]+(?![A-Za-z0-9])")
#: A token of letters and digits (after folding and lowercasing); one with a digit is no word.
_TOKEN_RE = re.compile(r"[a-z0-9]+")
#: Key of the stored vocabulary holding the part of ``counts`` that came from a search log.
LOG_COUNTS = "log_counts"
#: Shoppers who must have typed a word in a search that led to an interaction before it enters.
MIN_SHOPPERS = 3


@dataclass(frozen=True)
class SpellingConfig:
    """How far the corrector may go.

    Attributes:
        min_length: Words shorter than this many letters are never corrected.
        max_distance: Largest edit distance (Damerau-Levenshtein, OSA) of a correction, for
            words of ``long_from`` letters or more.
        long_from: Words shorter than this get at most one edit.
        min_count: A catalog word is a correction only if this many products contain it.
    """

    min_length: int = 4
    max_distance: int = 2
    long_from: int = 5
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.min_length < 1:
            raise ShopsearchError(f"min_length must be at least 1, got {self.min_length}")
        if not 1 <= self.max_distance <= 3:
            raise ShopsearchError(f"max_distance must be 1, 2 or 3, got {self.max_distance}")
        if self.min_count < 1:
            raise ShopsearchError(f"min_count must be at least 1, got {self.min_count}")

    def distance_for(self, word: str) -> int:
        """The largest edit allowed for ``word`` (0: never corrected)."""
        if len(word) < self.min_length:
            return 0
        return self.max_distance if len(word) >= self.long_from else 1


#: The word list of :func:`language_words`: symspellpy's English frequency dictionary (82,765
#: words from the intersection of SCOWL and Google Books n-grams), shipped inside the package.
_ENGLISH_FILE = "frequency_dictionary_en_82_765.txt"


@lru_cache(maxsize=1)
def language_words() -> frozenset[str]:
    """The words of the language (English): a query word in it is no typo, whatever the catalog
    holds. Read once from the list symspellpy ships (no download)."""
    text = resources.files("symspellpy").joinpath(_ENGLISH_FILE).read_text(encoding="utf-8")
    return frozenset(line.split(" ", 1)[0] for line in text.splitlines() if line)


def vocabulary_words(text: str) -> list[str]:
    """The words of a text as the vocabulary counts them: folded to ASCII, lowercased, letters
    only (tokens with a digit, such as model numbers and sizes, are not words)."""
    if not text:
        return []
    if not text.isascii():
        text = _fold(text)
    return _WORD_RE.findall(text.lower())


def _digit_tokens(text: str) -> set[str]:
    """The tokens of a text that :func:`vocabulary_words` leaves out for holding a digit."""
    if not text.isascii():
        text = _fold(text)
    return {t for t in _TOKEN_RE.findall(text.lower()) if not t.isalpha()}


def build_vocabulary(texts: Iterable[str]) -> dict[str, int]:
    """Word -> number of texts containing it (document frequency), over product texts.

    Args:
        texts: One text per product (``catalog.text.product_text``).

    Returns:
        The counts, sorted by word (so the stored file is stable).
    """
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(set(vocabulary_words(text)))
    return dict(sorted(counts.items()))


def split_vocabulary(stored: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """A stored vocabulary's two parts: the catalog's counts and the search log's.

    ``counts`` (what the corrector reads) is their sum; ``log_counts`` is the log's part, so
    the catalog's part is what is left after taking it away.
    """
    counts = dict(stored.get("counts") or {})
    log = dict(stored.get(LOG_COUNTS) or {})
    catalog = {w: c - log.get(w, 0) for w, c in counts.items()}
    return {w: c for w, c in catalog.items() if c > 0}, log


def vocabulary_with_log(catalog: Mapping[str, int], log: Mapping[str, int]) -> dict[str, Any]:
    """The vocabulary to store: catalog counts plus the log's, the log's part kept apart.

    Without log counts it is the plain ``{"kind", "counts"}`` an index build writes.
    """
    counts = dict(catalog)
    for word, n in log.items():
        counts[word] = counts.get(word, 0) + int(n)
    stored: dict[str, Any] = {"kind": VOCABULARY_KIND, "counts": dict(sorted(counts.items()))}
    if log:
        stored[LOG_COUNTS] = {w: int(n) for w, n in sorted(log.items())}
    return stored


@dataclass
class LogWords:
    """What :func:`count_log_words` found in a search log.

    Attributes:
        counts: Word -> distinct shoppers who typed it in a search that led to an interaction,
            for the words that passed the guards (catalog words and new words alike).
        added: The new words among them (the catalog has none of them), sorted.
        catalog_words: How many words the catalog already has got the log's counts added.
        skipped: Reason -> number of distinct words kept out for it (catalog words that miss
            the shopper guard are not counted here: they stay known anyway).
        searches: Searches that led to an interaction and were read.
        shoppers: Distinct shoppers among them.
        min_shoppers: The guard used.
    """

    counts: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    catalog_words: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    searches: int = 0
    shoppers: int = 0
    min_shoppers: int = MIN_SHOPPERS


def count_log_words(
    searches: Iterable[tuple[str, str, Sequence[str]]],
    corrector: QueryCorrector,
    product_words: Callable[[Sequence[str]], Mapping[str, set[str]]],
    min_shoppers: int = MIN_SHOPPERS,
) -> LogWords:
    """The words of searches that led to an interaction, with the guards a shop needs.

    Guards, each reported in :attr:`LogWords.skipped`:

    * a token with a digit is no word (as in :func:`vocabulary_words`, which normalises these
      words exactly as it does the catalog's);
    * a word enters only when at least ``min_shoppers`` distinct shoppers typed it (a rare word
      may be someone's name; one shopper's typo is not a word);
    * a search whose shopper chose a product having the word the corrector turns this one into
      (typed ``faucte``, clicked a faucet) is the corrector's typo working, not evidence of a
      new word: it does not count towards the guard;
    * a word the catalog already knows by its stem, or a stopword or unit word, is left out
      (it is never corrected anyway).

    Args:
        searches: ``(shopper id, query as typed, products the shopper interacted with)`` per
            search that led to an interaction.
        corrector: The corrector of the catalog's own words (no earlier log words).
        product_words: Called once with the product ids whose words decide the typo guard;
            returns product id -> :func:`vocabulary_words` of its text (unknown ids absent).
        min_shoppers: The shopper guard.

    Raises:
        ShopsearchError: ``min_shoppers`` below 1.
    """
    if min_shoppers < 1:
        raise ShopsearchError(f"min_shoppers must be at least 1, got {min_shoppers}")
    out = LogWords(min_shoppers=min_shoppers)
    digits: set[str] = set()
    shoppers: set[str] = set()
    # word -> shopper -> whether one of the shopper's searches with it was plainly the word
    # (True), or every one was a typo the corrector fixed towards the chosen product (False)
    seen: dict[str, dict[str, bool]] = {}
    # (shopper, {unknown word: its correction}, chosen products) of searches to judge
    pending: list[tuple[str, dict[str, str], Sequence[str]]] = []
    for shopper, query, products in searches:
        out.searches += 1
        shoppers.add(shopper)
        digits |= _digit_tokens(query or "")
        fixes: dict[str, str] = {}
        for word in set(vocabulary_words(query or "")):
            fix = None if word in corrector.counts else corrector.suggest(word)
            if fix is None:
                seen.setdefault(word, {})[shopper] = True
            else:
                seen.setdefault(word, {}).setdefault(shopper, False)
                fixes[word] = fix
        if fixes:
            pending.append((shopper, fixes, products))
    words_of = product_words(sorted({p for _, _, ps in pending for p in ps})) if pending else {}
    for shopper, fixes, products in pending:
        chosen: set[str] = set().union(*(words_of.get(p, set()) for p in products))
        for word, fix in fixes.items():
            if fix not in chosen:
                seen[word][shopper] = True
    out.shoppers = len(shoppers)
    skipped: Counter[str] = Counter()
    if digits:
        skipped["has a digit"] = len(digits)
    for word, by_shopper in sorted(seen.items()):
        plain = sum(by_shopper.values())
        if word in corrector.counts:
            if plain >= min_shoppers:
                out.counts[word] = plain
                out.catalog_words += 1
        elif corrector.knows(word):
            skipped["the catalog knows it (a form of a catalog word, a stopword or a unit)"] += 1
        elif plain >= min_shoppers:
            out.counts[word] = plain
            out.added.append(word)
        elif len(by_shopper) >= min_shoppers:
            skipped["a typo: the shoppers chose products with the word it is corrected to"] += 1
        else:
            skipped[f"typed by fewer than {min_shoppers} shoppers"] += 1
    out.skipped = dict(skipped)
    return out


class QueryCorrector:
    """Corrects the out-of-vocabulary words of a query (SymSpell over the catalog's words).

    The SymSpell index is built on the first word that needs it (about a second for 30k
    words), so queries whose words are all known cost one set lookup per word.

    Args:
        counts: Word -> document frequency, as :func:`build_vocabulary` returns.
        config: Limits; defaults when None.
    """

    def __init__(self, counts: Mapping[str, int], config: SpellingConfig | None = None) -> None:
        import Stemmer

        self.config = config or SpellingConfig()
        self.counts = dict(counts)
        self._stem = Stemmer.Stemmer("english").stemWord
        self._stems = {self._stem(w) for w in self.counts}
        self._symspell: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, str | None] = {}

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], config: SpellingConfig | None = None):
        """A corrector from what the index stores (``{"kind", "counts"}``).

        Raises:
            ShopsearchError: Not a vocabulary this code reads.
        """
        if stored.get("kind") != VOCABULARY_KIND or not isinstance(stored.get("counts"), dict):
            raise ShopsearchError(
                f"the index's vocabulary is of kind {stored.get('kind')!r}, not "
                f"{VOCABULARY_KIND}: rebuild the index with `shopsearch index CATALOG --mode full`"
            )
        return cls(stored["counts"], config)

    def stem(self, word: str) -> str:
        """``word`` (lowercase) as BM25 stems it: what "the catalog knows it" compares."""
        return self._stem(word)

    def knows(self, word: str) -> bool:
        """True when the catalog has ``word`` (lowercase), as typed or after BM25's stemming."""
        return (
            word in self.counts
            or word in STOPWORDS
            or word in _UNIT_WORDS
            or self._stem(word) in self._stems
        )

    def _index(self):
        if self._symspell is None:
            with self._lock:
                if self._symspell is None:
                    from symspellpy import SymSpell

                    sym = SymSpell(max_dictionary_edit_distance=self.config.max_distance)
                    for word, count in self.counts.items():
                        if count >= self.config.min_count and len(word) >= 2:
                            sym.create_dictionary_entry(word, int(count))
                    self._symspell = sym
        return self._symspell

    def suggest(self, word: str) -> str | None:
        """The correction of one lowercase word, or None (known, guarded, or nothing close).

        Ties in distance go to the word more products contain (SymSpell's order).
        """
        if word in self._cache:
            return self._cache[word]
        fix: str | None = None
        distance = self.config.distance_for(word)
        if distance and word.isascii() and word.isalpha() and not self.knows(word):
            from symspellpy import Verbosity

            found = self._index().lookup(word, Verbosity.CLOSEST, max_edit_distance=distance)
            if found and found[0].term != word:
                fix = found[0].term
        if len(self._cache) < 100_000:
            self._cache[word] = fix
        return fix

    def is_language_word(self, word: str) -> bool:
        """True when ``word`` (lowercase) is a word of the language: never a confident typo."""
        return word in language_words()

    def correct(
        self,
        query: str,
        keep: Callable[[str, str], bool] | None = None,
        also_known: AbstractSet[str] = frozenset(),
    ) -> QueryCorrection | None:
        """The query with its unknown words corrected; None when nothing changed.

        Everything but the corrected words is kept as typed (numbers, sizes, punctuation).

        Args:
            query: The query as typed.
            keep: Called with (word as typed, correction) for each proposed change; the
                change is made only when it returns True. None makes every change.
            also_known: More known words, as BM25 stems them (:meth:`stem`): the words of
                the shop's synonyms, which are never typos (a word only a synonym holds is
                not "corrected" into a catalog word).
        """
        changes: list[tuple[str, str]] = []
        pieces: list[str] = []
        at = 0
        for m in _QUERY_WORD_RE.finditer(query):
            word = m.group(0).lower()
            if also_known and self._stem(word) in also_known:
                continue
            fix = self.suggest(word)
            if fix is None or (keep is not None and not keep(m.group(0), fix)):
                continue
            pieces.append(query[at : m.start()])
            pieces.append(fix)
            at = m.end()
            changes.append((m.group(0), fix))
        if not changes:
            return None
        pieces.append(query[at:])
        return QueryCorrection(original=query, corrected="".join(pieces), changes=tuple(changes))

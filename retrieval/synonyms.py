"""Synonyms a shop manages: one-way (``tv -> television``) and multi-way (``sofa, couch, settee``).

A list of synonyms is kept beside the index in ``synonyms.json``
(:class:`core.managed.ManagedFile`: edited under a lock, replaced atomically; a running service
re-reads it when it changes). The syntax is Solr's synonym-file syntax:

* ``sofa, couch, settee``: multi-way, each term stands for every other;
* ``tv, telly -> television`` (or ``=>``): one-way, a query with ``tv`` or ``telly`` also
  finds ``television``, not the reverse.

A term may have several words (``flat screen -> television``, ``tv -> flat screen``).

**Where synonyms apply.** To BM25's query, and to the spelling corrector's known words (a
synonym term is a word the shop uses on purpose: it is never "corrected" into a catalog word).
Not to the dense tower: it already places ``sofa`` and ``couch`` together, appending words to
the text it embeds moves the query's vector in ways no weight controls, and a synonym a shop
adds is exactly the word-level knowledge BM25 lacks.

**Matching.** Terms and queries are compared as BM25 tokens (lowercased, stemmed, sizes
normalised, stopwords dropped), so ``sofas`` matches the term ``sofa``. A term of several words
matches where its tokens follow one another in the query.

**Weighting.** Each query token BM25 reads has weight 1.0, and a product scores
``sum idf(t) * q_t * d_t`` (:mod:`retrieval.lexical`). For a matched term ``K`` (the typed
words) and one of its synonyms ``S``, every token ``s`` of ``S`` that the query does not hold
already gets ``q_s = w * min(1, idf(K) / idf(S))``, where ``idf(X)`` sums the IDF of a term's
tokens and ``w`` is :data:`SYNONYM_WEIGHT`. So a product holding the whole synonym scores at
most ``w`` times what the typed words would give it: a rare synonym (``settee``) does not
outweigh a common typed word (``sofa``), and a synonym of several words shares one term's
weight among its tokens. When a typed token is not in the catalog at all, its IDF says nothing
(no product has it) and the ratio is 1: the synonym stands in for it at ``w``. When a token is
reached by several synonyms, it keeps the largest weight; a token the shopper typed keeps 1.0.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ShopsearchError
from core.managed import ManagedFile, Watched

__all__ = [
    "SYNONYMS_FILE",
    "SYNONYMS_KIND",
    "SYNONYM_WEIGHT",
    "Expansion",
    "QueryExpansion",
    "Synonym",
    "SynonymMatcher",
    "Synonyms",
    "add_synonym",
    "expand_query",
    "list_synonyms",
    "parse_synonym",
    "remove_synonym",
    "synonyms_file",
    "token_idf",
    "watch_synonyms",
]

SYNONYMS_FILE = "synonyms.json"
SYNONYMS_KIND = "shopsearch-synonyms/v1"
#: ``w`` above: how much a product reached through a synonym scores at most, against one
#: holding the typed words. docs/benchmarks/storefront.md "Synonyms on Home Depot" has the
#: validation run that chose it.
SYNONYM_WEIGHT = 0.5
#: Longest synonym list a shop may keep (a list this size still compiles in milliseconds).
MAX_SYNONYMS = 100_000
_ONE_WAY = re.compile(r"\s*(?:->|=>)\s*")
Tokenize = Callable[[str], list[str]]


def _default_tokenize() -> Tokenize:
    from retrieval.lexical import LexicalEncoder

    return LexicalEncoder().tokenize


def _clean(term: str) -> str:
    return " ".join(str(term).split())


@dataclass(frozen=True)
class Synonym:
    """One synonym line.

    Attributes:
        terms: Multi-way: every term of the group. One-way: what the typed words also find.
        inputs: One-way: the typed words (``tv`` of ``tv -> television``); empty: multi-way.
        id: A short stable id (a hash of the line as given, lowercased).
    """

    terms: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    id: str = ""

    @property
    def one_way(self) -> bool:
        return bool(self.inputs)

    @property
    def text(self) -> str:
        """The line in the synonym-file syntax (``tv -> television``, ``sofa, couch``)."""
        if self.one_way:
            return f"{', '.join(self.inputs)} -> {', '.join(self.terms)}"
        return ", ".join(self.terms)

    def pairs(self) -> list[tuple[str, str]]:
        """(typed term, term it also finds) for every direction the line gives."""
        if self.one_way:
            return [(a, b) for a in self.inputs for b in self.terms]
        return [(a, b) for a in self.terms for b in self.terms if a != b]

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored (``{"id", "terms"}`` plus ``"inputs"`` for one-way)."""
        out: dict[str, Any] = {"id": self.id, "terms": list(self.terms)}
        if self.one_way:
            out["inputs"] = list(self.inputs)
        return out

    @classmethod
    def create(
        cls,
        terms: Sequence[str],
        inputs: Sequence[str] = (),
        tokenize: Tokenize | None = None,
    ) -> Synonym:
        """A validated synonym.

        Args:
            terms: Multi-way: the group (two or more). One-way: what ``inputs`` also find.
            inputs: One-way: the typed words; empty for multi-way.
            tokenize: BM25's tokenizer (default: the default ``LexicalEncoder``'s).

        Raises:
            ShopsearchError: An empty term, a term with no word BM25 reads (only stopwords
                or punctuation), a multi-way group of fewer than two distinct terms, or a
                one-way line whose two sides are the same words.
        """
        if isinstance(terms, str) or isinstance(inputs, str):
            raise TypeError("terms and inputs are sequences of strings")
        tokenize = tokenize or _default_tokenize()
        terms = tuple(_clean(t) for t in terms)
        inputs = tuple(_clean(t) for t in inputs)
        keys: dict[str, tuple[str, ...]] = {}
        for side, values in (("input", inputs), ("term", terms)):
            for t in values:
                if not t:
                    raise ShopsearchError(
                        f"synonym {side} is empty: write terms separated by commas, e.g. "
                        "'sofa, couch' or 'tv -> television'"
                    )
                tokens = tuple(tokenize(t))
                if not tokens:
                    raise ShopsearchError(
                        f"synonym {side} {t!r} has no word search reads (only stopwords or "
                        "punctuation): give a word"
                    )
                keys[t] = tokens
        if inputs:
            if not terms:
                raise ShopsearchError(
                    f"one-way synonym {', '.join(inputs)} -> (nothing): give what it also finds"
                )
            same = {keys[t] for t in inputs} & {keys[t] for t in terms}
            if same:
                word = next(t for t in terms if keys[t] in same)
                raise ShopsearchError(
                    f"one-way synonym with {word!r} on both sides (as search reads the words): "
                    "a word is already found by itself; drop it from one side"
                )
        elif len({keys[t] for t in terms}) < 2:
            raise ShopsearchError(
                f"synonym {', '.join(terms) or '(nothing)'!r} needs two different terms "
                "(e.g. 'sofa, couch'), or 'a -> b' for one way"
            )
        line = (", ".join(inputs) + " -> " if inputs else "") + ", ".join(terms)
        sid = hashlib.sha1(line.lower().encode("utf-8")).hexdigest()[:8]
        return cls(terms=terms, inputs=inputs, id=sid)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], tokenize: Tokenize | None = None) -> Synonym:
        """A stored synonym, validated again (so a hand-edited file is checked too)."""
        terms, inputs = data.get("terms"), data.get("inputs") or []
        if not isinstance(terms, list) or not isinstance(inputs, list):
            raise ShopsearchError(f"synonym {data!r}: 'terms' and 'inputs' must be lists")
        return cls.create(terms, inputs, tokenize)


def parse_synonym(line: str, tokenize: Tokenize | None = None) -> Synonym:
    """A synonym from its line: ``sofa, couch, settee`` or ``tv, telly -> television``.

    Raises:
        ShopsearchError: As :meth:`Synonym.create`, or more than one ``->`` in the line.
    """
    parts = _ONE_WAY.split(line.strip())
    if len(parts) > 2:
        raise ShopsearchError(
            f"synonym {line!r} has more than one '->': write one 'typed -> also found' per line"
        )
    if len(parts) == 2:
        return Synonym.create(parts[1].split(","), parts[0].split(","), tokenize)
    return Synonym.create(parts[0].split(","), (), tokenize)


@dataclass(frozen=True)
class Synonyms:
    """A shop's synonym list (immutable; edits return a new list)."""

    synonyms: tuple[Synonym, ...] = ()

    def __len__(self) -> int:
        return len(self.synonyms)

    def __iter__(self):
        return iter(self.synonyms)

    def words(self) -> frozenset[str]:
        """Every word of every term, lowercased (the corrector's extra known words)."""
        out: set[str] = set()
        for s in self.synonyms:
            for t in (*s.inputs, *s.terms):
                out.update(re.findall(r"[a-z]+", t.lower()))
        return frozenset(out)

    def add(self, synonym: Synonym) -> Synonyms:
        """The list with ``synonym`` added.

        Raises:
            ShopsearchError: The same line is there already, or the list is full.
        """
        if any(s.id == synonym.id for s in self.synonyms):
            raise ShopsearchError(f"synonym {synonym.text!r} is there already (id {synonym.id})")
        if len(self.synonyms) >= MAX_SYNONYMS:
            raise ShopsearchError(f"the synonym list is full ({MAX_SYNONYMS}): remove some first")
        return Synonyms((*self.synonyms, synonym))

    def remove(self, synonym_id: str) -> Synonyms:
        """The list without the synonym of this id.

        Raises:
            ShopsearchError: No synonym has this id (the message lists a few that exist).
        """
        kept = tuple(s for s in self.synonyms if s.id != synonym_id)
        if len(kept) == len(self.synonyms):
            ids = ", ".join(s.id for s in self.synonyms[:5]) or "none"
            raise ShopsearchError(
                f"no synonym has id {synonym_id!r} (ids: {ids}{', ...' if len(self) > 5 else ''}; "
                "`shopsearch synonyms list` shows them)"
            )
        return Synonyms(kept)

    def to_entries(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.synonyms]

    @classmethod
    def from_entries(
        cls, entries: Iterable[Mapping[str, Any]], tokenize: Tokenize | None = None
    ) -> Synonyms:
        """The list from stored entries (each validated).

        Raises:
            ShopsearchError: An entry is not a valid synonym (its position named).
        """
        tokenize = tokenize or _default_tokenize()
        out = []
        for i, entry in enumerate(entries, start=1):
            try:
                out.append(Synonym.from_dict(entry, tokenize))
            except ShopsearchError as exc:
                raise ShopsearchError(f"synonym #{i}: {exc}") from None
        return cls(tuple(out))

    @classmethod
    def parse(cls, lines: Iterable[str], tokenize: Tokenize | None = None) -> Synonyms:
        """A list from lines of the synonym-file syntax (blank lines and ``#`` comments skipped).

        Raises:
            ShopsearchError: A line is not a valid synonym (its number named).
        """
        tokenize = tokenize or _default_tokenize()
        out = cls()
        for i, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                out = out.add(parse_synonym(text, tokenize))
            except ShopsearchError as exc:
                raise ShopsearchError(f"line {i}: {exc}") from None
        return out


@dataclass(frozen=True)
class Expansion:
    """What synonyms add to one query for BM25.

    Attributes:
        weights: Token -> query weight, for tokens the query did not hold (see the module's
            weighting).
        matched: (typed term, synonym term) for each synonym that applied.
    """

    weights: dict[str, float] = field(default_factory=dict)
    matched: tuple[tuple[str, str], ...] = ()


class SynonymMatcher:
    """A synonym list compiled for one tokenizer: finds terms among a query's tokens.

    Args:
        synonyms: The list.
        tokenize: BM25's tokenizer of the index.
        weight: ``w`` of the module's weighting.
    """

    def __init__(
        self, synonyms: Synonyms, tokenize: Tokenize, weight: float = SYNONYM_WEIGHT
    ) -> None:
        if not weight > 0:
            raise ShopsearchError(f"synonym weight must be > 0, got {weight}")
        self.synonyms = synonyms
        self.weight = weight
        # typed tokens -> [(synonym tokens, typed text, synonym text)]
        self._rules: dict[tuple[str, ...], list[tuple[tuple[str, ...], str, str]]] = {}
        for s in synonyms:
            for typed, found in s.pairs():
                key, target = tuple(tokenize(typed)), tuple(tokenize(found))
                if key and target and key != target:
                    rules = self._rules.setdefault(key, [])
                    if all(r[0] != target for r in rules):
                        rules.append((target, typed, found))
        self._lengths = sorted({len(k) for k in self._rules}, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def expand(
        self, tokens: Sequence[str], idf: Callable[[str], float | None] | None = None
    ) -> Expansion:
        """The tokens synonyms add to a query of ``tokens``, with their weights.

        Args:
            tokens: The query's BM25 tokens.
            idf: Token -> IDF in the index, or None for a token no product holds (or that
                is not counted); None: no IDF known (the ratio is then 1).
        """
        if not self._rules or not tokens:
            return Expansion()
        typed = set(tokens)
        weights: dict[str, float] = {}
        matched: list[tuple[str, str]] = []
        n = len(tokens)
        for length in self._lengths:
            for i in range(n - length + 1):
                rules = self._rules.get(tuple(tokens[i : i + length]))
                if not rules:
                    continue
                for target, typed_text, found_text in rules:
                    q = self.weight * self._ratio(tokens[i : i + length], target, idf)
                    added = False
                    for tok in target:
                        if tok not in typed and q > weights.get(tok, 0.0):
                            weights[tok] = q
                            added = True
                    if added and (typed_text, found_text) not in matched:
                        matched.append((typed_text, found_text))
        return Expansion(weights, tuple(matched))

    @staticmethod
    def _ratio(
        key: Sequence[str], target: Sequence[str], idf: Callable[[str], float | None] | None
    ) -> float:
        if idf is None:
            return 1.0
        typed = [idf(t) for t in key]
        found = [idf(t) for t in target]
        if any(v is None for v in typed) or any(v is None for v in found):
            return 1.0
        return min(1.0, sum(typed) / max(sum(found), 1e-9))  # type: ignore[arg-type]


def token_idf(
    counts: Mapping[str, int], n_docs: int, tokenize: Tokenize
) -> Callable[[str], float | None]:
    """The IDF of a BM25 token, as Qdrant computes it, from the spelling vocabulary's counts.

    Args:
        counts: Word -> products holding it (the index's vocabulary).
        n_docs: Products in the index.
        tokenize: BM25's tokenizer (a word's token is its stem).

    Returns:
        Token -> IDF; None for a token no counted word gives (not in the catalog, or a token
        with a digit, which the vocabulary does not count). A stem shared by several words
        gets the largest of their counts (a lower bound of its document frequency).
    """
    from retrieval.lexical import idf as bm25_idf

    df: dict[str, int] = {}
    for word, count in counts.items():
        tokens = tokenize(word)
        if len(tokens) == 1 and count > df.get(tokens[0], 0):
            df[tokens[0]] = count

    def idf(token: str) -> float | None:
        n = df.get(token)
        return bm25_idf(min(n, n_docs), n_docs) if n and n_docs > 0 else None

    return idf


@dataclass(frozen=True)
class QueryExpansion:
    """What the synonyms do to one query (``shopsearch synonyms test``).

    Attributes:
        query: The query.
        tokens: Its BM25 tokens.
        expansion: The tokens synonyms add, with their weights.
        synonyms: Synonyms in the list.
    """

    query: str
    tokens: tuple[str, ...]
    expansion: Expansion
    synonyms: int


def expand_query(
    query: str, directory: str | os.PathLike[str], location: Any = None
) -> QueryExpansion:
    """The synonyms of ``directory`` applied to ``query``, as a search applies them.

    Args:
        query: A query.
        directory: Where ``synonyms.json`` is kept.
        location: The index (``retrieval.store.IndexLocation``), for its tokenizer and IDF;
            None: the default tokenizer and no IDF (weights of ratio 1).

    Raises:
        ShopsearchError: A damaged list, or an index that does not open.
    """
    from retrieval.lexical import LexicalEncoder

    synonyms = list_synonyms(directory)
    lexical, idf = LexicalEncoder(), None
    if location is not None:
        from retrieval.store import open_backend

        collection = open_backend(location).open()
        try:
            lexical = LexicalEncoder.from_config(collection.manifest["lexical"])
            stored = collection.vocabulary()
            if stored is not None:
                idf = token_idf(
                    stored.get("counts") or {},
                    int(collection.manifest.get("count") or 0),
                    lexical.tokenize,
                )
        finally:
            collection.close()
    tokens = lexical.tokenize(query)
    expansion = SynonymMatcher(synonyms, lexical.tokenize).expand(tokens, idf)
    return QueryExpansion(query, tuple(tokens), expansion, len(synonyms))


def synonyms_file(directory: str | os.PathLike[str]) -> ManagedFile:
    """The synonym list kept in ``directory`` (an index's, or its ``--rules-dir``)."""
    return ManagedFile(Path(directory) / SYNONYMS_FILE, SYNONYMS_KIND)


def watch_synonyms(directory: str | os.PathLike[str]) -> Watched[Synonyms]:
    """The synonym list of ``directory``, re-read when the file changes (no list: empty)."""
    return Watched(synonyms_file(directory), Synonyms.from_entries)


def list_synonyms(directory: str | os.PathLike[str]) -> Synonyms:
    """The synonym list kept in ``directory`` (empty when there is none).

    Raises:
        ShopsearchError: The file is damaged (hand-edited): its line named.
    """
    return Synonyms.from_entries(synonyms_file(directory).read())


def add_synonym(directory: str | os.PathLike[str], line: str) -> tuple[Synonym, bool]:
    """Validates ``line`` (``sofa, couch`` or ``tv -> television``) and adds it to the list.

    Adding a line that is there already changes nothing (a script may re-apply its list).

    Returns:
        The synonym, and whether it was added (False: it was there already).

    Raises:
        ShopsearchError: Not a valid synonym, or the list is full.
    """
    synonym = parse_synonym(line)
    result: list[tuple[Synonym, bool]] = []

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current = Synonyms.from_entries(entries)
        there = [s for s in current if s.id == synonym.id]
        result.append((there[0], False) if there else (synonym, True))
        return current.to_entries() if there else current.add(synonym).to_entries()

    synonyms_file(directory).update(change)
    return result[0]


def remove_synonym(directory: str | os.PathLike[str], synonym_id: str) -> Synonym:
    """Removes the synonym of this id from the list; returns it.

    Raises:
        ShopsearchError: No synonym has this id.
    """
    removed: list[Synonym] = []

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current = Synonyms.from_entries(entries)
        removed.extend(s for s in current if s.id == synonym_id)
        return current.remove(synonym_id).to_entries()

    synonyms_file(directory).update(change)
    return removed[0]

"""Adding a click log's words to an index's spelling vocabulary (``shopsearch index vocabulary``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from catalog.schema import Product
from catalog.text import product_text
from core.errors import ShopsearchError
from indexer.build import promote_copy, spelling_record
from personalization.events import read_events
from personalization.impressions import answered_searches
from personalization.ingest import check_profiles, without_forgotten
from personalization.searchlog import is_search_log, log_events
from personalization.searchlog_writer import log_pseudonymizer
from retrieval.spelling import (
    MIN_SHOPPERS,
    LogWords,
    QueryCorrector,
    count_log_words,
    split_vocabulary,
    vocabulary_with_log,
    vocabulary_words,
)
from retrieval.store import (
    IndexLocation,
    new_build_id,
    open_backend,
)
from retrieval.store.base import missing_index


@dataclass(frozen=True)
class LogVocabularySummary:
    """What :func:`add_log_vocabulary` did.

    Attributes:
        location: The index.
        build_id: The new build's id.
        log: The search log read.
        rejected: Rows of the log rejected by validation (not used).
        searches: Searches in the log that led to a click, add to cart or purchase.
        shoppers: Distinct shoppers among them.
        words_added: New words, sorted (the catalog has none of them).
        catalog_words: Catalog words whose counts got the log's added.
        replaced: New words an earlier log had added, now no longer in the vocabulary.
        skipped: Reason -> number of distinct words kept out for it.
        min_shoppers: The guard used.
        words: Words in the stored vocabulary now.
        forgotten: Shoppers left out because ``forget-user`` erased them (with ``profiles``);
            from a search log: the rows of shoppers its ``forgotten.txt`` tombstones.
        anonymous: Anonymous searches of a search log, left out (a word needs distinct
            shoppers; an anonymous search has none, and no click can name one).
    """

    location: str
    build_id: str
    log: str
    rejected: int
    searches: int
    shoppers: int
    words_added: list[str]
    catalog_words: int
    replaced: int
    skipped: dict[str, int]
    min_shoppers: int
    words: int
    forgotten: int = 0
    anonymous: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _product_words(collection: Any) -> Callable[[list[str]], dict[str, set[str]]]:
    """product id -> the vocabulary words of its stored text, read from ``collection``."""

    def words(product_ids: list[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for i in range(0, len(product_ids), 1000):
            for pid, hit in collection.retrieve(product_ids[i : i + 1000]).items():
                product = Product.from_payload({**(hit.payload or {}), "product_id": pid})
                out[pid] = set(vocabulary_words(product_text(product)))
        return out

    return words


def add_log_vocabulary(
    location: IndexLocation,
    log: str | os.PathLike[str],
    *,
    min_shoppers: int = MIN_SHOPPERS,
    now: float | None = None,
    profiles: str | os.PathLike[str] | None = None,
    key: str | None = None,
) -> LogVocabularySummary:
    """Adds the words shoppers search for to the spelling vocabulary of an index.

    The words of queries whose search led to a click, add to cart or purchase
    (``personalization.impressions``) enter the vocabulary, so the corrector stops "correcting"
    them away, with the guards of :func:`retrieval.spelling.count_log_words`: at least
    ``min_shoppers`` distinct shoppers, no digit, not a typo the corrector already fixes.
    Catalog words keep their counts and get the log's added.

    The log's part is stored apart (``log_counts`` in the vocabulary, ``spelling.from_log`` in
    the manifest): running this again with a newer log replaces it, never adds to it twice.
    Like :func:`tune_index`, the new build is a copy of the current one (nothing re-embedded),
    promoted atomically; searches pick it up on their next refresh. ``upsert``/``sync`` keep
    the log's words, ``--mode full`` drops them.

    Args:
        location: The index.
        log: The shop's event log (Parquet or JSON Lines, ``personalization.events``), or the
            service's search log (its folder or segments, ``personalization.searchlog``).
        min_shoppers: Distinct shoppers a word needs.
        now: The present for the log's clock check (default: the clock).
        profiles: Serving's profile directory: the searches of shoppers ``forget-user`` erased
            there do not count (the raw log still holds them).
        key: That directory's pseudonym key (hex text) when serving keeps it outside the
            directory (``SHOPSEARCH_PSEUDONYM_KEY``); None: the directory's key file.

    Returns:
        What was added and skipped, and why.

    Raises:
        ShopsearchError: No index at ``location``, an index without a vocabulary, an unreadable
            log, a log without a search that led to an interaction, or ``profiles`` without a
            profile store; the index is unchanged.
    """
    if min_shoppers < 1:
        raise ShopsearchError(f"--min-shoppers must be at least 1, got {min_shoppers}")
    backend = open_backend(location)
    if not backend.exists():  # before the lock, which would create the directory
        raise missing_index(location)
    from_service = is_search_log(log)
    if profiles is not None and not from_service:  # before reading a long log
        check_profiles(profiles, key=key)
    events = []
    rejected = forgotten = anonymous = 0
    if from_service:
        folder = Path(log) if Path(log).is_dir() else Path(log).parent
        read = log_events(
            log,
            pseudonymizer=log_pseudonymizer(folder, profiles, key, create=False),
            kinds=("search", "click", "add_to_cart", "purchase"),
        )
        events, anonymous, forgotten = read.events, read.anonymous_searches, read.forgotten
        if profiles is not None:  # shoppers erased from the profile store only
            events, erased = without_forgotten(events, profiles, key=key, pseudonymous=True)
            forgotten += erased
    else:
        for batch in read_events(log, now=now):
            rejected += len(batch.rejects)
            events.extend(e for e in batch.events if e.event != "view")
        if profiles is not None:
            events, forgotten = without_forgotten(events, profiles, key=key)
    answered, stats = answered_searches(events)
    del events
    searches = [(a.user_id, a.query, list(a.products)) for a in answered]
    if not searches:
        bad = f", {rejected} row(s) rejected" if rejected else ""
        bad += f", the events of {forgotten} forgotten shopper(s) left out" if forgotten else ""
        bad += f", {anonymous} anonymous search(es) left out" if anonymous else ""
        raise ShopsearchError(
            f"{log}: no search in the log led to a click, add to cart or purchase "
            f"({stats.searches} search(es), {stats.interactions_attributed} of "
            f"{stats.interactions} interaction(s) attributed to one{bad}): an interaction "
            "names its search by search_id, or follows it in the same session; the index was "
            "not changed"
        )
    with backend.writer_lock():
        current = backend.open()
        try:
            manifest = dict(current.manifest)
            stored = current.vocabulary()
            if stored is None:
                raise ShopsearchError(
                    f"the index at {location.describe()} has no spelling vocabulary (built by "
                    "an older shopsearch): rebuild it with `shopsearch index CATALOG --mode full`"
                )
            catalog, earlier = split_vocabulary(stored)
            found: LogWords = count_log_words(
                searches, QueryCorrector(catalog), _product_words(current), min_shoppers
            )
        finally:
            current.close()
        vocabulary = vocabulary_with_log(catalog, found.counts)
        build_id = new_build_id()
        manifest.update(build_id=build_id, mode="vocabulary")
        spelling = spelling_record(vocabulary)
        spelling["from_log"] = {
            "source": str(Path(log).resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "queries": found.searches,
            "words_added": len(found.added),
            "catalog_words": found.catalog_words,
            "min_shoppers": min_shoppers,
        }
        manifest["spelling"] = spelling
        promote_copy(backend, manifest, vocabulary)
    return LogVocabularySummary(
        location=location.describe(),
        build_id=build_id,
        log=str(log),
        rejected=rejected,
        searches=found.searches,
        shoppers=found.shoppers,
        words_added=found.added,
        catalog_words=found.catalog_words,
        replaced=len(set(earlier) - set(catalog) - set(found.counts)),
        skipped=found.skipped,
        min_shoppers=min_shoppers,
        words=len(vocabulary["counts"]),
        forgotten=forgotten,
        anonymous=anonymous,
    )

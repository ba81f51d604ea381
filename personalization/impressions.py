"""From a shop's event log to ranking lessons: what each search showed, and what came of it.

A search event with ``results`` is an *impression list*: the products the shopper was shown,
in order. Each ``click``, ``add_to_cart`` and ``purchase`` is attributed to the search it
answers: the one its ``search_id`` names within the same shopper and session (a page counter
that restarts each session is a valid id), or else the shopper's latest search in the same
session that showed the product (or showed no list at all). A shown product's label is the
strongest thing the shopper did with it (purchase 3 > add to cart 2 > click 1 > nothing 0).
Product-page ``view`` events feed profiles only: they are never an examination label.

Searches without a shown list cannot teach the ranker (they are counted, not guessed at), but
they still say which query led to an interaction (:func:`answered_searches`, what the spelling
vocabulary learns from).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from personalization.events import Event

#: Label of each interaction (the strongest per shown product counts).
LABELS = {"click": 1, "add_to_cart": 2, "purchase": 3}


@dataclass(frozen=True)
class Impression:
    """One search as it was shown, with what the shopper did with each shown product.

    Attributes:
        search_id: The search's id (the event's, or a derived one when the log has none).
        user_id: Raw shopper id (in memory only; pseudonymize before storing).
        session_id: The session.
        timestamp: When the search ran (epoch seconds).
        query: What the shopper typed.
        shown: Product ids shown, in order (rank ``offset + i + 1`` for ``shown[i]``).
        labels: Per shown position, 0..3 (see :data:`LABELS`).
        offset: The ranks before the page (0 for a first page; the service's search log
            records later pages too).
    """

    search_id: str
    user_id: str = field(repr=False)
    session_id: str
    timestamp: float
    query: str
    shown: tuple[str, ...]
    labels: tuple[int, ...]
    offset: int = 0

    def ranks(self) -> range:
        """The rank each shown product was at (1-based, paging included)."""
        return range(self.offset + 1, self.offset + len(self.shown) + 1)


@dataclass(frozen=True)
class ImpressionStats:
    """What a log held and what could be used (each skip with its reason)."""

    searches: int
    searches_with_impressions: int
    interactions: int
    interactions_attributed: int
    skipped: dict[str, int]


@dataclass(frozen=True)
class AnsweredSearch:
    """A search that led to an interaction, whether or not the log holds its shown list.

    Attributes:
        user_id: Raw shopper id (in memory only).
        session_id: The session.
        query: What the shopper typed.
        products: The products the shopper interacted with from it, in the log's order.
    """

    user_id: str = field(repr=False)
    session_id: str
    query: str
    products: tuple[str, ...]


@dataclass
class _Search:
    event: Event
    key: str
    labels: list[int] | None = None  # per shown position; None: no shown list
    index: dict[str, int] | None = None  # product -> first shown position
    answered: list[str] = field(default_factory=list)


def _walk(events: Iterable[Event]) -> tuple[list[_Search], ImpressionStats]:
    """Every search of the log with what answered it (the one join of searches and interactions)."""
    events = list(events)
    # an interaction that names its search is ordered after it, whatever its own time says:
    # the search and the click are stamped by different clocks (server, shopper's device)
    search_at: dict[tuple[str, str, str], float] = {}
    for e in events:
        if e.event == "search" and e.search_id is not None:
            scope = (e.user_id, e.session_id, e.search_id)
            search_at[scope] = min(e.timestamp, search_at.get(scope, e.timestamp))

    def when(e: Event) -> float:
        if e.event != "search" and e.search_id is not None:
            return max(e.timestamp, search_at.get((e.user_id, e.session_id, e.search_id), 0.0))
        return e.timestamp

    ordered = sorted(events, key=lambda e: (when(e), EVENT_ORDER.get(e.event, 9)))
    searches: dict[tuple[str, str, str], _Search] = {}
    in_session: dict[tuple[str, str], list[_Search]] = {}
    skipped: Counter[str] = Counter()
    n_searches = n_interactions = n_attributed = 0
    for i, e in enumerate(ordered):
        if e.event == "search":
            n_searches += 1
            key = e.search_id or f"search-{i}"
            scope = (e.user_id, e.session_id, key)
            if scope in searches:
                skipped["search_id seen twice in one session (the later search dropped)"] += 1
                continue
            search = _Search(e, key)
            if e.results:
                search.labels = [0] * len(e.results)
                search.index = {p: k for k, p in reversed(list(enumerate(e.results)))}
            else:
                skipped["search without a shown list (results)"] += 1
            searches[scope] = search
            in_session.setdefault((e.user_id, e.session_id), []).append(search)
            continue
        if e.event not in LABELS:
            continue
        n_interactions += 1
        target = _attribute(e, searches, in_session)
        if isinstance(target, str):
            skipped[target] += 1
            continue
        n_attributed += 1
        target.answered.append(e.product_id)
        if target.index is not None:
            slot = target.index[e.product_id]
            target.labels[slot] = max(target.labels[slot], LABELS[e.event])
    stats = ImpressionStats(
        searches=n_searches,
        searches_with_impressions=sum(s.index is not None for s in searches.values()),
        interactions=n_interactions,
        interactions_attributed=n_attributed,
        skipped=dict(skipped),
    )
    return list(searches.values()), stats


def impressions_from_events(
    events: Iterable[Event],
) -> tuple[list[Impression], ImpressionStats]:
    """Impression lists with interaction labels from a log (any order; sorted by time here).

    Args:
        events: Validated events (:func:`personalization.events.read_events`).

    Returns:
        The impressions (searches with a shown list) in time order, and the counts of what was
        used and skipped and why.
    """
    searches, stats = _walk(events)
    out = [
        Impression(
            s.key,
            s.event.user_id,
            s.event.session_id,
            s.event.timestamp,
            s.event.query or "",
            s.event.results,
            tuple(s.labels),
            s.event.offset,
        )
        for s in searches
        if s.labels is not None
    ]
    out.sort(key=lambda m: (m.timestamp, m.search_id))
    return out, stats


def answered_searches(
    events: Iterable[Event],
) -> tuple[list[AnsweredSearch], ImpressionStats]:
    """The searches that led to a click, add to cart or purchase, shown list or not.

    Returns:
        The answered searches in time order, and the log's counts (as
        :func:`impressions_from_events` gives them).
    """
    searches, stats = _walk(events)
    out = [
        AnsweredSearch(s.event.user_id, s.event.session_id, s.event.query or "", tuple(s.answered))
        for s in sorted(searches, key=lambda s: s.event.timestamp)
        if s.answered
    ]
    return out, stats


#: Within one timestamp, a search comes before what answers it.
EVENT_ORDER = {"search": 0, "view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


def _attribute(
    e: Event,
    searches: dict[tuple[str, str, str], _Search],
    in_session: dict[tuple[str, str], list[_Search]],
) -> _Search | str:
    """The search an interaction answers, or the reason it has none.

    A ``search_id`` is read within the interaction's shopper and session: ids need to be
    unique only there.
    """
    if e.search_id is not None:
        target = searches.get((e.user_id, e.session_id, e.search_id))
        if target is None:
            return "interaction names a search_id its shopper's session does not have"
        if target.index is not None and e.product_id not in target.index:
            return "interaction on a product its search did not show"
        return target
    for search in reversed(in_session.get((e.user_id, e.session_id), [])):
        if search.index is None or e.product_id in search.index:
            return search
    return "interaction with no earlier search in its session that showed the product"

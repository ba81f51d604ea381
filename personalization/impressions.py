"""From a shop's event log to ranking lessons: what each search showed, and what came of it.

A search event with ``results`` is an *impression list*: the products the shopper was shown,
in order. Each ``click``, ``add_to_cart`` and ``purchase`` is attributed to the search it
answers: the one its ``search_id`` names, or else the shopper's latest search in the same
session that showed the product. A shown product's label is the strongest thing the shopper
did with it (purchase 3 > add to cart 2 > click 1 > nothing 0). Product-page ``view`` events
feed profiles only: they are never an examination label.

Searches without a shown list cannot teach the ranker; they are counted, not guessed at.
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
        shown: Product ids shown, in order (position ``i + 1`` for ``shown[i]``).
        labels: Per shown position, 0..3 (see :data:`LABELS`).
    """

    search_id: str
    user_id: str = field(repr=False)
    session_id: str
    timestamp: float
    query: str
    shown: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def clicked(self) -> bool:
        """Whether any shown product got an interaction."""
        return any(self.labels)


@dataclass(frozen=True)
class ImpressionStats:
    """What a log held and what could be used (each skip with its reason)."""

    searches: int
    searches_with_impressions: int
    interactions: int
    interactions_attributed: int
    skipped: dict[str, int]


def impressions_from_events(
    events: Iterable[Event],
) -> tuple[list[Impression], ImpressionStats]:
    """Impression lists with interaction labels from a log (any order; sorted by time here).

    Args:
        events: Validated events (:func:`personalization.events.read_events`).

    Returns:
        The impressions in time order, and the counts of what was used and skipped and why.
    """
    ordered = sorted(events, key=lambda e: (e.timestamp, EVENT_ORDER.get(e.event, 9)))
    searches: dict[str, dict] = {}
    latest_in_session: dict[tuple[str, str], list[str]] = {}
    skipped: Counter[str] = Counter()
    n_searches = n_interactions = n_attributed = 0
    for i, e in enumerate(ordered):
        if e.event == "search":
            n_searches += 1
            if not e.results:
                skipped["search without a shown list (results)"] += 1
                continue
            sid = e.search_id or f"search-{i}"
            if sid in searches:
                skipped["search_id seen before (later duplicate dropped)"] += 1
                continue
            searches[sid] = {
                "event": e,
                "labels": [0] * len(e.results),
                "index": {p: k for k, p in reversed(list(enumerate(e.results)))},
            }
            latest_in_session.setdefault((e.user_id, e.session_id), []).append(sid)
            continue
        if e.event not in LABELS:
            continue
        n_interactions += 1
        target = _attribute(e, searches, latest_in_session)
        if isinstance(target, str):
            skipped[target] += 1
            continue
        slot = target["index"][e.product_id]
        target["labels"][slot] = max(target["labels"][slot], LABELS[e.event])
        n_attributed += 1
    out = [
        Impression(
            sid,
            s["event"].user_id,
            s["event"].session_id,
            s["event"].timestamp,
            s["event"].query or "",
            s["event"].results,
            tuple(s["labels"]),
        )
        for sid, s in searches.items()
    ]
    out.sort(key=lambda m: (m.timestamp, m.search_id))
    stats = ImpressionStats(
        searches=n_searches,
        searches_with_impressions=len(out),
        interactions=n_interactions,
        interactions_attributed=n_attributed,
        skipped=dict(skipped),
    )
    return out, stats


#: Within one timestamp, a search comes before what answers it.
EVENT_ORDER = {"search": 0, "view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


def _attribute(
    e: Event, searches: dict[str, dict], latest: dict[tuple[str, str], list[str]]
) -> dict | str:
    """The search an interaction answers, or the reason it has none."""
    if e.search_id is not None:
        target = searches.get(e.search_id)
        if target is None:
            return "interaction names a search_id with no shown list in the log"
        if target["event"].user_id != e.user_id:
            return "interaction names another shopper's search"
        if e.product_id not in target["index"]:
            return "interaction on a product its search did not show"
        return target
    for sid in reversed(latest.get((e.user_id, e.session_id), [])):
        if e.product_id in searches[sid]["index"]:
            return searches[sid]
    return "interaction with no earlier search in its session that showed the product"

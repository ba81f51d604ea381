"""Merchandising rules: what a shop does to the results of some queries, written without code.

    store = RuleStore(index_dir)                     # DIR/rules.json (core.managed)
    store.add(Rule.create("pin", "drill", products=["P1"], position=1), check=...)
    book = store.book()                              # the rules now, indexed (re-read on change)
    plan = book.plan(["drill"], now)                 # the rules that fire for a query
    hits = plan.pin(plan.boost(plan.hide(hits), ...), ...)

A rule has a *query condition*, an optional *time window* and one *action*:

* ``match``: ``exact`` (the whole query), ``contains`` (every word of the rule's query is a
  word of the query, in any order) or ``any`` (every query). Queries are compared
  normalized: casefolded, spaces collapsed (``"  Cordless DRILL "`` is ``"cordless drill"``);
  words are runs of letters and digits.
* Which query: the query as typed, the query a redirect put in its place, and, when the
  spelling corrector applied a correction, the corrected query: a rule written for
  ``drill`` fires when a shopper typed ``dril``. A redirect itself matches the typed query
  only (it decides what is searched, so it runs before correction).
* ``start`` / ``end``: UTC datetimes (ISO 8601; a time without zone is UTC); the rule fires
  from ``start`` (inclusive) until ``end`` (exclusive).
* Actions: ``pin`` one product at a 1-based position (at most :data:`MAX_POSITION`, the
  deepest result paging reaches), ``hide`` products, ``boost`` or ``bury`` the products that
  match a filter by a percentage, ``redirect`` the query to another text.

What ``+20%`` means: a boost of ``p`` percent adds ``p/100`` of the *score spread* of the
result list (best candidate's score minus the worst's, after hiding) to the score of each
matching product; a bury subtracts it. It is scale-free and safe with negative scores (RRF,
cosine, BM25 and cross-encoder logits alike): ``+100%`` lifts even the last candidate level
with the first, ``+20%`` lets a product pass those less than a fifth of the spread above it. Several boosts and buries on one product add up. Order among equal scores
stays the relevance order.

Conflicts: a hidden product never shows, even when a rule pins it. Rules fire in order of
specificity (``exact``, then ``contains``, then ``any``), newest first within one: the first
redirect wins; when two pins want one position, the first gets it and the other goes to the
next free position below; a product pinned by two rules takes the first one's position. Two
pins of the same query condition at the same position with overlapping windows are refused on
save. A pinned product that does not match the query's filters is not shown, unless the rule
says ``ignore_filters``; a pin beyond the end of a short list goes at its end.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from catalog.fields import FieldSchema
from core.errors import ShopsearchError
from core.managed import ManagedFile, Watched, side_dir
from retrieval.filters import Condition, Filters, holds
from retrieval.hits import RankedHit

if TYPE_CHECKING:
    from retrieval.store import IndexLocation

#: The document kind of ``rules.json`` (core.managed).
KIND = "shopsearch-rules/v1"
RULES_FILE = "rules.json"
#: The deepest position a pin may take: the deepest result paging reaches (offset + k).
MAX_POSITION = 1000
MAX_BOOST_PERCENT = 100.0
MAX_NOTE_CHARS = 500
MAX_QUERY_CHARS = 512
Match = Literal["exact", "contains", "any"]
Action = Literal["pin", "hide", "boost", "bury", "redirect"]
MATCHES: tuple[str, ...] = get_args(Match)
ACTIONS: tuple[str, ...] = get_args(Action)
#: What moved a hit: (rule id, action); ``RankedHit.rule`` holds them.
Mark = tuple[str, str]
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WORD = re.compile(r"[^\W_]+")
_SPECIFIC = {"exact": 0, "contains": 1, "any": 2}


def normalize_query(text: str) -> str:
    """A query as rules compare it: casefolded, runs of spaces made one, ends stripped."""
    return " ".join(text.casefold().split())


def query_words(text: str) -> frozenset[str]:
    """The words of a query (runs of letters and digits, casefolded)."""
    return frozenset(_WORD.findall(text.casefold()))


def utcnow() -> datetime:
    """The current time, UTC (the rules' default clock)."""
    return datetime.now(timezone.utc)


def parse_time(name: str, value: Any) -> datetime | None:
    """A rule's time from an ISO 8601 string (or a datetime): aware, UTC; None stays None.

    A date alone is its midnight; a time without zone is UTC.

    Raises:
        ShopsearchError: not an ISO 8601 date or datetime (naming ``name``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ShopsearchError(
                f"rule {name}={value!r} is not an ISO 8601 time: use e.g. 2026-12-24T18:00:00Z"
            ) from None
    else:
        raise ShopsearchError(f"rule {name}={value!r}: give an ISO 8601 time string")
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _filters(value: str | Mapping[str, Any] | None) -> Filters:
    """A boost's filter: an expression (``brand = Ridgeline``) or the shorthand fields."""
    if isinstance(value, str):
        return Filters(where=value)  # type: ignore[call-arg]
    return Filters.coerce(dict(value) if value is not None else None)


@dataclass(frozen=True)
class Rule:
    """One merchandising rule (checked on construction: a bad field is a one-line error).

    Attributes:
        id: Its name (letters, digits, ``_.-``; up to 64 characters).
        action: ``pin``, ``hide``, ``boost``, ``bury`` or ``redirect``.
        match: ``exact``, ``contains`` or ``any``.
        query: The query condition, normalized (``""`` for ``any``).
        products: ``pin``: the one product; ``hide``: the products.
        position: ``pin``: the 1-based position, 1 to :data:`MAX_POSITION`.
        filter: ``boost``/``bury``: a filter expression (``brand = Ridgeline``) or a dict of
            the shorthand fields (``{"brands": ["Ridgeline"]}``).
        percent: ``boost``/``bury``: how far, in percent of the score spread (0 to 100].
        redirect: ``redirect``: the text searched instead.
        ignore_filters: ``pin``: show the product even when the query's filters exclude it.
        start: Fires from this time (UTC, inclusive); None: always did.
        end: Fires until this time (UTC, exclusive); None: never stops.
        note: Why the rule exists (for the people who manage them).
        created: When it was added (UTC).
    """

    id: str
    action: Action
    match: Match
    query: str = ""
    products: tuple[str, ...] = ()
    position: int | None = None
    filter: str | dict[str, Any] | None = None
    percent: float | None = None
    redirect: str | None = None
    ignore_filters: bool = False
    start: datetime | None = None
    end: datetime | None = None
    note: str = ""
    created: datetime = field(default_factory=utcnow)
    #: the query's words (``contains``), and the boost's parsed filter: derived, not stored
    words: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    filters: Filters | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ShopsearchError(
                f"rule id {self.id!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
            )
        where = f"rule {self.id}"
        if self.action not in ACTIONS:
            raise ShopsearchError(f"{where}: action {self.action!r}: use {', '.join(ACTIONS)}")
        if self.match not in MATCHES:
            raise ShopsearchError(f"{where}: match {self.match!r}: use {', '.join(MATCHES)}")
        query = normalize_query(self.query or "")
        if self.match == "any":
            if query:
                raise ShopsearchError(f"{where}: match 'any' takes no query (got {self.query!r})")
        elif not query_words(query):
            raise ShopsearchError(
                f"{where}: match '{self.match}' needs a query with a letter or digit"
            )
        if len(query) > MAX_QUERY_CHARS:
            raise ShopsearchError(f"{where}: the query is over {MAX_QUERY_CHARS} characters")
        put(self, "query", query)
        put(self, "words", query_words(query) if self.match == "contains" else frozenset())
        products = tuple(dict.fromkeys(str(p).strip() for p in self.products if str(p).strip()))
        put(self, "products", products)
        self._check_action(where)
        put(self, "start", parse_time("start", self.start))
        put(self, "end", parse_time("end", self.end))
        put(self, "created", parse_time("created", self.created) or utcnow())
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ShopsearchError(
                f"{where}: end {_iso(self.end)} is not after start {_iso(self.start)}"
            )
        if not isinstance(self.note, str) or len(self.note) > MAX_NOTE_CHARS:
            raise ShopsearchError(f"{where}: the note must be text of at most {MAX_NOTE_CHARS}")

    def _check_action(self, where: str) -> None:
        put = object.__setattr__
        a = self.action
        given = {
            "products": bool(self.products),
            "position": self.position is not None,
            "filter": self.filter is not None,
            "percent": self.percent is not None,
            "redirect": self.redirect is not None,
            "ignore_filters": bool(self.ignore_filters),
        }
        takes = {
            "pin": {"products", "position", "ignore_filters"},
            "hide": {"products"},
            "boost": {"filter", "percent"},
            "bury": {"filter", "percent"},
            "redirect": {"redirect"},
        }[a]
        extra = sorted(k for k, v in given.items() if v and k not in takes)
        if extra:
            raise ShopsearchError(f"{where}: a {a} rule takes no {', '.join(extra)}")
        if a == "pin":
            if len(self.products) != 1:
                raise ShopsearchError(
                    f"{where}: a pin rule pins one product (got {len(self.products)}): "
                    "add one rule per product"
                )
            if (
                isinstance(self.position, bool)
                or not isinstance(self.position, int)
                or not 1 <= self.position <= MAX_POSITION
            ):
                raise ShopsearchError(
                    f"{where}: pin position {self.position!r} is not within 1 to {MAX_POSITION} "
                    "(the deepest result paging reaches)"
                )
        elif a == "hide":
            if not self.products:
                raise ShopsearchError(f"{where}: a hide rule needs at least one product id")
        elif a in ("boost", "bury"):
            if self.filter is None or (isinstance(self.filter, str) and not self.filter.strip()):
                raise ShopsearchError(
                    f"{where}: a {a} rule needs a filter (e.g. 'brand = Ridgeline')"
                )
            if not isinstance(self.filter, str | dict):
                raise ShopsearchError(f"{where}: filter must be an expression or an object")
            try:
                pct = float(self.percent) if self.percent is not None else None
            except (TypeError, ValueError):
                pct = None
            if pct is None or not 0 < pct <= MAX_BOOST_PERCENT:
                raise ShopsearchError(
                    f"{where}: a {a} rule needs a percent above 0 and at most "
                    f"{MAX_BOOST_PERCENT:g} (got {self.percent!r})"
                )
            put(self, "percent", pct)
            put(self, "filters", _filters(self.filter))
            if self.filters.is_empty():
                raise ShopsearchError(f"{where}: the {a} filter is empty: it would match all")
        else:
            target = normalize_query(self.redirect or "")
            if not query_words(target):
                raise ShopsearchError(
                    f"{where}: a redirect rule needs a query to search instead, with a letter "
                    "or digit"
                )
            put(self, "redirect", target)

    # -- what it is -------------------------------------------------------------------------

    @property
    def product(self) -> str:
        """The pinned product (pin rules)."""
        return self.products[0]

    def active(self, now: datetime) -> bool:
        """True when ``now`` (aware) is in the rule's time window."""
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def matches(self, query: str) -> bool:
        """True when the rule's query condition holds for ``query`` (any spelling)."""
        if self.match == "any":
            return True
        q = normalize_query(query)
        if self.match == "exact":
            return q == self.query
        return self.words <= query_words(q)

    def condition(self) -> str:
        """The query condition in words: ``exact "drill"``, ``contains "drill"``, ``any``."""
        return "any query" if self.match == "any" else f'{self.match} "{self.query}"'

    def describe(self) -> str:
        """One line: what the rule does, to which queries, when."""
        a = self.action
        if a == "pin":
            what = f"pin {self.product} at {self.position}" + (
                " (ignoring filters)" if self.ignore_filters else ""
            )
        elif a == "hide":
            what = "hide " + ", ".join(self.products)
        elif a in ("boost", "bury"):
            flt = self.filter if isinstance(self.filter, str) else _shorthand(self.filter)
            sign = "+" if a == "boost" else "-"
            what = f"{a} [{flt}] {sign}{self.percent:g}%"
        else:
            what = f'redirect to "{self.redirect}"'
        when = ""
        if self.start is not None or self.end is not None:
            when = f" from {_iso(self.start) or 'always'} until {_iso(self.end) or 'ever'}"
        return f"{self.id}: {what} for {self.condition()}{when}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the fields that are set (what ``rules.json`` stores)."""
        out: dict[str, Any] = {"id": self.id, "action": self.action, "match": self.match}
        if self.query:
            out["query"] = self.query
        if self.products:
            out["products"] = list(self.products)
        for name in ("position", "filter", "percent", "redirect"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.ignore_filters:
            out["ignore_filters"] = True
        if self.start is not None:
            out["start"] = _iso(self.start)
        if self.end is not None:
            out["end"] = _iso(self.end)
        if self.note:
            out["note"] = self.note
        out["created"] = _iso(self.created)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from :meth:`to_dict`'s form (or a request body).

        Raises:
            ShopsearchError: an unknown or missing field, or a bad value (one line).
        """
        names = {f.name for f in cls.__dataclass_fields__.values() if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ShopsearchError(
                f"rule {data.get('id', '?')}: unknown field(s) {', '.join(map(str, unknown))}: "
                f"use {', '.join(sorted(names))}"
            )
        missing = [n for n in ("id", "action", "match") if data.get(n) is None]
        if missing:
            raise ShopsearchError(f"rule {data.get('id', '?')}: missing {', '.join(missing)}")
        values = dict(data)
        if isinstance(values.get("products"), str):
            values["products"] = [values["products"]]
        if values.get("products") is not None:
            values["products"] = tuple(values["products"])
        return cls(**values)


def _shorthand(value: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (value or {}).items())


# ------------------------------------------------------------------------------------------
# Which rules fire for a query: indexed, not a scan
# ------------------------------------------------------------------------------------------


class RuleBook:
    """The rules, indexed by query: an exact query's rules are one dict lookup, a
    ``contains`` rule sits under one of its words (the longest), so finding the rules of a
    query costs a lookup per query word, whatever the number of rules.

    Args:
        rules: The rules, any order.
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._exact: dict[str, list[Rule]] = {}
        self._contains: dict[str, list[Rule]] = {}
        self._any: list[Rule] = []
        for rule in self.rules:
            if rule.match == "exact":
                self._exact.setdefault(rule.query, []).append(rule)
            elif rule.match == "contains":
                key = max(sorted(rule.words), key=len)
                self._contains.setdefault(key, []).append(rule)
            else:
                self._any.append(rule)
        #: rule id -> (the schema, its filter's conditions under it (None: no longer fits),
        #: the fields they read)
        self._bound: dict[str, tuple[Any, ...]] = {}
        #: for :meth:`matcher`: (field, display value) -> normalized value, and (rule id,
        #: the values its filter reads) -> whether they match it; both under one schema
        self._memo: dict[tuple[str, Any], Any] = {}
        self._verdicts: dict[tuple[Any, ...], bool] = {}
        self._memo_schema: Any = None

    @classmethod
    def from_entries(cls, entries: Sequence[Mapping[str, Any]]) -> RuleBook:
        """The book of a file's entries (raises on the first bad one)."""
        return cls(Rule.from_dict(e) for e in entries)

    def __len__(self) -> int:
        return len(self.rules)

    def matching(self, queries: Iterable[str | None], now: datetime) -> list[Rule]:
        """The rules in their time window whose condition holds for any of ``queries``.

        Returns:
            The rules, most specific first (exact, contains, any), newest first within one.
        """
        found: dict[str, Rule] = {}
        for text in dict.fromkeys(normalize_query(q) for q in queries if q):
            for rule in self._exact.get(text, ()):
                found.setdefault(rule.id, rule)
            if self._contains:
                words = query_words(text)
                for word in words:
                    for rule in self._contains.get(word, ()):
                        if rule.words <= words:
                            found.setdefault(rule.id, rule)
        for rule in self._any:
            found.setdefault(rule.id, rule)
        active = [r for r in found.values() if r.active(now)]
        active.sort(key=lambda r: (_SPECIFIC[r.match], -r.created.timestamp(), r.id))
        return active

    def matcher(self, schema: FieldSchema) -> Matcher:
        """Whether a hit matches a boost or bury rule's filter, under the index's fields.

        Each rule's filter is bound to ``schema`` once (not per search); a filter that no
        longer fits the index (a field dropped since the rule was saved) matches nothing.
        A hit's payload lacks the store's normalized keys: the ones a rule reads are derived
        from the hit's fields, once per hit, from a memo of the values seen before (a brand
        is normalized once, not once per hit and search).
        """
        last: list[Any] = [None, {}]  # the payload last seen, and its values read so far
        memo, verdicts = self._memo, self._verdicts
        if self._memo_schema is not schema or len(memo) + len(verdicts) > _MEMO_SIZE:
            memo.clear()
            verdicts.clear()
            self._memo_schema = schema

        def matches(rule: Rule, payload: Mapping[str, Any]) -> bool:
            bound = self._bound.get(rule.id)
            if bound is None or bound[0] is not schema:
                bound = self._bound[rule.id] = (schema, *_bind(rule, schema))
            _, conditions, fields = bound
            if conditions is None:
                return False
            if last[0] is not payload:
                last[0], last[1] = payload, {}
            seen = last[1]
            values = []
            for key, f in fields:
                if key not in seen:
                    seen[key] = (
                        (True, payload[key]) if key in payload else (False, f.value(payload))
                    )
                values.append(seen[key])
            # a rule's verdict depends on these values only: decided once per distinct one
            try:
                return verdicts[(rule.id, *values)]
            except KeyError:
                cache = True
            except TypeError:  # a list value: not kept
                cache = False
            derived = {
                key: value if stored else _normalized_memo(f, value, memo)
                for (key, f), (stored, value) in zip(fields, values, strict=True)
            }
            verdict = all(holds(c, derived) for c in conditions)
            if cache:
                verdicts[(rule.id, *values)] = verdict
            return verdict

        return matches

    def redirect(self, query: str, now: datetime) -> Rule | None:
        """The redirect rule that fires for the typed query, or None (also for a query
        without a word: the search refuses it as typed)."""
        if not self.rules or not query_words(query):
            return None
        return next((r for r in self.matching([query], now) if r.action == "redirect"), None)

    def plan(
        self, queries: Iterable[str | None], now: datetime, redirect: Rule | None = None
    ) -> Plan:
        """What the rules do to a query's results (its typed, redirected and corrected text)."""
        if not self.rules:
            return Plan((), redirect)
        fired = [r for r in self.matching(queries, now) if r.action != "redirect"]
        return Plan(tuple(fired), redirect)


# ------------------------------------------------------------------------------------------
# What they do to a ranked list
# ------------------------------------------------------------------------------------------

#: Payloads by product id, as ``Retriever.payloads`` gives them (unknown ids absent).
Fetch = Callable[[list[str]], Mapping[str, Mapping[str, Any]]]
#: Whether a stored payload passes the query's filters.
Allowed = Callable[[Mapping[str, Any]], bool]
#: Whether a hit's payload matches a boost or bury rule's filter.
Matcher = Callable[[Rule, Mapping[str, Any]], bool]


def stored_payload(payload: Mapping[str, Any], schema: FieldSchema) -> dict[str, Any]:
    """A hit's payload with the normalized filter keys the store keeps beside its fields
    (hits carry the public fields only), so that ``Filters.matches`` reads it as stored."""
    out = dict(payload)
    for f in schema.fields:
        if f.filterable and f.key not in out:
            value = _derive(f, payload, {})
            if value is not None:
                out[f.key] = value
    return out


#: Entries of a book's memo of normalized values before it starts again.
_MEMO_SIZE = 100_000


def _derive(f: Any, payload: Mapping[str, Any], memo: dict[tuple[str, Any], Any]) -> Any:
    """The normalized filter value of field ``f`` for a hit's payload (None: none)."""
    return _normalized_memo(f, f.value(payload), memo)


def _normalized_memo(f: Any, raw: Any, memo: dict[tuple[str, Any], Any]) -> Any:
    """``f.normalize(raw)`` (None when it does not fit), remembered per hashable value."""
    try:
        return memo[(f.name, raw)]
    except KeyError:
        pass
    except TypeError:  # a list or a dict: not kept
        return _normalized(f, raw)
    value = memo[(f.name, raw)] = _normalized(f, raw)
    return value


def _normalized(f: Any, raw: Any) -> Any:
    try:
        return f.normalize(raw)
    except ValueError:
        return None


def _bind(rule: Rule, schema: FieldSchema) -> tuple[tuple[Condition, ...] | None, tuple[Any, ...]]:
    """A boost rule's conditions under ``schema`` and the (key, field) pairs they read."""
    assert rule.filters is not None
    try:
        conditions = rule.filters.conditions(schema)
    except ShopsearchError:
        return None, ()
    keys: set[str] = set()
    todo: list[Any] = list(conditions)
    while todo:
        c = todo.pop()
        if hasattr(c, "items"):
            todo.extend(c.items)
        elif hasattr(c, "item"):
            todo.append(c.item)
        else:
            keys.add(c.key)
    return conditions, tuple((f.key, f) for f in schema.fields if f.key in keys)


def _marked(hit: RankedHit, mark: Mark, **changes: Any) -> RankedHit:
    return replace(hit, rule=(*hit.rule, mark), **changes)


@dataclass(frozen=True)
class Plan:
    """The rules that fire for one search, and how they change its ranked list.

    Attributes:
        rules: The rules that fire (no redirect), in order of precedence.
        redirected: The redirect rule that chose the query searched, or None.
    """

    rules: tuple[Rule, ...] = ()
    redirected: Rule | None = None

    def __bool__(self) -> bool:
        return bool(self.rules) or self.redirected is not None

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids of every rule that fired, the redirect first."""
        first = (self.redirected.id,) if self.redirected is not None else ()
        return first + tuple(r.id for r in self.rules)

    @property
    def hidden(self) -> dict[str, str]:
        """Hidden product id -> the rule that hides it."""
        out: dict[str, str] = {}
        for rule in self.rules:
            if rule.action == "hide":
                for pid in rule.products:
                    out.setdefault(pid, rule.id)
        return out

    def of(self, *actions: str) -> list[Rule]:
        """The firing rules of these actions, in order of precedence."""
        return [r for r in self.rules if r.action in actions]

    def hide(self, hits: Sequence[RankedHit]) -> list[RankedHit]:
        """The hits without the hidden products."""
        hidden = self.hidden
        if not hidden:
            return list(hits)
        return [h for h in hits if h.product_id not in hidden]

    def boost(self, hits: Sequence[RankedHit], matches: Matcher) -> list[RankedHit]:
        """Boosts and buries applied to ``hits`` (ranked best first), re-sorted by score.

        Each matching rule adds (boost) or subtracts (bury) ``percent/100`` of the score
        spread (best minus worst score of ``hits``; 1.0 when they are all equal) to the
        score of each hit whose payload matches its filter. Equal scores keep their order.
        """
        rules = self.of("boost", "bury")
        if not rules or not hits:
            return list(hits)
        scores = [h.score for h in hits]
        spread = max(scores) - min(scores)
        spread = spread if spread > 0 else 1.0
        out: list[RankedHit] = []
        moved = False
        for hit in hits:
            for rule in rules:
                assert rule.percent is not None
                if matches(rule, hit.payload):
                    sign = 1.0 if rule.action == "boost" else -1.0
                    delta = sign * rule.percent / 100.0 * spread
                    hit = _marked(hit, (rule.id, rule.action), score=hit.score + delta)
                    moved = True
            out.append(hit)
        if moved:
            out.sort(key=lambda h: -h.score)  # stable: ties keep the relevance order
        return out

    def pin(
        self,
        hits: Sequence[RankedHit],
        fetch: Fetch,
        allowed: Allowed,
    ) -> list[RankedHit]:
        """The pins placed at their absolute positions in the whole ranked list.

        Args:
            hits: The whole ranked list (every candidate, best first), hidden ones removed.
            fetch: Payloads of products by id, for pinned products not among ``hits``.
            allowed: Whether a fetched product passes the query's filters (a pinned product
                among ``hits`` passed them already).

        Returns:
            The list with each pinned product moved (or added) to its position; a position
            beyond the list's end puts it last.
        """
        rules = self.of("pin")
        if not rules:
            return list(hits)
        hidden = self.hidden
        by_id = {h.product_id: h for h in hits}
        missing = [r.product for r in rules if r.product not in by_id and r.product not in hidden]
        fetched = fetch(list(dict.fromkeys(missing))) if missing else {}
        placed: dict[int, RankedHit] = {}  # 0-based position -> pinned hit
        pinned: set[str] = set()
        outside: set[str] = set()  # pinned products that were not candidates
        for rule in rules:
            pid = rule.product
            if pid in pinned or pid in hidden:
                continue
            hit = by_id.get(pid)
            if hit is None:
                payload = fetched.get(pid)
                if payload is None or (not rule.ignore_filters and not allowed(payload)):
                    continue
                public = {k: v for k, v in payload.items() if not str(k).startswith("_")}
                hit = RankedHit(pid, score=0.0, retrieval=0.0, retrieval_rank=0, payload=public)
                outside.add(pid)
            at = rule.position - 1
            while at in placed:
                at += 1
            placed[at] = _marked(hit, (rule.id, "pin"))
            pinned.add(pid)
        if not placed:
            return list(hits)
        rest = [h for h in hits if h.product_id not in pinned]
        pending = sorted(placed.items())
        out: list[RankedHit] = []
        organic = iter(rest)
        for position in range(len(rest) + len(pending)):
            if pending and pending[0][0] == position:
                out.append(pending.pop(0)[1])
                continue
            nxt = next(organic, None)
            if nxt is None:
                break
            out.append(nxt)
        out.extend(hit for _, hit in pending)  # positions beyond the list's end: last
        for i, hit in enumerate(out):
            if hit.product_id in outside and len(out) > 1:
                # a product from outside the candidates takes its upper neighbour's score
                # (its lower one's at the top), so the scores stay in order around it
                neighbour = out[i - 1] if i > 0 else out[1]
                out[i] = replace(hit, score=neighbour.score)
        return out


# ------------------------------------------------------------------------------------------
# Where they are kept
# ------------------------------------------------------------------------------------------

#: Checks a rule against the index before it is saved (products exist, filter fields).
Check = Callable[[Rule], None]


class RuleStore:
    """The rules of one index: ``DIR/rules.json``, read again when it changes.

    Args:
        directory: Where ``rules.json`` lives: the embedded index's directory, or the
            ``--rules-dir`` of a server index (:func:`core.managed.side_dir`).
        clock: The current time (UTC, aware); tests pass their own.
    """

    def __init__(
        self, directory: str | os.PathLike[str], clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.directory = Path(directory)
        self.file = ManagedFile(self.directory / RULES_FILE, KIND)
        self.clock = clock
        self._book = Watched(self.file, RuleBook.from_entries)

    def __repr__(self) -> str:
        return f"RuleStore({str(self.directory)!r})"

    def book(self) -> RuleBook:
        """The rules as they are now (one ``stat`` per call; re-read after a change)."""
        return self._book.get()

    def list(self) -> list[Rule]:
        """Every rule, in the order they were added.

        Raises:
            ShopsearchError: ``rules.json`` is damaged.
        """
        return [Rule.from_dict(e) for e in self.file.read()]

    def create(self, fields: Mapping[str, Any], check: Check | None = None) -> Rule:
        """Saves a new rule from its fields (:meth:`Rule.from_dict`); without an ``id`` it
        gets the next free ``r<N>``. See :meth:`add` for the checks and errors."""
        fields = dict(fields)
        given = fields.pop("id", None)
        fields.pop("created", None)
        rule = Rule.from_dict({"id": given or _next_id(self.file.read()), **fields})
        return self.add(rule, check, renumber=not given)

    def add(self, rule: Rule, check: Check | None = None, *, renumber: bool = False) -> Rule:
        """Saves a new rule, after checking it against the index and the other rules.

        Args:
            rule: The rule (its fields are checked already).
            check: Checks it against the index (:func:`index_check`); None skips that.
            renumber: Give it the next free ``r<N>`` id if its own was taken meanwhile.

        Returns:
            The rule saved.

        Raises:
            ShopsearchError: Its id is taken, ``check`` refuses it, or another pin already
                holds that position for the same query condition in an overlapping window.
        """
        if check is not None:
            check(rule)
        saved = [rule]

        def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            rule = saved[0]
            if renumber and any(e.get("id") == rule.id for e in entries):
                rule = saved[0] = replace(rule, id=_next_id(entries))
            rules = [Rule.from_dict(e) for e in entries]
            for other in rules:
                if other.id == rule.id:
                    raise ShopsearchError(
                        f"rule id {rule.id!r} is taken: remove that rule first or pick another id"
                    )
                if _collide(rule, other):
                    raise ShopsearchError(
                        f"rule {other.id} already pins position {other.position} for "
                        f"{other.condition()} in an overlapping time window: remove it first "
                        "or pick another position"
                    )
            return [*entries, rule.to_dict()]

        self.file.update(change)
        return saved[0]

    def remove(self, rule_id: str) -> Rule:
        """Deletes a rule.

        Raises:
            ShopsearchError: There is no rule with that id.
        """
        removed: list[Rule] = []

        def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            keep = [e for e in entries if e.get("id") != rule_id]
            if len(keep) == len(entries):
                raise ShopsearchError(f"no rule {rule_id!r}: 'shopsearch rules list' shows the ids")
            removed.extend(Rule.from_dict(e) for e in entries if e.get("id") == rule_id)
            return keep

        self.file.update(change)
        return removed[0]

    def taken(self) -> set[str]:
        """The ids in use."""
        return {str(e.get("id")) for e in self.file.read()}


def _next_id(entries: Sequence[Mapping[str, Any]]) -> str:
    """``r<N>``, N one above the highest in use."""
    numbers = [
        int(m.group(1)) for e in entries if (m := re.fullmatch(r"r(\d+)", str(e.get("id", ""))))
    ]
    return f"r{max(numbers, default=0) + 1}"


def _collide(a: Rule, b: Rule) -> bool:
    """Two pins of one query condition at one position, in overlapping windows."""
    if a.action != "pin" or b.action != "pin" or a.position != b.position:
        return False
    if a.match != b.match or a.query != b.query:
        return False
    starts = max(
        a.start or datetime.min.replace(tzinfo=timezone.utc),
        b.start or datetime.min.replace(tzinfo=timezone.utc),
    )
    ends = min(
        a.end or datetime.max.replace(tzinfo=timezone.utc),
        b.end or datetime.max.replace(tzinfo=timezone.utc),
    )
    return starts < ends


@contextlib.contextmanager
def editing(
    location: IndexLocation, rules_dir: str | os.PathLike[str] | None = None
) -> Iterator[tuple[RuleStore, Check]]:
    """The rules of an index, and the check new rules must pass against it (its products and
    fields), with the index's store open (not its models) until the block ends.

    Args:
        location: The index.
        rules_dir: Where its ``rules.json`` is kept; None: the embedded index's directory.

    Raises:
        ShopsearchError: No such directory, a server index without ``rules_dir``, or an
            index that cannot be opened.
    """
    from retrieval.store import open_backend

    store = RuleStore(side_dir(location.path, rules_dir))
    collection = open_backend(location).open()
    try:
        schema = collection.schema
        yield store, index_check(collection.retrieve, lambda f: f.check(schema))
    finally:
        collection.close()


def index_check(
    payloads: Callable[[list[str]], Mapping[str, Any]],
    check_filter: Callable[[Filters], None] | None = None,
) -> Check:
    """A :data:`Check` against an index.

    Args:
        payloads: Product id -> stored payload (``Retriever.payloads`` or a collection's);
            unknown ids absent.
        check_filter: Checks a boost's filter against the index's fields (raises the
            filter's one-line error); None skips it.

    The check raises ``ShopsearchError``: a product the index does not hold (named), or the
    filter's own error.
    """

    def check(rule: Rule) -> None:
        if rule.products:
            known = payloads(list(rule.products))
            unknown = [p for p in rule.products if p not in known]
            if unknown:
                raise ShopsearchError(
                    f"rule {rule.id}: product {unknown[0]!r} is not in the index"
                    + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                    + ": check the id"
                )
        if rule.filters is not None and check_filter is not None:
            try:
                check_filter(rule.filters)
            except ShopsearchError as exc:
                raise ShopsearchError(f"rule {rule.id}: {exc}") from None

    return check


# ------------------------------------------------------------------------------------------
# What they would do to a query (``shopsearch rules test``)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """What the rules do to one query's results.

    Attributes:
        query: The query as typed.
        redirected: The text searched instead (a redirect rule fired), or None.
        fired: The rules that fired, in order of precedence (the redirect first).
        waiting: Rules whose query condition holds but whose time window does not (now).
        hits: The page of results with the rules (each moved hit names its rule).
        before: Product id -> its rank without any rule (1-based; absent: not in the
            ranking without rules, e.g. a pinned product from outside the candidates).
    """

    query: str
    redirected: str | None
    fired: tuple[Rule, ...]
    waiting: tuple[Rule, ...]
    hits: Sequence[RankedHit]
    before: Mapping[str, int]
    offset: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rules (each with its ``description``) and the ranked page."""
        return {
            "query": self.query,
            "redirected": self.redirected,
            "fired": [{**r.to_dict(), "description": r.describe()} for r in self.fired],
            "waiting": [{**r.to_dict(), "description": r.describe()} for r in self.waiting],
            "hits": [
                {**h.to_dict(self.offset + i), "rank_without_rules": self.before.get(h.product_id)}
                for i, h in enumerate(self.hits, start=1)
            ],
        }


def try_rules(pipeline: Any, query: str, *, k: int = 10, offset: int = 0, **search: Any) -> Trial:
    """Searches ``query`` with the pipeline's rules and without, and says what they did.

    Args:
        pipeline: A ``SearchPipeline`` (its ``rules`` store is the one tried).
        query: What a shopper would type.
        k: Results per page.
        offset: The page's first result (0-based).
        search: More arguments of ``SearchPipeline.search`` (filters, filter, mode ...).

    Raises:
        ShopsearchError: The pipeline has no rules (a server index without ``rules_dir``),
            or the search's own errors.
    """
    store: RuleStore | None = pipeline.rules
    if store is None:
        raise ShopsearchError(
            "this index keeps no rules: give --rules-dir for an index on a Qdrant server"
        )
    hits = pipeline.search(query, k=k, offset=offset, **search)
    depth = min(MAX_POSITION, max(offset + k, 50))
    plain = pipeline.search(query, k=depth, rules=False, **search)
    rules = {r.id: r for r in store.list()}
    fired = tuple(rules[i] for i in hits.rules if i in rules)
    texts = [t for t in (query, hits.redirected, hits.corrected) if t]
    now = store.clock()
    waiting = tuple(
        r
        for r in rules.values()
        if r.id not in hits.rules
        and not r.active(now)
        and any(r.matches(t) for t in (texts if r.action != "redirect" else [query]))
    )
    before = {h.product_id: i for i, h in enumerate(plain, start=1)}
    return Trial(query, hits.redirected, fired, waiting, list(hits), before, offset)


__all__ = [
    "ACTIONS",
    "KIND",
    "MATCHES",
    "MAX_POSITION",
    "RULES_FILE",
    "Mark",
    "Plan",
    "Rule",
    "RuleBook",
    "RuleStore",
    "Trial",
    "index_check",
    "normalize_query",
    "parse_time",
    "query_words",
    "try_rules",
]

"""``GET|POST /admin/rules``, ``DELETE /admin/rules/{id}``, ``GET /admin/rules/test``: the
shop's merchandising rules (admin).

The rules are ``rules.json`` in ``SHOPSEARCH_RULES_DIR`` (default: the index directory); the
search pipeline re-reads the file when it changes, so an edit applies from the next search, in
every worker, without a reload. :mod:`rerank.rules` has the semantics.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ShopsearchError
from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    BODY_RESPONSES,
    INVALID_RESPONSES,
    UNAVAILABLE_RESPONSES,
    RuntimeDep,
    Settings,
    lists_dir,
    no_lists_dir_responses,
    problem,
)
from shopsearch.service.models import MAX_QUERY_CHARS, SearchResult
from shopsearch.service.settings import ServiceSettings

router = APIRouter(tags=["admin"], dependencies=ADMIN)

MAX_PRODUCTS = 100
NO_DIR_RESPONSES = no_lists_dir_responses("rules")
DAMAGED = problem("The stored rules are damaged (edited by hand): the message names the file.")


class RuleIn(BaseModel):
    """A rule to add: one action, for some queries, maybe only in a time window."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None,
        max_length=64,
        description="Its id (letters, digits, _ . -); absent: the next free r<N>.",
    )
    action: Literal["pin", "hide", "boost", "bury", "redirect"] = Field(
        description="pin one product at a position; hide products; boost or bury the products "
        "matching a filter; redirect the query to another text."
    )
    match: Literal["exact", "contains", "any"] = Field(
        "exact",
        description="exact: the whole query; contains: every word of `query` is in the query; "
        "any: every query. Compared casefolded, spaces collapsed; against the query as typed, "
        "as redirected and as corrected (a redirect: as typed only).",
    )
    query: str | None = Field(
        None, max_length=MAX_QUERY_CHARS, description="The query condition (none for any)."
    )
    products: list[str] | None = Field(
        None,
        max_length=MAX_PRODUCTS,
        description="pin: the one product id; hide: the product ids. Each must be in the index.",
    )
    position: int | None = Field(
        None, description="pin: the 1-based position, 1 to 1000 (the deepest page)."
    )
    filter: str | dict[str, Any] | None = Field(
        None,
        description="boost/bury: a filter expression ('brand = Ridgeline') or the shorthand "
        'fields ({"brands": ["Ridgeline"]}); its fields must be filterable in the index.',
    )
    percent: float | None = Field(
        None,
        description="boost/bury: percent of the result list's score spread (best minus worst "
        "score) added or taken away, above 0 and at most 100.",
    )
    redirect: str | None = Field(
        None, max_length=MAX_QUERY_CHARS, description="redirect: the text searched instead."
    )
    ignore_filters: bool = Field(
        False, description="pin: show the product even when the query's filters exclude it."
    )
    start: str | None = Field(
        None, description="Fires from this time (ISO 8601; no zone: UTC), inclusive."
    )
    end: str | None = Field(
        None, description="Fires until this time (ISO 8601; no zone: UTC), exclusive."
    )
    note: str = Field("", max_length=500, description="Why the rule exists.")


class RuleOut(RuleIn):
    """A stored rule."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="Its id: what DELETE takes.")
    created: datetime = Field(description="When it was added (UTC).")
    description: str = Field(description="The rule in one line.")


class RuleList(BaseModel):
    rules: list[RuleOut]


class RuleTrial(BaseModel):
    """What the rules do to one query's first page."""

    query: str
    redirected: str | None = Field(description="The text searched instead, or null.")
    fired: list[RuleOut] = Field(description="The rules that fired, in order of precedence.")
    waiting: list[RuleOut] = Field(
        description="Rules whose query condition holds but whose time window does not (now)."
    )
    results: list[SearchResult] = Field(
        description="The page with the rules; each moved result lists its rules in `merchandising`."
    )
    rank_without_rules: dict[str, int | None] = Field(
        description="Product id -> its rank without any rule (null: not ranked without them)."
    )


def _out(rule) -> RuleOut:
    data = rule.to_dict()
    data["created"] = rule.created
    return RuleOut(**data, description=rule.describe())


def _store(settings: ServiceSettings):
    from rerank.rules import RuleStore

    return RuleStore(lists_dir(settings, "rules"))


@router.get(
    "/admin/rules",
    response_model=RuleList,
    responses={400: DAMAGED, **NO_DIR_RESPONSES, **ADMIN_RESPONSES},
)
def list_rules(settings: Settings) -> RuleList:
    """The shop's merchandising rules, in the order they were added."""
    return RuleList(rules=[_out(r) for r in _store(settings).list()])


@router.post(
    "/admin/rules",
    response_model=RuleOut,
    status_code=201,
    responses={
        400: problem(
            "Not a valid rule, in one line: a product not in the index, a filter the index "
            "cannot take (the filter's own message), a pin position beyond 1000, a pin at a "
            "position another pin holds for the same query in an overlapping window, an id in "
            "use, a bad time, or a field the action does not take."
        ),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
        **BODY_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def add_rule(body: RuleIn, settings: Settings, runtime: RuntimeDep) -> RuleOut:
    """Add a rule, checked against the index (its products and fields) and the other rules;
    searches apply it from the next one."""
    from rerank.rules import index_check

    store = _store(settings)
    with runtime.pin() as loaded:
        retriever = loaded.pipeline.retriever
        with loaded.search_lock:
            schema = retriever.schema
            check = index_check(retriever.payloads, lambda f: f.check(schema))
            rule = store.create(body.model_dump(exclude_none=True), check)
    return _out(rule)


@router.delete(
    "/admin/rules/{rule_id}",
    response_model=RuleOut,
    responses={
        400: DAMAGED,
        404: problem("No rule has this id."),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
        **INVALID_RESPONSES,
    },
)
def remove_rule(
    rule_id: Annotated[str, Path(min_length=1, max_length=64)], settings: Settings
) -> RuleOut:
    """Remove the rule of this id; searches stop applying it from the next one."""
    store = _store(settings)
    if all(r.id != rule_id for r in store.list()):
        raise HTTPException(404, f"no rule has id {rule_id!r}: GET /admin/rules lists them")
    try:
        return _out(store.remove(rule_id))
    except ShopsearchError as exc:  # removed by another editor meanwhile
        raise HTTPException(404, str(exc)) from None


@router.get(
    "/admin/rules/test",
    response_model=RuleTrial,
    responses={
        400: problem("The query has no letter or digit, or the stored rules are damaged."),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
        **INVALID_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def test_rules(
    settings: Settings,
    runtime: RuntimeDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_CHARS,
            # no JSON Schema pattern: its regexes are ECMA's, where \w is ASCII only, and a
            # query of Chinese or Greek letters is a query (a query without one is a 400)
            description="A query as a shopper types it: a letter or digit in it, in any script "
            "(a query without one is a 400).",
        ),
    ],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> RuleTrial:
    """Which rules fire for a query, and its first page with them (anonymous, no filters),
    with each result's rank without the rules."""
    from rerank.rules import try_rules
    from shopsearch.service.routers.search import result_of

    _store(settings)
    with runtime.pin() as loaded, loaded.search_lock:
        trial = try_rules(loaded.pipeline, q, k=k)
    return RuleTrial(
        query=trial.query,
        redirected=trial.redirected,
        fired=[_out(r) for r in trial.fired],
        waiting=[_out(r) for r in trial.waiting],
        results=[result_of(h, i, explain=False) for i, h in enumerate(trial.hits, start=1)],
        rank_without_rules={h.product_id: trial.before.get(h.product_id) for h in trial.hits},
    )

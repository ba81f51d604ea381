"""Request and response bodies of the search service (pydantic: validated, and documented in
the OpenAPI schema; a bad field is a 422 that names it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retrieval.filters import MAX_EXPRESSION_CHARS

#: Longest query accepted (characters); the retriever truncates long ones anyway.
MAX_QUERY_CHARS = 512
MAX_K = 100
#: Deepest result reachable by paging (``offset + k``).
MAX_DEPTH = 1000
MAX_USER_ID_CHARS = 256
#: Events per ``POST /events`` request.
MAX_EVENTS = 10_000
MAX_BRANDS = 50
#: Facets per search.
MAX_FACETS = 20
#: A query needs a letter or digit in some script: ``[^\W_]`` is what ``str.isalnum`` is.
QUERY_PATTERN = r"[^\W_]"


class SearchParams(BaseModel):
    """A search: the query, paging, filters and the shopper (same fields for GET and POST)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="What the shopper typed: at least one letter or digit (in any script); "
        "a query without one is a 400 that says so.",
        # documented, checked by the retriever (a 400 with its one line, not a 422)
        json_schema_extra={"pattern": QUERY_PATTERN},
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Results per page.")
    offset: int = Field(
        0, ge=0, le=MAX_DEPTH - 1, description="Results to skip (paging); offset + k <= 1000."
    )
    category: str | None = Field(
        None,
        max_length=300,
        description="Category path or any prefix of it, e.g. 'Tools > Power Tools'.",
    )
    brands: list[str] | None = Field(
        None, max_length=MAX_BRANDS, description="Keep products of any of these brands."
    )
    min_price: float | None = Field(None, ge=0, description="Lowest price, inclusive.")
    max_price: float | None = Field(None, ge=0, description="Highest price, inclusive.")
    in_stock: bool | None = Field(
        None, description="True: in-stock products only; false: out-of-stock only."
    )
    filter: str | None = Field(
        None,
        max_length=MAX_EXPRESSION_CHARS,
        description="A filter expression over the index's filterable fields, ANDed with the "
        "filters above: 'brand = DeWalt', 'brand IN [DeWalt, \"Black & Decker\"]', "
        "'price 10 TO 50', 'voltage >= 18', 'category = \"Tools > Drills\"' (a path and "
        "everything below it), 'created_at >= 2026-01-01', NOT, AND, OR, parentheses. An "
        "expression that does not parse, or names a field the index cannot filter on, is a "
        "400 that says why (naming the filterable fields).",
        json_schema_extra={"examples": ["voltage >= 18 AND brand IN [DeWalt, Makita]"]},
    )
    user_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_USER_ID_CHARS,
        description="The shopper (pseudonymized before any lookup); absent: anonymous. Prefer "
        "POST for a shopper id, so it stays out of URLs.",
    )
    session_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_USER_ID_CHARS,
        description="The shopper's session (pseudonymized): recorded in the search log with the "
        "search, so the clicks posted with its search_id join it; absent: none.",
    )
    explain: bool = Field(False, description="Add the features that moved each personal score.")
    mode: Literal["hybrid", "dense", "bm25"] | None = Field(
        None, description="Retrieval mode (default hybrid)."
    )
    correct: bool = Field(
        True,
        description="Correct misspelled words from the catalog's vocabulary; false searches "
        "the query as typed.",
    )
    facets: list[str] | None = Field(
        None,
        max_length=MAX_FACETS,
        description="Facetable fields to count values of over the candidates: 'brand', "
        "'brand:5' (top 5 values), 'price:25,50,100' (bands cut at 25, 50, 100). Repeat the "
        "parameter for several (GET) or give a list (POST). A field the filters select on "
        "counts the values it would have without its own condition (disjunctive). A field "
        "that is not facetable is a 400 naming the facetable ones.",
        json_schema_extra={"examples": [["brand", "price"]]},
    )
    sort: str | None = Field(
        None,
        max_length=200,
        description="'FIELD:asc' or 'FIELD:desc' over a sortable field (e.g. 'price:asc'): the "
        "relevant candidates by that field, relevance breaking ties, products without a value "
        "last; absent or 'relevance': by relevance. A field that is not sortable is a 400 "
        "naming the sortable ones.",
        json_schema_extra={"examples": ["price:asc"]},
    )
    diversify: str | None = Field(
        None,
        max_length=200,
        description="'FIELD:N' (e.g. 'brand:2'): at most N products of one value of a facetable "
        "field before every other value had its turn, so one product line does not fill the "
        "page; absent or 'off': none.",
        json_schema_extra={"examples": ["brand:2"]},
    )
    experiments: bool = Field(
        True,
        description="false: this shopper opted out of experiments (the shop's consent or "
        "privacy setting): the search is never served interleaved, whatever the service's "
        "interleave_share.",
    )

    @field_validator("experiments", mode="before")
    @classmethod
    def _experiments_is_a_bool(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError("give true or false, not a number")
        return value

    @field_validator("k", "offset", "min_price", "max_price", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any) -> Any:
        # pydantic's lax mode reads true as 1: a JSON boolean for a number is a mistake
        if isinstance(value, bool):
            raise ValueError("give a number, not true or false")
        return value

    @field_validator("in_stock", "explain", "correct", mode="before")
    @classmethod
    def _no_number_for_a_bool(cls, value: Any) -> Any:
        # lax mode reads 0 and 1.0 as booleans; a query string's "true"/"false"/"1" still parse
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError("give true or false, not a number")
        return value

    @model_validator(mode="after")
    def _depth(self) -> SearchParams:
        if self.offset + self.k > MAX_DEPTH:
            raise ValueError(f"offset + k must be at most {MAX_DEPTH}")
        return self

    def filters(self) -> dict[str, Any]:
        """The filter fields that are set, as ``SearchPipeline.search`` takes them."""
        out = {
            "category": self.category,
            "brands": tuple(self.brands) if self.brands else None,
            "min_price": self.min_price,
            "max_price": self.max_price,
            "in_stock": self.in_stock,
            "where": self.filter,
        }
        return {k: v for k, v in out.items() if v is not None}


class ScoreParts(BaseModel):
    """Where a result's score came from."""

    retrieval: float = Field(description="First-stage score (RRF for hybrid, cosine, BM25).")
    retrieval_rank: int = Field(description="Position in the first stage's list (1-based).")
    relevance: float | None = Field(
        description="Relevance: cross-encoder blended with the first stage (standardised)."
    )
    cross: float | None = Field(description="Cross-encoder logit alone; null without one.")
    personal: float = Field(description="What this shopper's behaviour added (0 when anonymous).")


class Reason(BaseModel):
    """A feature that moved a result's personal score."""

    feature: str
    value: float
    contribution: float


class Merchandising(BaseModel):
    """A merchandising rule that moved a result (``/admin/rules`` manages them)."""

    rule: str = Field(description="The rule's id.")
    action: Literal["pin", "boost", "bury"] = Field(description="What it did to the result.")


class SearchResult(BaseModel):
    """One ranked product."""

    rank: int = Field(description="1-based position in the whole ranking (offset included).")
    product_id: str
    score: float = Field(description="What the results are sorted by: relevance + personal.")
    scores: ScoreParts
    product: dict[str, Any] = Field(description="The product's stored fields.")
    because: list[Reason] | None = Field(
        None, description="With explain=true: the features that moved the personal score."
    )
    merchandising: list[Merchandising] | None = Field(
        None,
        description="The merchandising rules that moved this result (pinned it at its rank, "
        "boosted or buried it); null when none did.",
    )


class FacetValue(BaseModel):
    """One value of a facet and how many candidates hold it."""

    value: str | float | bool = Field(
        description="The value as compared: a keyword's normalized key, a category path, a "
        "bool, a number; a band's label for a band."
    )
    label: str = Field(description="How to show it ('DeWalt', '25 - 50').")
    count: int = Field(description="Candidates holding it.")
    filter: str = Field(
        description="The filter expression selecting it (what clicking it adds to the query)."
    )
    low: float | None = Field(None, description="A band's lowest value, inclusive.")
    high: float | None = Field(None, description="A band's highest value, exclusive.")


class Correction(BaseModel):
    """One word the spelling corrector changed."""

    model_config = ConfigDict(populate_by_name=True)

    typed: str = Field(alias="from", description="The word as typed.")
    to: str = Field(description="The catalog word searched instead.")


class SearchResponse(BaseModel):
    """A page of results."""

    search_id: str = Field(description="Log impressions and clicks against this id.")
    query: str
    corrected: str | None = Field(
        None,
        description='The corrected query the results are for ("showing results for ..."); '
        "null when the query was searched as typed.",
    )
    corrections: list[Correction] = Field(
        default_factory=list, description="Each corrected word, as typed and as corrected."
    )
    suggestion: str | None = Field(
        None,
        description='A correction offered but not applied ("did you mean ..."): the results are '
        "for the query as typed, since nothing showed the typed word was a typo.",
    )
    k: int
    offset: int
    personalized: bool = Field(description="True when the shopper's history moved a score.")
    results: list[SearchResult]
    stage_ms: dict[str, float] = Field(
        description="Time per stage: profile, retrieve (query encoding + store), rerank, "
        "personal (ms)."
    )
    took_ms: float = Field(description="Time in the pipeline, waiting included (ms).")
    note: str | None = Field(
        None,
        description="Why there are no results when the filters match no product at all "
        "(e.g. \"no product has brand 'Bosch'\"); null otherwise.",
    )
    facets: dict[str, list[FacetValue]] = Field(
        default_factory=dict,
        description="Per facet asked, its values' counts over the candidates, most frequent "
        "first (bands in order).",
    )
    total_candidates: int | None = Field(
        None,
        description="How many candidates the ranking holds (what facets count; a sorted "
        "ranking keeps only the relevant ones): paging ends there.",
    )
    rules: list[str] = Field(
        default_factory=list,
        description="The ids of the merchandising rules that fired for this query (a hide "
        "too, though it moves no result).",
    )
    redirected: str | None = Field(
        None,
        description="The text searched instead of the query, when a redirect rule fired; null "
        "otherwise.",
    )


class EventsRequest(BaseModel):
    """A batch of behaviour events in the event-log format."""

    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(
        max_length=MAX_EVENTS,
        description=(
            "Events as objects with the event-log columns: user_id, timestamp (ISO-8601 with "
            "a time zone, or epoch seconds/ms), event (search, view, click, add_to_cart, "
            "purchase), session_id, query (required on search), product_id (required on the "
            "others; must be in the index), position (>= 1). Each is validated on its own."
        ),
        json_schema_extra={
            "examples": [
                [
                    {
                        "user_id": "alice",
                        "timestamp": "2026-01-05T10:00:00Z",
                        "session_id": "s1",
                        "event": "click",
                        "product_id": "P000123",
                        "position": 2,
                    }
                ]
            ]
        },
    )


class EventReject(BaseModel):
    """An event that was not applied."""

    index: int = Field(description="0-based position of the event in the request's list.")
    reason: str


class EventsResponse(BaseModel):
    """What ``POST /events`` did: valid events are applied at once, bad ones reported."""

    accepted: int = Field(description="Valid events kept: added + duplicates.")
    added: int = Field(description="Events newly stored.")
    duplicates: int = Field(description="Valid events that were already stored.")
    forgotten: int = Field(
        0,
        description="Valid events not stored because their shopper was forgotten "
        "(DELETE /users/{user_id}): an erasure is durable, so their later events are skipped.",
    )
    logged: int = Field(
        0,
        description="Valid events recorded in the search log (0 when the service keeps none; "
        "a posted search event is not: the service logs the searches it serves).",
    )
    rejected: list[EventReject] = Field(
        description="Invalid events, each with its index and why; every event of the request "
        "is in accepted, forgotten or here."
    )
    notes: list[str] = Field(
        default_factory=list, description="What was not stored and why, in words."
    )


class ForgetResponse(BaseModel):
    removed: int = Field(description="Stored events of that shopper deleted.")
    log_rows: int | None = Field(
        None,
        description="Rows of that shopper removed from the search log (absent without one).",
    )
    log_segments: list[str] | None = Field(
        None,
        description="Search log segments rewritten without those rows (file names; absent "
        "without a search log).",
    )
    log_pending: list[str] | None = Field(
        None,
        description="Live segments of other replicas that still hold some of them: each "
        "drops them when it rotates (at the latest at the end of its UTC day), and no replica "
        "logs that shopper again.",
    )


class ReloadRequest(BaseModel):
    """New model folders; a field left out keeps the folder the service runs with."""

    model_config = ConfigDict(extra="forbid")

    reranker: str | None = Field(None, description="Cross-encoder folder.")
    personal: str | None = Field(None, description="Personalization model folder.")


class ReloadResponse(BaseModel):
    generation: int = Field(description="How many times the models were loaded.")
    models: dict[str, str | None]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    """Ready or not; the rest only for a caller with the API key (or when none is set)."""

    ready: bool
    detail: str | None = Field(
        None,
        description="Why not ready: 'loading' or 'failed' (tried again by itself when the index "
        "or a model folder changes); with the key, the reason.",
    )
    generation: int | None = None
    index: dict[str, Any] | None = None
    models: dict[str, str | None] | None = None


class Problem(BaseModel):
    """An error: what is wrong, on one line."""

    detail: str


class FieldProblem(BaseModel):
    type: str
    loc: list[str | int]
    msg: str


class ValidationProblem(BaseModel):
    """Fields that are not valid: each one in ``detail``, all of them on one line in ``message``."""

    detail: list[FieldProblem]
    message: str

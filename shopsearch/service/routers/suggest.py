"""``GET|POST /suggest``: completions of what the shopper is typing (the search box)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shopsearch.service.dependencies import (
    BODY_RESPONSES,
    INVALID_RESPONSES,
    KEYED,
    KEYED_RESPONSES,
    UNAVAILABLE_RESPONSES,
    RuntimeDep,
    Settings,
)
from shopsearch.service.errors import server_side
from shopsearch.service.models import MAX_USER_ID_CHARS
from shopsearch.service.runtime import Runtime
from shopsearch.service.settings import ServiceSettings

router = APIRouter(tags=["search"], dependencies=KEYED)

#: The longest prefix taken (characters); a longer one is a 422.
MAX_PREFIX_CHARS = 100
#: The most suggestions one request asks for.
MAX_SUGGESTIONS = 50


class SuggestionItem(BaseModel):
    """One completion."""

    text: str = Field(description="What to put in the search box.")
    source: Literal["log", "catalog"] = Field(
        description="log: a query enough shoppers searched (and clicked from); catalog: the "
        "catalog's titles, brands or categories."
    )
    score: float = Field(description="Rank score; comparable within one answer only.")


class SuggestResponse(BaseModel):
    """Completions of a prefix, best first."""

    q: str
    suggestions: list[SuggestionItem]
    ready: bool = Field(
        description="False while the service builds its first suggestions (then the list is "
        "empty); retry shortly."
    )
    personalized: bool = Field(
        description="True when the shopper's profile (top categories and brands) boosted them."
    )


class SuggestParams(BaseModel):
    """What ``/suggest`` takes (query parameters of GET, the JSON body of POST)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(
        "",
        max_length=MAX_PREFIX_CHARS,
        description="What the shopper typed so far; empty: no suggestions (not an error). A "
        "trailing space means the last word is complete.",
    )
    k: int = Field(8, ge=1, le=MAX_SUGGESTIONS, description="Suggestions wanted.")
    user_id: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_USER_ID_CHARS,
        description="The shopper (pseudonymized before any lookup): their profile's top "
        "categories and brands lift the completions of their taste a little; absent: "
        "popularity only. Prefer POST for a shopper id, so it stays out of URLs.",
    )


RESPONSES = {**KEYED_RESPONSES, **INVALID_RESPONSES, **UNAVAILABLE_RESPONSES}


@router.get("/suggest", response_model=SuggestResponse, responses=RESPONSES)
def suggest_get(
    params: Annotated[SuggestParams, Query()],
    request: Request,
    runtime: RuntimeDep,
    settings: Settings,
) -> SuggestResponse:
    """Completions of a typed prefix from queries shoppers searched and clicked from (each
    typed by at least ``SHOPSEARCH_SUGGEST_MIN_SHOPPERS`` shoppers; none carries a shopper)
    and from the catalog's titles, brands and categories; the last word may have a typo."""
    return suggest(params, request, runtime, settings)


@router.post("/suggest", response_model=SuggestResponse, responses={**RESPONSES, **BODY_RESPONSES})
def suggest_post(
    params: SuggestParams,
    request: Request,
    runtime: RuntimeDep,
    settings: Settings,
) -> SuggestResponse:
    """As ``GET /suggest``, with the fields in a JSON body (keeps shopper ids out of URLs)."""
    return suggest(params, request, runtime, settings)


def suggest(
    params: SuggestParams, request: Request, runtime: Runtime, settings: ServiceSettings
) -> SuggestResponse:
    """The answer (the suggester of ``app.state.suggestions``, the shopper's profile)."""
    q, user_id = params.q, params.user_id
    service = request.app.state.suggestions
    suggester = service.suggester
    if suggester is None or not q.strip():
        return SuggestResponse(q=q, suggestions=[], ready=suggester is not None, personalized=False)
    context = None
    if user_id is not None:
        from analytics.suggest import SuggestContext

        with runtime.pin() as loaded:
            pseudonym = loaded.pseudonymizer.pseudonym(user_id)
            request.state.user = pseudonym
            if loaded.store is not None:
                with server_side("the shopper's profile is unavailable", settings):
                    context = SuggestContext.of(loaded.store.profile(pseudonym))
    found = suggester.suggest(q, k=params.k, context=context)
    return SuggestResponse(
        q=q,
        suggestions=[SuggestionItem(text=s.text, source=s.source, score=s.score) for s in found],
        ready=True,
        personalized=context is not None,
    )

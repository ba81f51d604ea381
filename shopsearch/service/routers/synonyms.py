"""``GET|POST /admin/synonyms``, ``DELETE /admin/synonyms/{id}``: the shop's synonyms (admin).

The list is ``synonyms.json`` in ``SHOPSEARCH_RULES_DIR`` (default: the index directory); the
search pipeline re-reads it when it changes, so an edit applies from the next search, in every
worker, without a reload. ``retrieval.synonyms`` has the syntax and the semantics.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ShopsearchError
from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    BODY_RESPONSES,
    INVALID_RESPONSES,
    Settings,
    lists_dir,
    no_lists_dir_responses,
    problem,
)

router = APIRouter(tags=["admin"], dependencies=ADMIN)

#: Longest synonym line accepted over HTTP.
MAX_LINE_CHARS = 2000

NO_DIR_RESPONSES = no_lists_dir_responses("synonyms")


class SynonymOut(BaseModel):
    """One synonym of the list."""

    id: str = Field(description="Stable id (a hash of the line): what DELETE takes.")
    line: str = Field(description="The synonym as a line: 'sofa, couch' or 'tv -> television'.")
    one_way: bool = Field(description="True for 'typed -> also found'.")
    inputs: list[str] = Field(description="One-way: the typed terms; empty for multi-way.")
    terms: list[str] = Field(description="Multi-way: the group; one-way: what inputs also find.")


class SynonymList(BaseModel):
    synonyms: list[SynonymOut]


class SynonymAdd(BaseModel):
    """A synonym to add."""

    model_config = ConfigDict(extra="forbid")

    line: str = Field(
        min_length=1,
        max_length=MAX_LINE_CHARS,
        description="'sofa, couch, settee' (each term finds the others) or 'tv, telly -> "
        "television' (one way). Terms are compared as search reads them (case, plurals).",
        examples=["tv -> television", "sofa, couch, settee"],
    )


class SynonymAdded(SynonymOut):
    added: bool = Field(description="False when the same line was there already (no change).")


def _out(synonym) -> dict:
    return {
        "id": synonym.id,
        "line": synonym.text,
        "one_way": synonym.one_way,
        "inputs": list(synonym.inputs),
        "terms": list(synonym.terms),
    }


@router.get(
    "/admin/synonyms",
    response_model=SynonymList,
    responses={
        400: problem("The stored list is damaged (edited by hand): the message names the entry."),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
    },
)
def list_synonyms(settings: Settings) -> SynonymList:
    """The shop's synonyms, in the order they were added."""
    from retrieval.synonyms import list_synonyms as stored

    return SynonymList(
        synonyms=[SynonymOut(**_out(s)) for s in stored(lists_dir(settings, "synonyms"))]
    )


@router.post(
    "/admin/synonyms",
    response_model=SynonymAdded,
    responses={
        400: problem(
            "Not a valid synonym (an empty term, a term with no word, the same words on both "
            "sides of '->'), or the stored list is damaged: one line says which."
        ),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
        **BODY_RESPONSES,
    },
)
def add_synonym(body: SynonymAdd, settings: Settings) -> SynonymAdded:
    """Add a synonym; searches use it from the next one. Adding a line that is there already
    changes nothing (``added: false``)."""
    from retrieval.synonyms import add_synonym as add

    synonym, added = add(lists_dir(settings, "synonyms"), body.line)
    return SynonymAdded(**_out(synonym), added=added)


@router.delete(
    "/admin/synonyms/{synonym_id}",
    response_model=SynonymOut,
    responses={
        400: problem("The stored list is damaged (edited by hand): the message names the entry."),
        404: problem("No synonym has this id."),
        **NO_DIR_RESPONSES,
        **ADMIN_RESPONSES,
        **INVALID_RESPONSES,
    },
)
def remove_synonym(
    synonym_id: Annotated[str, Path(min_length=1, max_length=64)], settings: Settings
) -> SynonymOut:
    """Remove the synonym of this id; searches stop using it from the next one."""
    from retrieval.synonyms import list_synonyms as stored
    from retrieval.synonyms import remove_synonym as remove

    directory = lists_dir(settings, "synonyms")
    if all(s.id != synonym_id for s in stored(directory)):
        raise HTTPException(
            404, f"no synonym has id {synonym_id!r}: GET /admin/synonyms lists them"
        )
    try:
        return SynonymOut(**_out(remove(directory, synonym_id)))
    except ShopsearchError as exc:  # removed by another editor meanwhile
        raise HTTPException(404, str(exc)) from None

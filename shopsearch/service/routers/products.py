"""``PATCH /admin/products``: live price, stock and other non-searchable fields (admin)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from indexer.update import LOCK_WAIT_S, BadUpdate, UpdateQueue, update_records
from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    BODY_RESPONSES,
    UNAVAILABLE_RESPONSES,
    RuntimeDep,
    Settings,
    problem,
)
from shopsearch.service.errors import server_side

#: Products one request may change (a larger update: several requests, or the CLI).
MAX_PRODUCTS = 50_000

router = APIRouter(tags=["admin"], dependencies=ADMIN)
#: Requests arriving while an update is written are committed together (one build).
_QUEUE = UpdateQueue()


class ProductChange(BaseModel):
    """One product and the fields to change; any field but product_id is a change."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"example": {"product_id": "A-1042", "price": 79.0, "in_stock": False}},
    )

    product_id: str = Field(min_length=1, description="The indexed product to change.")


class ProductsPatch(BaseModel):
    """Fields to change per product: ``price``, ``in_stock`` or any non-searchable field."""

    model_config = ConfigDict(extra="forbid")

    products: list[ProductChange] = Field(
        min_length=1,
        max_length=MAX_PRODUCTS,
        description="One entry per product (each product once). A null leaves a field as it "
        "is. Searchable fields (title, description, brand, category, attributes) are refused: "
        "they change through indexing.",
    )


class ProductsPatched(BaseModel):
    """What the update did."""

    updated: int = Field(description="Products whose fields changed.")
    fields: list[str] = Field(description="The fields that changed.")
    build_id: str | None = Field(
        description="The embedded index's new build (null on a Qdrant server: updated in place)."
    )
    seconds: float = Field(description="Time the update took, validation included.")


@router.patch(
    "/admin/products",
    response_model=ProductsPatched,
    responses={
        400: problem(
            "A row cannot be applied (an unknown product, a negative or non-numeric price, a "
            "stock that is not true/false, a searchable field): nothing was changed."
        ),
        **ADMIN_RESPONSES,
        **BODY_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def patch_products(body: ProductsPatch, runtime: RuntimeDep, settings: Settings) -> ProductsPatched:
    """Change fields of indexed products without re-embedding them: checked whole (one bad
    row changes nothing), durable once answered, and seen by this worker's next search (the
    others' once they opened the new build: they look every second). Requests that arrive while an update is being written are
    committed together. ``shopsearch index --mode upsert|sync`` keeps a live value
    unless the catalog changed that field itself."""
    rows = update_records([p.model_dump() for p in body.products])
    bad: BadUpdate | None = None
    with runtime.pin() as loaded:
        retriever = loaded.pipeline.retriever
        with server_side("the index cannot be updated", settings):
            try:
                summary = _QUEUE.submit(
                    retriever.backend.location, rows, wait_s=min(LOCK_WAIT_S, 10.0)
                )
            except BadUpdate as exc:  # the request's fault: 400, not a retry
                bad = exc
            else:
                with loaded.search_lock:  # this worker's next search sees it
                    retriever.refresh()
    if bad is not None:
        raise bad
    return ProductsPatched(
        updated=summary.products,
        fields=list(summary.fields),
        build_id=summary.build_id,
        seconds=round(summary.seconds, 4),
    )

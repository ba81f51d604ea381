"""The product store: every Qdrant call in shopsearch lives in this package.

Two backends behind one interface (``base.Backend`` / ``base.Collection``):

* ``edge.EdgeBackend`` (default): Qdrant's own engine in-process (``qdrant-edge-py``) in a
  directory.
* ``server.ServerBackend``: a Qdrant server or cluster through ``qdrant-client`` (also its local
  mode, ``QdrantClient(":memory:")``, which the tests use in place of a server).

``request.py`` turns a ``QuerySpec`` into engine-neutral requests and fuses their results; each
backend only spells those requests in its engine's types. Every write goes to a *staging*
version that is promoted atomically when complete: readers keep answering from the old version
until then, and a crash mid-build leaves the old one in place.
"""

from __future__ import annotations

from retrieval.store.base import (
    DENSE,
    HNSW_EF_CONSTRUCT,
    HNSW_EF_SEARCH,
    HNSW_FULL_SCAN_KB,
    HNSW_M,
    KEEP_PREVIOUS,
    PAYLOAD_BRAND_KEY,
    PAYLOAD_CATEGORY_KEYS,
    PAYLOAD_CATEGORY_LEVELS,
    PAYLOAD_HASH,
    PAYLOAD_IN_STOCK,
    PAYLOAD_PRODUCT_ID,
    RRF_K,
    SEGMENT_POINTS,
    SPARSE,
    STORE_FORMAT,
    TIE_SLACK,
    Backend,
    Collection,
    IndexLocation,
    Mode,
    PointRecord,
    QuerySpec,
    category_keys,
    keyword_key,
    new_build_id,
    payload_for,
    point_id,
    public_payload,
    redact_url,
    stored_hit,
)
from retrieval.store.edge import EdgeBackend, EdgeCollection
from retrieval.store.server import ServerBackend, ServerCollection


def open_backend(location: IndexLocation) -> Backend:
    """The backend for a location (embedded directory or server)."""
    if location.path is not None:
        return EdgeBackend(location)
    return ServerBackend(location)


__all__ = [
    "DENSE",
    "HNSW_EF_CONSTRUCT",
    "HNSW_EF_SEARCH",
    "HNSW_FULL_SCAN_KB",
    "HNSW_M",
    "SEGMENT_POINTS",
    "KEEP_PREVIOUS",
    "PAYLOAD_BRAND_KEY",
    "PAYLOAD_CATEGORY_KEYS",
    "PAYLOAD_CATEGORY_LEVELS",
    "PAYLOAD_HASH",
    "PAYLOAD_IN_STOCK",
    "PAYLOAD_PRODUCT_ID",
    "RRF_K",
    "SPARSE",
    "STORE_FORMAT",
    "TIE_SLACK",
    "Backend",
    "Collection",
    "EdgeBackend",
    "EdgeCollection",
    "IndexLocation",
    "Mode",
    "PointRecord",
    "QuerySpec",
    "ServerBackend",
    "ServerCollection",
    "stored_hit",
    "category_keys",
    "keyword_key",
    "new_build_id",
    "open_backend",
    "payload_for",
    "point_id",
    "public_payload",
    "redact_url",
]

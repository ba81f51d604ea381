"""Batch indexing of a catalog into a shopsearch index (embedded Qdrant or a server)."""

from __future__ import annotations

from indexer.build import IndexSummary, content_hash, index_catalog, product_payload

__all__ = ["IndexSummary", "content_hash", "index_catalog", "product_payload"]

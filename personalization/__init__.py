"""User behaviour: event logs, pseudonymous profiles and personalisation features.

* :mod:`personalization.events` - the event log format: read (validated, with rejects) and write.
* :mod:`personalization.privacy` - keyed pseudonyms; raw user ids never leave memory.
* :mod:`personalization.profiles` - SQLite profile store: ingest, forget, point-in-time profiles,
  smoothed popularity.
* :mod:`personalization.features` - the one definition of the reranking features, shared by
  training and query time.

This package imports :mod:`catalog` only (no torch, no retrieval/rerank code).
"""

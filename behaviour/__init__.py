"""User behaviour: event logs, pseudonymous profiles and personalisation features.

* :mod:`behaviour.events` - the event log format: read (validated, with rejects) and write.
* :mod:`behaviour.privacy` - keyed pseudonyms; raw user ids never leave memory.
* :mod:`behaviour.profiles` - SQLite profile store: ingest, forget, point-in-time profiles,
  smoothed popularity.
* :mod:`behaviour.features` - the one definition of the reranking features, shared by
  training and query time.

This package imports :mod:`catalog` only (no torch, no retrieval/rerank code).
"""

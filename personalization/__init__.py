"""Personalization: shopper behaviour in, a personal part of the score out.

* :mod:`personalization.events` - the event log format, read validated (with rejects) from a
  file or from records.
* :mod:`personalization.privacy` - keyed pseudonyms; raw user ids never leave memory.
* :mod:`personalization.profiles` - SQLite profile store: ingest, forget, point-in-time
  profiles, smoothed popularity; :func:`~personalization.profiles.is_warm`.
* :mod:`personalization.impressions` - what a log's searches showed and what the shopper did.
* :mod:`personalization.clickstats` - the log's clicks over expected clicks per (query, product).
* :mod:`personalization.features` - the one definition of the personal features, shared by
  training and query time, and a hit's reasons.
* :mod:`personalization.ranker` - the fusion model at query time (training: ``training``).
* :mod:`personalization.personalizer` - what the search pipeline calls: profile, taste vector,
  the fused score.
* :mod:`personalization.ingest` - event logs into a profile directory, and a shopper out of it.

Events, privacy, profiles and features import no torch and no search stack; the ranker (torch)
and the personalizer and ingest (the index's hits and store) do.
"""

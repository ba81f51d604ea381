"""Measuring search quality offline: judged benchmarks, IR metrics and significance tests.

* :mod:`evaluation.data` - the benchmark directory format (catalog, queries, qrels, manifest),
  its loader and validator.
* :mod:`evaluation.homedepot` - the Home Depot relevance CSV imported into that format.
* :mod:`evaluation.labels` - :class:`~evaluation.labels.Judgments`, plain-Python judgments for
  the trainers.
* :mod:`evaluation.metrics` - NDCG, recall and the other metrics as pure functions.
* :mod:`evaluation.stats` - the paired tests and bootstrap intervals every benchmark reports.

Serving code never imports this package (``lint-imports`` checks it).
"""

"""Analytics over the service's search log (:mod:`personalization.searchlog`): reports,
suggestions, interleaving credit.

* :mod:`analytics.report` - what a merchandiser reads: top queries, zero-result and rescued
  queries, click-through and click position per query, abandonment, searches per shopper, the
  examination curve, per UTC day (``shopsearch analytics``, ``GET /admin/analytics``).
* :mod:`analytics.suggest` - query suggestions from the log and the catalog (``GET /suggest``).
* :mod:`analytics.interleaving` - credit per team of an interleaved experiment.

Layer: above ``indexer``, below ``training``; the service may import it, it never imports
``training`` (import-linter checks both). Reading a log needs polars only.
"""

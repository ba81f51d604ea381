"""Training (the ``train`` extra): nothing at query time imports this package.

* :mod:`training.retriever` - fine-tune the bi-encoder (in-batch negatives, MNRL).
* :mod:`training.reranker` - fine-tune the cross-encoder (BCE); :mod:`training.candidates` its
  negatives from an index.
* :mod:`training.personal` - the personal ranker on logged searches;
  :mod:`training.from_log` - from an event log end to end, with :mod:`training.propensity`.
* :mod:`training.common` - seeds, time budgets, output folders and reports both trainers share.
* :mod:`training.noise` - the typo model used to train typo-robust models.
"""

"""The ground floor every other package stands on: the error types, atomic writes, table reading.

* :mod:`core.errors` - :class:`~core.errors.ShopsearchError` (a mistake the user can fix) and
  its subclasses, and :func:`~core.errors.first_line` for messages.
* :mod:`core.io` - :func:`~core.io.atomic_write`, the one way a file is replaced.
* :mod:`core.compat` - old import paths that still work, with a warning.
* :mod:`core.tables` - the row reader the catalog and event log readers share: formats,
  JSON Lines and Parquet rows, per-row rejects.

It imports nothing of shopsearch's.
"""

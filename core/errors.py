"""The one exception type for mistakes a user can fix (bad input, bad options)."""

from __future__ import annotations


class ShopsearchError(ValueError):
    """A user-facing error: the CLI prints its message on one line and exits with status 2.

    Messages name the file/row/field at fault and say what to do; never raise this for a bug
    (anything else the CLI lets through with its traceback).

    It is a ``ValueError``: the user mistakes that used to be bare ``ValueError`` (an empty
    query, k out of range) keep working with callers' ``except ValueError``.
    """

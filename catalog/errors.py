"""The one exception type for mistakes a user can fix (bad input, bad options)."""

from __future__ import annotations


class ShopsearchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero.

    Messages name the file/row/field at fault and say what to do; never raise this for a bug.
    """

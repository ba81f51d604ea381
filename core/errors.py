"""The exception types for mistakes a user can fix (bad input, bad options), and their one line.

A user mistake raises :class:`ShopsearchError` (or a subclass): the CLI prints its message on
one line, the service answers 400. Anything else (``ValueError``, ``TypeError``,
``RuntimeError`` ...) is a bug or a broken invariant and keeps its traceback.
"""

from __future__ import annotations


class ShopsearchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with status 2.

    Messages name the file/row/field at fault and say what to do; never raise this for a bug.
    It is deliberately not a ``ValueError``: an ``except ValueError`` (a parse error, a bug)
    never catches a user mistake by accident, and the reverse.
    """


class CatalogError(ShopsearchError):
    """The catalog file as a whole cannot be read (bad path, format, encoding or columns)."""


class EventLogError(ShopsearchError):
    """The event log as a whole cannot be read (bad path, format or columns)."""


class ForgetIncomplete(ShopsearchError):
    """The user's rows are deleted, but old copies of them are still in the database files."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when empty).

    Args:
        exc: The exception.
        limit: Cut the line to this many characters (ending in ``...``); None keeps it whole.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` when it is at least 1; else the one error every batched call gives.

    Raises:
        ShopsearchError: ``batch_size`` below 1.
    """
    if batch_size < 1:
        raise ShopsearchError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size

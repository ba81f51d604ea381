"""Small JSON lists kept beside an index that admins edit while a service runs.

Merchandising rules (``rules.json``) and synonyms (``synonyms.json``) are such lists: a shop
edits them from the command line or over HTTP, and a running service sees the change at its
next search, without a restart. One file per list::

    {"kind": "shopsearch-synonyms/v1", "entries": [{...}, ...]}

* :class:`ManagedFile` reads and edits one file. An edit is a read-modify-write under an
  exclusive lock (``fcntl.flock`` on a sibling ``.<name>.lock`` file), so that two editors (the
  CLI and the service) never lose each other's changes, and the file is replaced whole
  (:func:`core.io.atomic_write`, fsynced): a reader sees the old list or the new one.
* :class:`Watched` gives a parsed view of a file that is re-read only when the file changed:
  one ``os.stat`` per call, compared on (mtime_ns, size, inode); an atomic replace changes the
  inode, so no edit goes unseen even within one mtime tick.
* :func:`side_dir` says where the lists of an index live.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from core.errors import ShopsearchError
from core.io import atomic_write

__all__ = ["ManagedFile", "Watched", "side_dir"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Entries = list[dict[str, Any]]


def side_dir(
    index: str | os.PathLike[str] | None, rules_dir: str | os.PathLike[str] | None
) -> Path:
    """The directory holding an index's managed lists.

    Args:
        index: The embedded index directory (None for a Qdrant server index).
        rules_dir: An explicit directory (``--rules-dir``, ``SHOPSEARCH_RULES_DIR``); wins.

    Raises:
        ShopsearchError: Neither is given (a server index keeps its lists in ``--rules-dir``),
            or the directory does not exist.
    """
    chosen = rules_dir if rules_dir is not None else index
    if chosen is None:
        raise ShopsearchError(
            "an index on a Qdrant server keeps its rules and synonyms in a directory of yours: "
            "pass --rules-dir DIR (SHOPSEARCH_RULES_DIR for the service)"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise ShopsearchError(
            f"{path}: no such directory (give the index directory or --rules-dir)"
        )
    return path


class ManagedFile:
    """One managed list: ``{"kind": kind, "entries": [...]}`` at ``path``.

    Args:
        path: The file (its directory must exist to write).
        kind: The document kind this code reads and writes (``shopsearch-synonyms/v1``).
    """

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(path)
        self.kind = kind

    def __repr__(self) -> str:
        return f"ManagedFile({str(self.path)!r}, {self.kind!r})"

    def signature(self) -> tuple[int, int, int] | None:
        """(mtime_ns, size, inode) of the file, None when absent: changes with every write."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def read(self) -> Entries:
        """The entries; ``[]`` when the file does not exist.

        Raises:
            ShopsearchError: The file is not JSON or not a list of this kind.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShopsearchError(
                f"{self.path}: not JSON ({exc.msg}, line {exc.lineno}): mend or remove the file"
            ) from None
        if not isinstance(doc, dict) or doc.get("kind") != self.kind:
            found = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise ShopsearchError(f"{self.path}: a document of kind {found!r}, not {self.kind!r}")
        entries = doc.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ShopsearchError(f"{self.path}: 'entries' must be a list of objects")
        return entries

    @contextmanager
    def _locked(self):
        lock = self.path.with_name(f".{self.path.name}.lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, change: Callable[[Entries], Entries]) -> Entries:
        """Reads the entries, applies ``change`` and writes its result, under the file's lock.

        ``change`` may raise (a validation error): the file is then left as it was.

        Returns:
            The entries written.
        """
        if not self.path.parent.is_dir():
            raise ShopsearchError(f"{self.path.parent}: no such directory")
        with self._locked():
            entries = change(self.read())
            doc = {"kind": self.kind, "entries": entries}
            atomic_write(
                self.path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", durable=True
            )
            return entries


class Watched(Generic[T]):
    """A parsed view of a managed file, re-read when the file changes.

    Args:
        file: The file.
        parse: Entries -> the value callers use (validated; may raise ShopsearchError).

    A file damaged by hand (the editors never write one) keeps the last good value, logged
    once per damaged version; before any good read it is the value of no entries.
    """

    def __init__(self, file: ManagedFile, parse: Callable[[Entries], T]) -> None:
        self.file = file
        self._parse = parse
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None | str = "unread"
        self._value: T = parse([])

    def get(self) -> T:
        """The current value (one ``os.stat``; a re-read and parse when the file changed)."""
        signature = self.file.signature()
        if signature == self._signature:
            return self._value
        with self._lock:
            if signature != self._signature:
                try:
                    self._value = self._parse(self.file.read())
                except ShopsearchError as exc:
                    log.warning("%s: keeping the previous version: %s", self.file.path, exc)
                self._signature = signature
        return self._value

"""Files written whole or not at all: the one atomic write.

A reader never sees half a file: the data goes to a temporary file beside the target (same
directory, so the same filesystem), which then replaces the target in one ``os.replace``. A
failure leaves the target as it was and removes the temporary file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Writes the file at the path it is given (the temporary file).
Writer = Callable[[Path], Any]


def temp_name(path: Path) -> Path:
    """The temporary sibling an atomic write of ``path`` uses: ``.<name>.<8 hex>.tmp``.

    Leftovers of a crashed writer match ``.<name>.*.tmp``, so their owner can sweep them.
    """
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(
    path: str | os.PathLike[str],
    data: str | bytes | Writer,
    *,
    encoding: str = "utf-8",
    durable: bool = False,
) -> Path:
    """Replaces ``path`` with new content atomically.

    Args:
        path: The file to write (its directory must exist).
        data: Text (written with ``encoding``), bytes, or a writer: a function that writes
            the file at the temporary path it is given (``torch.onnx.export``, polars ...).
        encoding: Encoding of text data.
        durable: fsync the file before it replaces the target, so that a power cut after the
            call returns cannot leave it empty (the directory entry is the caller's to sync).

    Returns:
        ``path``, as a ``Path``.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        if isinstance(data, str):
            with open(tmp, "w", encoding=encoding) as fh:
                fh.write(data)
        elif isinstance(data, bytes | bytearray):
            with open(tmp, "wb") as fh:
                fh.write(data)
        else:
            data(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

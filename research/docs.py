"""Benchmark tables into the documentation, written by the command that measured them.

A benchmark command given ``--docs PAGE`` writes its report (the markdown it also leaves in its
workdir) into PAGE between two markers keyed by the report's name, so a re-run replaces its own
block and nothing else, and a figure in the docs is never pasted by hand::

    <!-- written by: shopsearch bench-typo runs/hd --only corrector (AMD EPYC ..., 2026-12-07) -->
    ...the report...
    <!-- end written: typo-corrector -->

A page without the block gets it appended under a heading naming the report.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from core.errors import ShopsearchError
from core.io import atomic_write


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``shopsearch`` and its arguments), for the block's first line."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):  # the page it is written into goes without saying
        if arg == "--docs":
            del args[i : i + 2]
            break
        if arg.startswith("--docs="):
            del args[i]
            break
    return shlex.join(["shopsearch", *args])


def publish(page: str | Path, key: str, report: str, command: str, machine: str) -> Path:
    """Writes ``report`` into ``page`` as the block of ``key``, replacing an earlier one.

    Args:
        page: A markdown page of the documentation (it must exist).
        key: The report's name (``typo-corrector``, ``depth``): one block per key and page.
        report: The markdown the command wrote in its workdir.
        command: The command line that produced it.
        machine: The machine and the date of the run.

    Returns:
        The page.

    Raises:
        ShopsearchError: The page does not exist, or holds the end marker of ``key`` without
            its opening line (a hand edit broke the block: mend the markers).
    """
    path = Path(page)
    if not path.is_file():
        raise ShopsearchError(f"--docs {path}: no such page (give a page of docs/benchmarks/)")
    text = path.read_text()
    end = f"<!-- end written: {key} -->"
    block = f"<!-- written by: {command} ({machine}) -->\n{report.strip()}\n{end}"
    if end in text:
        stop = text.index(end)
        start = text.rfind("<!-- written by: ", 0, stop)
        if start < 0 or "<!-- end written: " in text[start:stop]:
            raise ShopsearchError(
                f"{path}: '{end}' has no opening '<!-- written by: ... -->' line: mend the markers"
            )
        text = text[:start] + block + text[stop + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## Latest run: `{key}`\n\n{block}\n"
    atomic_write(path, text if text.endswith("\n") else text + "\n")
    return path

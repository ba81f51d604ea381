"""The service's :class:`analytics.suggest.Suggester`: built in the background, rebuilt when
what it counts changes.

A thread builds the first Suggester once the pipeline is loaded (from the index's payloads and
the search log, ``settings.search_log``), swaps it in, and then looks every
:data:`WATCH_S` seconds at what it was built from. It builds again (the old one answers
meanwhile):

* at once when a closed segment of the log was rewritten or removed, the live segment shrank,
  or the log's ``forgotten.txt`` changed: what ``forget-user`` / ``DELETE /users/{id}`` do to
  the log, so a forgotten shopper's searches stop counting within seconds;
* at once after a reload (``POST /admin/reload``, in every worker: the generation changed) or
  when a new build of the index is served (the catalog's text changed);
* every ``suggest_refresh_s`` seconds (``SHOPSEARCH_SUGGEST_REFRESH_S``, default 300) when the
  log grew (new searches and clicks); 0 turns the periodic rebuild off;
* when asked (:meth:`SuggestionService.rebuild_soon`).

The catalog's text is read once per index build (``build_id``) and kept; the log is read
whole at each build (``analytics.suggest.log_queries``: a few seconds at 1M searches, on this
thread, never on a request's). Until the first build is done ``/suggest`` answers an empty
list with ``ready: false``. Each worker process holds its own Suggester.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError, first_line

if TYPE_CHECKING:
    from analytics.suggest import CatalogText, Suggester
    from shopsearch.service.runtime import Loaded, Runtime
    from shopsearch.service.settings import ServiceSettings

log = logging.getLogger("shopsearch.service")

#: Seconds between two looks at the log, the index build and the generation.
WATCH_S = 2.0
#: The periodic rebuild when the setting is absent (seconds).
DEFAULT_REFRESH_S = 300.0
#: Seconds before trying again after a failed build.
RETRY_S = 30.0


def iter_locked(items: Iterable[Any], lock: Any) -> Iterator[Any]:
    """``items`` read one at a time under ``lock`` (the index handle searches share), so a
    search waits at most for one read, never for the whole catalog."""
    it = iter(items)
    while True:
        with lock:
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def log_state(folder: str | None) -> tuple[dict[str, tuple[int, int, int]], Any] | None:
    """What the log folder holds: segment name -> (inode, size, mtime_ns), and the
    ``forgotten.txt`` stat; None without a folder."""
    if folder is None:
        return None
    root = Path(folder)
    files: dict[str, tuple[int, int, int]] = {}
    forgotten: Any = None
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                st = entry.stat()
                if entry.name.endswith((".parquet", ".jsonl")):
                    files[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
                elif entry.name == "forgotten.txt":
                    forgotten = (st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None
    return files, forgotten


def erased(before: Any, after: Any) -> bool:
    """True when the log changed as forgetting changes it (not only grew): a closed segment
    rewritten or gone, a live segment shorter or replaced, or the tombstones changed."""
    if before is None or after is None:
        return before != after
    files, forgotten = before
    now, now_forgotten = after
    if forgotten != now_forgotten:
        return True
    for name, (ino, size, mtime) in files.items():
        if name not in now:
            if name.endswith(".jsonl") and name[:-6] + ".parquet" in now:
                continue  # the live segment rotated into its Parquet file
            return True
        n_ino, n_size, n_mtime = now[name]
        if name.endswith(".parquet") and (n_ino, n_size, n_mtime) != (ino, size, mtime):
            return True
        if name.endswith(".jsonl") and (n_ino != ino or n_size < size):
            return True
    return False


class SuggestionService:
    """The current Suggester of a service process and the thread that keeps it fresh."""

    def __init__(self, runtime: Runtime, settings: ServiceSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        #: The search log folder (``settings.search_log``); None: catalog suggestions only.
        self.log_dir: str | None = getattr(settings, "search_log", None)
        self.min_shoppers: int = int(getattr(settings, "suggest_min_shoppers", 5))
        self.refresh_s: float = float(getattr(settings, "suggest_refresh_s", DEFAULT_REFRESH_S))
        self.suggester: Suggester | None = None
        #: why the last build failed (one line), None when it did not
        self.error: str | None = None
        self._catalog: tuple[Any, CatalogText] | None = None
        self._built_on: tuple[Any, ...] | None = None
        self._built_at = 0.0
        self._failed_at = 0.0
        self._build_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._asked = False
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background thread (the app's start-up)."""
        self._stopped.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="shopsearch-suggest", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 0.0) -> None:
        """Stops the thread (the app's shutdown), waiting up to ``timeout`` seconds for a build
        under way to end; the current Suggester stays readable."""
        self._stopped.set()
        self._wake.set()
        if timeout and self._thread is not None:
            self._thread.join(timeout)

    def rebuild_soon(self) -> None:
        """Asks for a rebuild at the thread's next look (e.g. after a shopper was forgotten)."""
        self._asked = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.refresh()
            except Exception as exc:  # a bug must not end the thread: log it, try again later
                log.exception(json.dumps({"event": "suggest_failed", "error": repr(exc)}))
            self._wake.wait(WATCH_S)
            self._wake.clear()

    # -- building --------------------------------------------------------------------------

    def _inputs(self, loaded: Loaded) -> tuple[Any, ...]:
        manifest = loaded.pipeline.retriever.manifest
        return (loaded.generation, manifest.get("build_id"), log_state(self.log_dir))

    def due(self, loaded: Loaded) -> bool:
        """Whether the Suggester should be built again now (see the module's docstring)."""
        if self.suggester is None or self._asked or self._built_on is None:
            return True
        now = self._inputs(loaded)
        if now[:2] != self._built_on[:2] or erased(self._built_on[2], now[2]):
            return True
        return bool(
            self.refresh_s
            and now[2] != self._built_on[2]
            and time.monotonic() - self._built_at >= self.refresh_s
        )

    def refresh(self, force: bool = False) -> bool:
        """Builds a new Suggester when one is due (or ``force``); True when it built one.

        Runs on the service's thread; tests call it to build without waiting.
        """
        runtime = self.runtime
        if runtime.current is None:
            return False
        if self.error and not force and time.monotonic() - self._failed_at < RETRY_S:
            return False
        with self._build_lock, runtime.pin() as loaded:
            if not (force or self.due(loaded)):
                return False
            self._asked = False
            try:
                self._build(loaded)
            except Exception as exc:
                self._failed_at = time.monotonic()
                message = first_line(exc, 300)
                if message != self.error:
                    log.error(json.dumps({"event": "suggest_build_failed", "error": message}))
                self.error = message
                return False
        return True

    def _log_key(self, loaded: Loaded) -> Any:
        """The key the log is written with (its tombstones are keyed hashes under it): the
        writer's way of finding it (``searchlog_writer.log_pseudonymizer``), else the
        profiles'."""
        try:
            from personalization.searchlog_writer import log_pseudonymizer
        except ImportError:
            return loaded.pseudonymizer
        if self.log_dir is None:
            return None
        try:
            return log_pseudonymizer(
                self.log_dir,
                self.settings.profiles,
                self.settings.secret("pseudonym_key"),
                create=False,
            )
        except (OSError, ShopsearchError):
            return loaded.pseudonymizer

    def _build(self, loaded: Loaded) -> None:
        from analytics.suggest import PAYLOAD_KEYS, Suggester, catalog_text

        inputs = self._inputs(loaded)
        retriever = loaded.pipeline.retriever
        build_id = inputs[1]
        if self._catalog is None or self._catalog[0] != build_id or build_id is None:
            collection = retriever.collection
            payloads = collection.scroll_payloads(list(PAYLOAD_KEYS))
            self._catalog = (build_id, catalog_text(iter_locked(payloads, loaded.search_lock)))
        text = self._catalog[1]
        logs = self.log_dir if inputs[2] and inputs[2][0] else None
        suggester = Suggester.build(
            logs, text, min_shoppers=self.min_shoppers, pseudonymizer=self._log_key(loaded)
        )
        self.suggester = suggester
        self._built_on = inputs
        self._built_at = time.monotonic()
        self.error = None
        log.info(
            json.dumps(
                {
                    "event": "suggestions_built",
                    "entries": suggester.stats.entries,
                    "logged_queries": suggester.stats.log_entries,
                    "build_s": suggester.stats.build_s,
                }
            )
        )

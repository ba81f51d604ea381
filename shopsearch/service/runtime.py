"""The pipeline a service process searches with: its generations, reloads and recovery.

A :class:`Loaded` bundle is one generation: the pipeline, the profile store and the
pseudonymizer. A request *pins* the generation it starts on (:meth:`Runtime.pin`) and holds it
until it is done: a reload swaps in the next generation for the requests that start after it,
and closes the old one only when its last request lets go. So no request ever finds its
pipeline or its profile store closed under it, and a reload never fails one.

Searches on one generation take turns (``Loaded.search_lock``: the index handle is not shared
between threads; run several workers for parallel searches);
writes to the profile store do not wait for them (the store serialises its own calls).

The service recovers by itself from every state it can get into: a first load that fails (no
index yet, a model folder still being copied) is tried again when the index or a model folder
changes (and every :data:`RECOVER_EVERY_S` in any case); a new build of the index is picked up
by the retriever itself. With several workers, a reload is announced in
``state_dir/reload.json``; every worker looks at it at most once a second and reloads itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError, first_line
from core.io import atomic_write
from personalization.privacy import Pseudonymizer
from shopsearch.service.settings import ServiceSettings

if TYPE_CHECKING:
    from personalization.profiles import ProfileStore
    from rerank.pipeline import SearchPipeline
    from shopsearch.service.interleaving import Challenger

log = logging.getLogger("shopsearch.service")

#: Builds a pipeline from settings (tests pass one that shares a loaded encoder).
PipelineFactory = Callable[[ServiceSettings], "SearchPipeline"]
RELOAD_FILE = "reload.json"
FOLLOW_EVERY_S = 1.0
#: After a failed load: how often the index and model folders are looked at for a change.
RECOVER_CHECK_S = 1.0
#: After a failed load: the longest wait before another try, changed or not.
RECOVER_EVERY_S = 30.0
#: After a failed load from a Qdrant server (nothing on disk to watch): the wait between tries.
RECOVER_SERVER_S = 5.0
#: Entries looked at per folder when watching for a change (a bound on the cost of a look).
_WATCH_ENTRIES = 2000
#: The longest error line the service logs or answers (:func:`core.errors.first_line`).
MESSAGE_CHARS = 300


class NotReady(Exception):
    """The pipeline is not loaded (yet, or it failed to load and is being retried)."""


def open_pipeline(settings: ServiceSettings) -> SearchPipeline:
    """The default factory: every stage from its folder, as ``SearchPipeline.open`` does
    (with the settings' intra-op ``threads`` and ``pseudonym_key``)."""
    from rerank.pipeline import SearchPipeline

    return SearchPipeline.open(
        settings.index,
        reranker=settings.reranker,
        ranker=settings.ranker,
        personal=settings.personal,
        profiles=settings.profiles if settings.personal is not None else None,
        device=settings.device,
        backend=settings.backend,
        quantize=settings.quantize,
        qdrant_url=settings.qdrant_url,
        api_key=settings.secret("qdrant_api_key"),
        collection=settings.collection,
        threads=settings.threads,
        pseudonym_key=settings.secret("pseudonym_key"),
        rules_dir=settings.rules_dir,
    )


class Loaded:
    """One generation of what a process searches with, closed after its last user."""

    def __init__(
        self,
        pipeline: SearchPipeline,
        settings: ServiceSettings,
        generation: int,
        store: ProfileStore | None,
        pseudonymizer: Pseudonymizer,
        owns_store: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.generation = generation
        self.store = store
        self.pseudonymizer = pseudonymizer
        self.owns_store = owns_store
        #: one search (or index read) at a time on this pipeline
        self.search_lock = threading.Lock()
        #: the interleaving experiment's ranker B (shopsearch.service.interleaving), or None
        self.interleave: Challenger | None = None
        self.closed = False
        self._state = threading.Lock()
        self._users = 0
        self._retired = False

    @property
    def models(self) -> dict[str, str | None]:
        manifest = self.pipeline.retriever.manifest
        return {
            "retriever": str(manifest.get("model", {}).get("name")),
            "reranker": self.settings.reranker,
            "personal": self.settings.personal,
            "ranker": self.settings.ranker,
        }

    def index_info(self) -> dict[str, Any]:
        manifest = self.pipeline.retriever.manifest
        return {
            "build_id": manifest.get("build_id"),
            "created": manifest.get("created"),
        }

    @property
    def users(self) -> int:
        """Requests holding this generation now."""
        return self._users

    def acquire(self) -> bool:
        """Pins it for one request; False when it is already retired (take the current one)."""
        with self._state:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._state:
            self._users -= 1
            last = self._retired and self._users == 0
        if last:
            self._close()

    def retire(self) -> None:
        """No new request takes it; it closes once the requests holding it are done."""
        with self._state:
            if self._retired:
                return
            self._retired = True
            idle = self._users == 0
        if idle:
            self._close()

    def close(self) -> None:
        """Closes it now (shutdown, or a generation that was never served)."""
        with self._state:
            self._retired = True
        self._close()

    def _close(self) -> None:
        with self._state:
            if self.closed:
                return
            self.closed = True
        try:
            self.pipeline.close()
        finally:
            if self.owns_store and self.store is not None:
                self.store.close()


def build(settings: ServiceSettings, factory: PipelineFactory, generation: int) -> Loaded:
    """Opens a pipeline and the profile store it ingests into."""
    pipeline = factory(settings)
    store, owns = None, False
    try:
        if pipeline.personal is not None:
            store, pz, owns = pipeline.personal.profiles, pipeline.personal.pseudonymizer, False
        elif settings.profiles is not None:
            from personalization.ingest import open_profiles

            store, pz = open_profiles(settings.profiles, key=settings.secret("pseudonym_key"))
            owns = True
        elif settings.search_log is not None:
            # no profiles but a search log: its pseudonyms must stay the same across restarts
            # and replicas (training links a shopper's rows; forget-user finds them)
            from personalization.searchlog_writer import log_pseudonymizer

            key = settings.secret("pseudonym_key")
            store, pz, owns = None, log_pseudonymizer(settings.search_log, key=key), False
        else:
            # no profiles: a throw-away key, so that logs still show an unlinkable pseudonym
            store, pz, owns = None, Pseudonymizer(secrets.token_bytes(32)), False
        from shopsearch.service.interleaving import open_challenger

        challenger = open_challenger(pipeline, settings, store, pz)
    except BaseException:
        pipeline.close()
        if owns and store is not None:
            store.close()
        raise
    loaded = Loaded(pipeline, settings, generation, store, pz, owns)
    loaded.interleave = challenger
    return loaded


class Runtime:
    """The current :class:`Loaded` of a process: its loading, reloads and recovery."""

    def __init__(self, settings: ServiceSettings, factory: PipelineFactory | None = None) -> None:
        self.settings = settings
        self.factory = factory or open_pipeline
        self.current: Loaded | None = None
        #: why the last load failed (one line, for the log and the keyed /readyz); None if not
        self.error: str | None = None
        self._reload_lock = threading.Lock()
        self._generation = 0
        self._announced = 0
        self._followed_at = 0.0
        self._finished = threading.Event()  # the first load is over (loaded or failed)
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def state(self) -> str:
        """``ready``, ``loading`` (the first load) or ``failed`` (being retried)."""
        if self.current is not None:
            return "ready"
        return "failed" if self._finished.is_set() and self.error else "loading"

    # -- loading -------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Opens the first generation, in a thread or now (the app's start-up; an app started
        again in the same process after :meth:`close` loads again)."""
        self._stopped.clear()
        if self.current is None:
            self._finished.clear()
        if background:
            self.load_in_background()
        else:
            self.load()

    def load(self) -> bool:
        """Opens the first generation; a failure is logged, kept for ``/readyz`` and retried
        in the background (see :meth:`_recover`). True when loaded."""
        try:
            return self._load_once()
        finally:
            self._finished.set()
            if self.current is None and not self._stopped.is_set():
                self._watch()

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="shopsearch-load", daemon=True)
        thread.start()
        return thread

    def _load_once(self) -> bool:
        try:
            with self._reload_lock:
                if self.current is not None:
                    return True
                # a worker (re)started after a reload comes up with the reloaded models
                self._announced, changes = self._read_announcement()
                if changes:
                    self.settings = self.settings.model_copy(update=changes)
                loaded = build(self.settings, self.factory, self._generation + 1)
                if self._stopped.is_set():  # shut down while loading
                    loaded.close()
                    return False
                self._generation = loaded.generation
                self.current = loaded
                recovered, self.error = self.error is not None, None
            event = "recovered" if recovered else "loaded"
            log.info(
                json.dumps(
                    {"event": event, "generation": loaded.generation, "models": loaded.models}
                )
            )
            return True
        except Exception as exc:  # kept for /readyz: a bad folder must not kill the process
            message = first_line(exc, MESSAGE_CHARS)
            if message != self.error:
                log.error(json.dumps({"event": "load_failed", "error": message}))
            self.error = message
            return False

    def _watch(self) -> None:
        with self._reload_lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(
                target=self._recover, name="shopsearch-recover", daemon=True
            )
            self._watcher.start()

    def _recover(self) -> None:
        """Tries the load again once what it reads changed and settled (the index promoted, a
        model folder written), and every RECOVER_EVERY_S in any case, until it loads."""
        tried = time.monotonic()
        tried_on = seen = self._inputs()
        while not self._stopped.wait(RECOVER_CHECK_S):
            if self.current is not None:
                return
            now = self._inputs()
            settled = now == seen  # the same for a whole check: not in the middle of a copy
            seen = now
            if not (settled and now != tried_on) and time.monotonic() - tried < RECOVER_EVERY_S:
                continue
            tried, tried_on = time.monotonic(), now
            if self._load_once():
                return

    def _inputs(self) -> tuple[Any, ...]:
        """What a load reads, cheaply: the folders' entries (names, sizes, times)."""
        s = self.settings
        state = tuple(_folder_state(p) for p in (s.index, s.reranker, s.ranker, s.personal) if p)
        if s.qdrant_url is not None:  # a server may come up at any time: try every few seconds
            state += (int(time.monotonic() // RECOVER_SERVER_S),)
        return state

    # -- requests ------------------------------------------------------------------------

    @contextlib.contextmanager
    def pin(self) -> Iterator[Loaded]:
        """The current generation, held until the request is done (a reload meanwhile closes
        it only after). A request that arrives during the first load waits for it (up to
        ``settings.load_wait_s``), so that a worker that started late does not fail it.

        Raises:
            NotReady: Nothing is loaded (still loading, or failed and being retried).
        """
        self.follow()
        while True:
            loaded = self.current
            if loaded is None and self._finished.wait(self.settings.load_wait_s):
                loaded = self.current
            if loaded is None:
                raise NotReady(self.error or "the index and models are still loading")
            if loaded.acquire():
                break
            # retired between the read and the pin: the next one is already current
        try:
            yield loaded
        finally:
            loaded.release()

    use = pin

    # -- reloading -----------------------------------------------------------------------

    def reload(self, reranker: str | None = None, personal: str | None = None) -> Loaded:
        """Builds a pipeline with these model folders and swaps it in.

        The current pipeline answers until the new one is ready; a folder that does not load
        leaves it in place. With a ``state_dir``, the other workers are told to follow.

        Raises:
            ShopsearchError: A folder is not a model, or personalization without profiles.
        """
        changes = {
            k: v for k, v in (("reranker", reranker), ("personal", personal)) if v is not None
        }
        with self._reload_lock:
            loaded = self._swap(changes)
            self._announced = self._announce(changes)
        return loaded

    def follow(self) -> None:
        """Starts a background reload when another worker announced one (checked at most once
        a second)."""
        if self.settings.state_dir is None or self.current is None:
            return
        now = time.monotonic()
        if now - self._followed_at < FOLLOW_EVERY_S:
            return
        self._followed_at = now
        number, changes = self._read_announcement()
        if number > self._announced:
            self._announced = number
            threading.Thread(
                target=self._follow, args=(changes,), name="shopsearch-reload", daemon=True
            ).start()

    def _follow(self, changes: dict[str, str]) -> None:
        try:
            with self._reload_lock:
                self._swap(changes)
        except Exception as exc:
            log.error(
                json.dumps({"event": "reload_failed", "error": first_line(exc, MESSAGE_CHARS)})
            )

    def _swap(self, changes: dict[str, str]) -> Loaded:
        settings = self.settings.model_copy(update=changes)
        if settings.personal is not None and settings.profiles is None:
            raise ShopsearchError(
                "this service has no profile directory (--profiles): it cannot personalize"
            )
        new = build(settings, self.factory, self._generation + 1)
        old, self.current = self.current, new
        self.settings, self._generation, self.error = settings, new.generation, None
        log.info(
            json.dumps({"event": "reloaded", "generation": new.generation, "models": new.models})
        )
        if old is not None:
            old.retire()  # closes when the requests that pinned it are done
        return new

    def _announcement_path(self) -> Path | None:
        return Path(self.settings.state_dir) / RELOAD_FILE if self.settings.state_dir else None

    def _read_announcement(self) -> tuple[int, dict[str, str]]:
        path = self._announcement_path()
        if path is None:
            return 0, {}
        try:
            data = json.loads(path.read_text())
            return int(data["number"]), dict(data["changes"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, {}

    def _announce(self, changes: dict[str, str]) -> int:
        path = self._announcement_path()
        if path is None:
            return 0
        number = self._read_announcement()[0] + 1
        # the same changes for all: the settings they merge into are the same in every worker
        atomic_write(
            path, json.dumps({"number": number, "changes": {**self._all_changes(), **changes}})
        )
        return number

    def _all_changes(self) -> dict[str, str]:
        return {
            k: getattr(self.settings, k)
            for k in ("reranker", "personal")
            if getattr(self.settings, k)
        }

    def close(self) -> None:
        """Shutdown: stops the recovery and closes the current generation once it is idle."""
        self._stopped.set()
        with self._reload_lock:
            if self.current is not None:
                self.current.retire()
                self.current = None


def _folder_state(path: str) -> Any:
    """A cheap fingerprint of a folder two levels deep: None when it is missing."""
    root = Path(path)
    try:
        if not root.is_dir():
            return None
        out = []
        for entry in sorted(os.scandir(root), key=lambda e: e.name)[:_WATCH_ENTRIES]:
            st = entry.stat(follow_symlinks=True)
            out.append((entry.name, st.st_size, st.st_mtime_ns))
            if entry.is_dir():
                with os.scandir(entry.path) as inner:
                    for sub in sorted(inner, key=lambda e: e.name)[:_WATCH_ENTRIES]:
                        s = sub.stat(follow_symlinks=True)
                        out.append((f"{entry.name}/{sub.name}", s.st_size, s.st_mtime_ns))
        return tuple(out)
    except OSError as exc:
        return repr(exc)

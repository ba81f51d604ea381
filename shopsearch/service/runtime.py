"""The pipeline a service process searches with, and how it is swapped for a new one.

A :class:`Loaded` bundle is one generation: the pipeline, the profile store and the
pseudonymizer. Searches hold its lock (one search at a time per process: the index handle and
``stage_ms`` are not shared between threads; run several workers for parallel searches).
:meth:`Runtime.reload` builds the next bundle while the current one keeps answering, swaps the
reference, then closes the old one once the search in flight on it is done: a request that
picked up the old bundle and finds it closed takes the new one, so none fails in between.

With several workers, a reload is announced in ``state_dir/reload.json``; every worker looks
at it at most once a second and reloads itself in the background.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError
from personalization.privacy import Pseudonymizer
from shopsearch.service.settings import ServiceSettings

if TYPE_CHECKING:
    from personalization.profiles import ProfileStore
    from rerank.pipeline import SearchPipeline

log = logging.getLogger("shopsearch.service")

#: Builds a pipeline from settings (tests pass one that shares a loaded encoder).
PipelineFactory = Callable[[ServiceSettings], "SearchPipeline"]
RELOAD_FILE = "reload.json"
FOLLOW_EVERY_S = 1.0


class NotReady(Exception):
    """The pipeline is not loaded (yet, or it failed to load)."""


def open_pipeline(settings: ServiceSettings) -> SearchPipeline:
    """The default factory: every stage from its folder, as ``SearchPipeline.open`` does."""
    from rerank.pipeline import SearchPipeline

    return SearchPipeline.open(
        settings.index,
        reranker=settings.reranker,
        personal=settings.personal,
        profiles=settings.profiles if settings.personal is not None else None,
        device=settings.device,
        backend=settings.backend,
        quantize=settings.quantize,
        qdrant_url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
        collection=settings.collection,
    )


@dataclasses.dataclass
class Loaded:
    """One generation of what a process searches with."""

    pipeline: SearchPipeline
    settings: ServiceSettings
    generation: int
    store: ProfileStore | None
    pseudonymizer: Pseudonymizer
    owns_store: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    closed: bool = False

    @property
    def models(self) -> dict[str, str | None]:
        manifest = self.pipeline.retriever.manifest
        return {
            "retriever": str(manifest.get("model", {}).get("name")),
            "reranker": self.settings.reranker,
            "personal": self.settings.personal,
        }

    def index_info(self) -> dict[str, Any]:
        manifest = self.pipeline.retriever.manifest
        return {
            "build_id": manifest.get("build_id"),
            "created": manifest.get("created"),
        }

    def close(self) -> None:
        """Closes it after the search in flight (if any) is done."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.pipeline.close()
            if self.owns_store and self.store is not None:
                self.store.close()


def build(settings: ServiceSettings, factory: PipelineFactory, generation: int) -> Loaded:
    """Opens a pipeline and the profile store it ingests into."""
    pipeline = factory(settings)
    try:
        if pipeline.personal is not None:
            store, pz, owns = pipeline.personal.profiles, pipeline.personal.pseudonymizer, False
        elif settings.profiles is not None:
            from personalization.personalizer import open_profiles

            store, pz = open_profiles(settings.profiles)
            owns = True
        else:
            # no profiles: a throw-away key, so that logs still show an unlinkable pseudonym
            store, pz, owns = None, Pseudonymizer(secrets.token_bytes(32)), False
    except BaseException:
        pipeline.close()
        raise
    return Loaded(pipeline, settings, generation, store, pz, owns)


class Runtime:
    """The current :class:`Loaded` of a process, its loading and its reloads."""

    def __init__(self, settings: ServiceSettings, factory: PipelineFactory | None = None) -> None:
        self.settings = settings
        self.factory = factory or open_pipeline
        self.current: Loaded | None = None
        self.error: str | None = None
        self._reload_lock = threading.Lock()
        self._generation = 0
        self._announced = 0
        self._followed_at = 0.0
        self._finished = threading.Event()  # the first load is over (loaded or failed)

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Opens the first generation (errors are kept for ``/readyz`` and logged)."""
        try:
            with self._reload_lock:
                # a worker (re)started after a reload comes up with the reloaded models
                self._announced, changes = self._read_announcement()
                if changes:
                    self.settings = dataclasses.replace(self.settings, **changes)
                loaded = build(self.settings, self.factory, 1)
                self._generation = 1
                self.current = loaded
                self.error = None
            log.info(json.dumps({"event": "loaded", "generation": 1, "models": loaded.models}))
        except Exception as exc:  # kept for /readyz: a bad folder must not kill the process
            self.error = _one_line(exc)
            log.error(json.dumps({"event": "load_failed", "error": self.error}))
        finally:
            self._finished.set()

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="shopsearch-load", daemon=True)
        thread.start()
        return thread

    @contextlib.contextmanager
    def use(self) -> Iterator[Loaded]:
        """The current generation, locked for one search; waits for the one in flight.

        A request that arrives while the process is still loading waits for it (up to
        ``settings.load_wait_s``), so that a worker that started late does not fail it.
        """
        self.follow()
        while True:
            loaded = self.current
            if loaded is None and self._finished.wait(self.settings.load_wait_s):
                loaded = self.current
            if loaded is None:
                raise NotReady(self.error or "the index and models are still loading")
            with loaded.lock:
                if loaded.closed:  # swapped out while we waited: take the new one
                    continue
                yield loaded
                return

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
            log.error(json.dumps({"event": "reload_failed", "error": _one_line(exc)}))

    def _swap(self, changes: dict[str, str]) -> Loaded:
        settings = dataclasses.replace(self.settings, **changes)
        if settings.personal is not None and settings.profiles is None:
            raise ShopsearchError(
                "this service has no profile directory (--profiles): it cannot personalize"
            )
        new = build(settings, self.factory, self._generation + 1)
        old, self.current = self.current, new
        self.settings, self._generation = settings, new.generation
        log.info(
            json.dumps({"event": "reloaded", "generation": new.generation, "models": new.models})
        )
        if old is not None:
            old.close()
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
        fd, tmp = tempfile.mkstemp(prefix=".reload.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump({"number": number, "changes": {**self._all_changes(), **changes}}, fh)
        os.replace(tmp, path)
        return number

    def _all_changes(self) -> dict[str, str]:
        return {
            k: getattr(self.settings, k)
            for k in ("reranker", "personal")
            if getattr(self.settings, k)
        }

    def close(self) -> None:
        with self._reload_lock:
            if self.current is not None:
                self.current.close()
                self.current = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]

"""Fixtures of the service tests: a tiny index, a personal model, and started test clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from indexer.build import index_catalog
from personalization.features import FEATURE_NAMES
from personalization.personalizer import Personalizer
from personalization.ranker import PersonalFusion, PersonalRanker
from rerank.pipeline import SearchPipeline
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from shopsearch.service import ServiceSettings, create_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_service_settings_in_env(monkeypatch):
    """The service reads SHOPSEARCH_* settings from the environment: none leaks into a test."""
    for var in ServiceSettings.variables():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, sample_catalog, tiny_encoder) -> Path:
    path = tmp_path_factory.mktemp("service") / "index"
    index_catalog(sample_catalog, IndexLocation(path=path), encoder=tiny_encoder, progress=False)
    return path


@pytest.fixture(scope="session")
def personal_model(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    ranker = PersonalRanker(PersonalFusion(len(FEATURE_NAMES), hidden=8, dropout=0.0))
    return ranker.save(tmp_path_factory.mktemp("personal") / "model")


@pytest.fixture(scope="session")
def drills(sample_products) -> list[str]:
    return [p.product_id for p in sample_products if p.category and "Drills" in p.category][:3]


@pytest.fixture(scope="session")
def tiny_factory(tiny_encoder):
    """A pipeline factory that shares the tiny encoder (no model load per generation)."""

    def factory(settings: ServiceSettings) -> SearchPipeline:
        retriever = Retriever.open(settings.index, encoder=tiny_encoder)
        personal = (
            Personalizer.open(
                settings.personal, settings.profiles, key=settings.secret("pseudonym_key")
            )
            if settings.personal
            else None
        )
        return SearchPipeline(retriever, None, personal)

    return factory


@pytest.fixture()
def make_client(tmp_path, index_dir, personal_model, tiny_factory):
    """``make_client(**settings)``: a started TestClient on the tiny index (shared encoder)."""
    clients = []

    def make(**overrides) -> TestClient:
        options = {
            "index": str(index_dir),
            "profiles": str(tmp_path / "profiles"),
            "personal": str(personal_model),
            "background_load": False,
            **overrides,
        }
        raise_errors = options.pop("raise_server_exceptions", True)
        client = TestClient(
            create_app(ServiceSettings(**options), pipeline_factory=tiny_factory),
            raise_server_exceptions=raise_errors,
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# -- a real server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(index_dir, personal_model, tmp_path_factory):
    """``shopsearch serve`` with two workers on a free loopback port, personalized."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("server")
    log = folder / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "SHOPSEARCH_API_KEY", "SHOPSEARCH_ADMIN_KEY"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "shopsearch.cli", "serve", "--index", str(index_dir)]
    cmd += ["--port", str(port), "--workers", "2"]
    cmd += ["--personal", str(personal_model), "--profiles", str(folder / "profiles")]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"serve not ready in 120 s:\n{log.read_text()[-3000:]}")
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""The service's threads and pseudonym key (issue 22): read once, by the settings, from
``SHOPSEARCH_THREADS`` and ``SHOPSEARCH_PSEUDONYM_KEY``, and passed to the library.

A deployment that keeps its pseudonym key in the environment must find the same shoppers in
the service as on the command line (an erasure through either must hit the rows the other
stored), and a profile directory with a key file keeps working without the variable.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from core.errors import ShopsearchError
from personalization.events import Event
from personalization.ingest import open_profiles
from personalization.privacy import KEY_FILE, Pseudonymizer
from shopsearch.service import ServiceSettings
from shopsearch.service.runtime import build, open_pipeline

KEY = "5e" * 32
ADMIN_KEY = "test-admin-key"
ALICE = "alice@example.com"


def _keyed(user: str, key: str = KEY) -> str:
    return Pseudonymizer(bytes.fromhex(key)).pseudonym(user)


def test_settings_read_threads_and_the_key_from_their_variables(monkeypatch):
    env = {"SHOPSEARCH_INDEX": "x", "SHOPSEARCH_THREADS": "3", "SHOPSEARCH_PSEUDONYM_KEY": KEY}
    settings = ServiceSettings.from_env(env)
    assert settings.threads == 3 and settings.secret("pseudonym_key") == KEY
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert ServiceSettings.from_env(settings.to_env()) == settings  # what serve hands on
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert ServiceSettings.from_env() == settings  # a worker started by uvicorn directly
    # unset or blank: the physical cores and the profile directory's key file
    blank = ServiceSettings.from_env(
        {"SHOPSEARCH_INDEX": "x", "SHOPSEARCH_THREADS": " ", "SHOPSEARCH_PSEUDONYM_KEY": ""}
    )
    assert blank.threads is None and blank.pseudonym_key is None
    assert "SHOPSEARCH_THREADS" not in blank.to_env()
    assert "SHOPSEARCH_PSEUDONYM_KEY" not in blank.to_env()
    for bad in ("0", "lots"):
        with pytest.raises(ShopsearchError, match="SHOPSEARCH_THREADS"):
            ServiceSettings.from_env({"SHOPSEARCH_INDEX": "x", "SHOPSEARCH_THREADS": bad})


def test_the_service_passes_threads_and_the_key_to_the_pipeline(monkeypatch, tmp_path):
    from rerank.pipeline import SearchPipeline

    seen: list[dict] = []

    def record(cls, index=None, **kwargs):
        seen.append(kwargs)
        return "pipeline"

    monkeypatch.setattr(SearchPipeline, "open", classmethod(record))
    settings = ServiceSettings(
        index="x", personal="m", profiles=str(tmp_path), threads=2, pseudonym_key=KEY
    )
    assert open_pipeline(settings) == "pipeline"
    assert seen[-1]["threads"] == 2 and seen[-1]["pseudonym_key"] == KEY
    open_pipeline(ServiceSettings(index="x"))
    assert seen[-1]["threads"] is None and seen[-1]["pseudonym_key"] is None


class _Pipeline:
    """What ``build`` needs of a pipeline without personalization."""

    personal = None

    def close(self) -> None:
        pass


@pytest.mark.parametrize("keyed", [True, False])
def test_the_profile_store_of_a_service_without_a_personal_model_gets_the_key(tmp_path, keyed):
    profiles = tmp_path / "profiles"
    settings = ServiceSettings(
        index="x", profiles=str(profiles), pseudonym_key=KEY if keyed else None
    )
    loaded = build(settings, lambda s: _Pipeline(), 1)
    try:
        if keyed:  # the key given: no key file (a new key would unlink every shopper)
            assert loaded.pseudonymizer.pseudonym(ALICE) == _keyed(ALICE)
            assert not (profiles / KEY_FILE).exists()
        else:  # the key file, as the command line without the variable
            store, pz = open_profiles(profiles)
            store.close()
            assert (profiles / KEY_FILE).exists()
            assert loaded.pseudonymizer.pseudonym(ALICE) == pz.pseudonym(ALICE)
    finally:
        loaded.close()


@pytest.mark.parametrize("personal", [True, False])
def test_shoppers_stored_with_the_key_are_found_and_erased_by_the_service(
    make_client, drills, personal
):
    """Events ingested with the key (as ``events ingest`` does with the variable set) are the
    service's shoppers: it personalizes them and ``DELETE /users`` removes their rows."""
    options = {} if personal else {"personal": None}
    client = make_client(pseudonym_key=KEY, admin_key=ADMIN_KEY, **options)
    profiles = client.app.state.runtime.settings.profiles
    store, pz = open_profiles(profiles, key=KEY)
    try:
        store.ingest(
            [
                Event(ALICE, 1_767_268_800.0 + i, "s1", "purchase", product_id=p)
                for i, p in enumerate(drills)
            ],
            pz,
        )
    finally:
        store.close()
    assert not os.path.exists(os.path.join(profiles, KEY_FILE))
    query = {"q": "cordless drill", "k": 10, "user_id": ALICE}
    assert client.post("/search", json=query).json()["personalized"] is personal
    forgot = client.delete(f"/users/{ALICE}", headers={"X-Admin-Key": ADMIN_KEY})
    assert forgot.status_code == 200 and forgot.json() == {"removed": len(drills)}
    store, pz = open_profiles(profiles, key=KEY)
    try:
        assert store.is_forgotten(ALICE, pz)
    finally:
        store.close()


@pytest.fixture()
def no_uvicorn(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(dict(os.environ)))
    saved = dict(os.environ)
    yield calls
    os.environ.clear()
    os.environ.update(saved)


def test_serve_hands_the_workers_their_threads_and_the_key(index_dir, no_uvicorn):
    from inference.backend import worker_threads
    from shopsearch.cli.serve import serve

    runner = CliRunner()
    index = ["--index", str(index_dir)]

    def workers_settings(args, env=None) -> ServiceSettings:
        result = runner.invoke(serve, [*index, *args], env=env)
        assert result.exit_code == 0, result.output
        return ServiceSettings.from_env(no_uvicorn[-1])

    one = workers_settings([])
    assert one.threads is None and one.pseudonym_key is None  # the physical cores, the key file
    assert "SHOPSEARCH_THREADS" not in no_uvicorn[-1]
    assert workers_settings(["--workers", "3"]).threads == worker_threads(3)
    assert workers_settings(["--workers", "2", "--threads", "5"]).threads == 5
    assert workers_settings(["--workers", "2"], env={"SHOPSEARCH_THREADS": "4"}).threads == 4
    assert workers_settings(["--threads", "1"]).threads == 1
    keyed = workers_settings(["--workers", "2"], env={"SHOPSEARCH_PSEUDONYM_KEY": KEY})
    assert keyed.secret("pseudonym_key") == KEY
    assert no_uvicorn[-1]["SHOPSEARCH_PSEUDONYM_KEY"] == KEY
    blank = workers_settings([], env={"SHOPSEARCH_PSEUDONYM_KEY": "  "})
    assert blank.pseudonym_key is None and "SHOPSEARCH_PSEUDONYM_KEY" not in no_uvicorn[-1]

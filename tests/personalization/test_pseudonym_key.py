"""The pseudonym key given as a parameter (issue 22): the command line reads
``SHOPSEARCH_PSEUDONYM_KEY`` and passes ``key=``; the library opens the same store with it.

A deployment that keeps its key in the variable must keep finding the same shoppers (an
erasure that finds nobody is a broken promise), and a profile directory with its key file keeps
working without the variable.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from click.testing import CliRunner

from core.errors import ShopsearchError
from personalization.events import Event
from personalization.features import FEATURE_NAMES
from personalization.ingest import (
    PROFILES_FILE,
    check_profiles,
    forget_user,
    open_profiles,
    without_forgotten,
)
from personalization.personalizer import Personalizer
from personalization.privacy import KEY_ENV, KEY_FILE, Pseudonymizer
from personalization.ranker import PersonalFusion, PersonalRanker

KEY = "c3" * 32
ALICE = "Alice@Example.com"
NOW = time.time()


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def _keyed(user: str) -> str:
    return Pseudonymizer(bytes.fromhex(KEY)).pseudonym(user)


def test_open_profiles_with_a_key_writes_no_key_file(tmp_path):
    store, pz = open_profiles(tmp_path / "p", key=KEY)
    store.close()
    assert pz.pseudonym(ALICE) == _keyed(ALICE)
    assert not (tmp_path / "p" / KEY_FILE).exists()
    # without one: the key file, the same one every time
    store, first = open_profiles(tmp_path / "q")
    store.close()
    store, again = open_profiles(tmp_path / "q", key="  ")  # blank: the key file
    store.close()
    assert first.pseudonym(ALICE) == again.pseudonym(ALICE) != _keyed(ALICE)
    # a bad key is refused before anything is created
    with pytest.raises(ShopsearchError, match="not hexadecimal"):
        open_profiles(tmp_path / "r", key="not-hex")
    assert not (tmp_path / "r" / PROFILES_FILE).exists()


def test_check_profiles_and_without_forgotten_take_the_key(tmp_path):
    folder = tmp_path / "profiles"
    store, pz = open_profiles(folder, key=KEY)
    store.ingest([Event(ALICE, NOW - 60, "s", "view", product_id="drill")], pz)
    store.forget(ALICE, pz)
    store.close()
    with pytest.raises(ShopsearchError, match=f"no {KEY_FILE} there"):
        check_profiles(folder)  # no key: a new one would find no erased shopper
    check_profiles(folder, key=KEY)
    events = [
        Event(ALICE, NOW - 30, "s", "click", product_id="drill"),
        Event("bob", NOW - 30, "t", "click", product_id="drill"),
    ]
    kept, gone = without_forgotten(events, folder, key=KEY)
    assert [e.user_id for e in kept] == ["bob"] and gone == 1
    assert not (folder / KEY_FILE).exists()
    assert forget_user(folder, ALICE, key=KEY).already_forgotten


def test_personalizer_open_uses_the_key(tmp_path):
    torch.manual_seed(0)
    ranker = PersonalRanker(PersonalFusion(len(FEATURE_NAMES), hidden=4, dropout=0.0))
    model = ranker.save(tmp_path / "model")
    personal = Personalizer.open(model, tmp_path / "profiles", key=KEY)
    try:
        assert personal.pseudonymizer.pseudonym(ALICE) == _keyed(ALICE)
    finally:
        personal.profiles.close()
    assert not (tmp_path / "profiles" / KEY_FILE).exists()
    with pytest.raises(ShopsearchError):  # no model: no store left open, none created
        Personalizer.open(tmp_path / "nothing", tmp_path / "other", key=KEY)
    assert not (tmp_path / "other").exists()


def test_the_commands_pass_the_key_from_the_environment(tmp_path, monkeypatch):
    """``events ingest`` and ``forget-user`` hand the variable's key to the library as key=
    (None without it: the key file), rather than leaving the library to read it."""
    import personalization.ingest as ingest
    from personalization.ingest import EventIngestSummary, ForgetSummary
    from shopsearch.cli import main

    seen: list[object] = []

    def fake_ingest(log_path, profiles, location, rejects_path=None, key=None):
        seen.append(key)
        return EventIngestSummary(0, 0, 0, None)

    def fake_forget(profiles, user_id, key=None):
        seen.append(key)
        return ForgetSummary(0, False)

    monkeypatch.setattr(ingest, "ingest_event_log", fake_ingest)
    monkeypatch.setattr(ingest, "forget_user", fake_forget)
    runner = CliRunner()
    folder = str(tmp_path / "profiles")
    commands = [
        ["events", "ingest", "log.jsonl", "--profiles", folder, "--index", str(tmp_path)],
        ["forget-user", ALICE, "--profiles", folder],
    ]
    for args in commands:
        for env, key in (({KEY_ENV: KEY}, KEY), ({KEY_ENV: f" {KEY}\n"}, KEY), ({}, None)):
            result = runner.invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
            assert seen[-1] == key
        assert runner.invoke(main, args, env={KEY_ENV: ""}).exit_code == 0
        assert seen[-1] is None  # blank: the key file


@pytest.mark.parametrize("in_env", [True, False])
def test_cli_with_the_key_in_the_environment_opens_the_library_s_store(
    tmp_path, tiny_encoder, in_env
):
    """``events ingest`` / ``forget-user`` with ``SHOPSEARCH_PSEUDONYM_KEY`` set store and erase
    the shoppers ``open_profiles(dir, key=)`` finds; without it, those of the key file."""
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation
    from shopsearch.cli import main

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,title\nP1,Cordless drill\nP2,Kitchen faucet\n")
    index = IndexLocation(path=tmp_path / "idx")
    index_catalog(catalog, index, encoder=tiny_encoder, progress=False)
    log = tmp_path / "events.jsonl"
    rows = [
        {"user_id": ALICE, "timestamp": NOW - 7200, "event": "click", "product_id": "P1"},
        {"user_id": "bob", "timestamp": NOW - 3600, "event": "view", "product_id": "P2"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    profiles = tmp_path / "profiles"
    env = {KEY_ENV: KEY} if in_env else {}
    runner = CliRunner()
    ingest = ["events", "ingest", str(log), "--profiles", str(profiles), "--index", str(index.path)]
    result = runner.invoke(main, ingest, env=env)
    assert result.exit_code == 0, result.output
    assert (profiles / KEY_FILE).exists() is not in_env
    key = KEY if in_env else None
    store, pz = open_profiles(profiles, key=key)
    try:
        assert store.profile(pz.pseudonym("alice@example.com")).n_events == 1
        if in_env:
            assert pz.pseudonym(ALICE) == _keyed(ALICE)
    finally:
        store.close()
    forget = runner.invoke(
        main, ["forget-user", "alice@example.com", "--profiles", str(profiles)], env=env
    )
    assert forget.exit_code == 0 and "1 stored rows removed" in forget.output
    assert forget_user(profiles, ALICE, key=key).already_forgotten
    again = runner.invoke(main, ingest, env=env)
    assert again.exit_code == 0 and "skipped 1 events of forgotten users" in again.output
    assert (profiles / KEY_FILE).exists() is not in_env

"""Two service processes on one shared PostgreSQL profile store (issue 24, several replicas):
an event posted to one changes the next search on the other, and an erasure through one holds
for both (and against a re-posted event).

Each replica is a real ``shopsearch serve`` process (``--profiles postgresql://...``, the
pseudonym key from ``SHOPSEARCH_PSEUDONYM_KEY``), as a load balancer would see them. The
server is a throw-away one (tests/pg_server.py); without PostgreSQL installed the test says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "7a" * 32
ADMIN_KEY = "replica-admin-key"
ALICE = "alice@example.com"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(stack: ExitStack, folder: Path, name: str, args: list[str]) -> str:
    """Start ``shopsearch serve`` (stopped when ``stack`` closes); its URL once ready."""
    port = _free_port()
    log = folder / f"{name}.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "SHOPSEARCH_PSEUDONYM_KEY": KEY,
        "SHOPSEARCH_ADMIN_KEY": ADMIN_KEY,
    }
    for var in ("PROMETHEUS_MULTIPROC_DIR", "SHOPSEARCH_API_KEY"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "shopsearch.cli", "serve", "--port", str(port), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{name} not ready in 120 s:\n{log.read_text()[-3000:]}")


@pytest.mark.integration
def test_two_replicas_share_shoppers_and_erasures(
    postgres_url, index_dir, personal_model, drills, tmp_path
) -> None:
    args = ["--index", str(index_dir), "--personal", str(personal_model)]
    args += ["--profiles", postgres_url]
    events = [
        {
            "user_id": ALICE,
            "timestamp": 1_767_268_800 + i,
            "session_id": "s1",
            "event": "purchase",
            "product_id": pid,
        }
        for i, pid in enumerate(drills)
    ]
    search = {"q": "cordless drill", "k": 10, "user_id": ALICE}
    admin = {"X-Admin-Key": ADMIN_KEY}
    with ExitStack() as stack:
        one = _serve(stack, tmp_path, "replica-1", args)
        two = _serve(stack, tmp_path, "replica-2", args)
        with httpx.Client(timeout=30) as http:
            assert http.post(f"{two}/search", json=search).json()["personalized"] is False
            posted = http.post(f"{one}/events", json={"events": events}).json()
            assert posted["added"] == len(drills), posted
            # the next search on the OTHER replica knows her
            assert http.post(f"{two}/search", json=search).json()["personalized"] is True
            assert http.post(f"{one}/search", json=search).json()["personalized"] is True

            # erased through replica 2: gone for replica 1 too, and durable
            forgot = http.delete(f"{two}/users/{ALICE}", headers=admin)
            assert forgot.status_code == 200 and forgot.json()["removed"] == len(drills)
            assert http.post(f"{one}/search", json=search).json()["personalized"] is False
            again = http.post(f"{one}/events", json={"events": events}).json()
            assert again["added"] == 0 and again["forgotten"] == len(drills), again
            assert http.post(f"{two}/search", json=search).json()["personalized"] is False
    for name in ("replica-1", "replica-2"):  # the raw id is in no log line
        assert ALICE not in (tmp_path / f"{name}.log").read_text()


@pytest.mark.parametrize("key", ["", "abc", "not hex at all"])
def test_serve_refuses_a_store_url_without_a_usable_key(postgres_url, index_dir, key) -> None:
    """No key, or one that is not hex: refused before serving (not a service answering 503
    forever)."""
    from click.testing import CliRunner

    from shopsearch.cli import main

    result = CliRunner().invoke(
        main,
        ["serve", "--index", str(index_dir), "--profiles", postgres_url],
        env={"SHOPSEARCH_PSEUDONYM_KEY": key},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "SHOPSEARCH_PSEUDONYM_KEY" in lines[0]


def test_the_commands_take_the_store_url(postgres_url, index_dir, drills, tmp_path) -> None:
    """events ingest and forget-user on the shared store, the key from the environment."""
    import json

    from click.testing import CliRunner

    from personalization.ingest import open_profiles
    from shopsearch.cli import main

    log = tmp_path / "events.jsonl"
    rows = [
        {"user_id": ALICE, "timestamp": 1_767_268_800 + i, "session_id": "s", "event": "click"}
        | {"product_id": pid}
        for i, pid in enumerate(drills)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"SHOPSEARCH_PSEUDONYM_KEY": KEY}
    runner = CliRunner()
    where = ["--profiles", postgres_url]
    ingest = runner.invoke(
        main, ["events", "ingest", str(log), "--index", str(index_dir), *where], env=env
    )
    assert ingest.exit_code == 0, ingest.output
    assert f"ingested {len(drills)} events" in ingest.output
    store, pz = open_profiles(postgres_url, key=KEY)
    try:
        assert store.count_events(pz.pseudonym(ALICE)) == len(drills)
    finally:
        store.close()
    forgot = runner.invoke(main, ["forget-user", ALICE, *where], env=env)
    assert forgot.exit_code == 0, forgot.output
    assert f"{len(drills)} stored rows removed" in forgot.output
    keyless = runner.invoke(
        main, ["forget-user", ALICE, *where], env={"SHOPSEARCH_PSEUDONYM_KEY": ""}
    )
    assert keyless.exit_code == 2 and "SHOPSEARCH_PSEUDONYM_KEY" in keyless.output

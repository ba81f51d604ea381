"""bench-profiles on a tiny workload: every phase is timed while the writer process really
writes, the Redis prototype keeps the store's meaning where it is measured (idempotent ingest,
the same profile), and the report goes into a docs page between its markers."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from personalization.events import Event
from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore
from research.bench_profiles import (
    PHASES,
    REPORT_KEY,
    RedisPrototype,
    StoreLatency,
    Workload,
    markdown,
    run,
)

TINY = Workload(
    users=30, events_per_user=5, items=200, candidates=10, reads=20, write_rate=500, seconds=0.5
)


def _check(result: StoreLatency) -> None:
    assert result.skipped is None, result.skipped
    assert [p.phase for p in result.phases] == list(PHASES)
    for phase in result.phases:
        assert phase.reads >= TINY.reads
        assert 0 < phase.p50_ms <= phase.p99_ms <= phase.max_ms
    idle, paced, flat = result.phases
    assert idle.writes_per_s == 0 and paced.writes_per_s > 0 and flat.writes_per_s > 0


def test_sqlite_is_timed_in_every_phase_with_a_writer_process() -> None:
    (result,) = run(["sqlite"], TINY)
    _check(result)
    report = markdown([result, StoreLatency("redis", skipped="Redis is not installed")], TINY)
    assert (
        "| sqlite | flat-out |" in report and "| redis | skipped: Redis is not installed" in report
    )


def test_postgresql_is_timed_on_a_given_server(postgres_url) -> None:
    (result,) = run(["postgresql"], TINY, postgres=postgres_url)
    _check(result)


@pytest.fixture(scope="module")
def redis_url():
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from research.local_servers import redis

    with redis() as url:
        yield url


def test_the_redis_prototype_keeps_the_stores_meaning(redis_url, tmp_path) -> None:
    pz = Pseudonymizer(bytes(range(32)))
    items = [("a", "Knipex", "Tools > Pliers", 20.0), ("b", "Bosch", "Tools > Drills", 100.0)]
    events = [
        Event("alice", 1_700_000_000.0 + i, "s", kind, None, pid, None)
        for i, (kind, pid) in enumerate([("view", "a"), ("click", "a"), ("purchase", "b")])
    ]
    proto = RedisPrototype(redis_url)
    try:
        proto.client.flushdb()
        proto.upsert_items(items)
        assert proto.ingest(events, pz) == 3
        assert proto.ingest(events, pz) == 0  # re-ingest is a no-op: no count moves
        got = proto.profile(pz.pseudonym("alice"))
        popularity = proto.popularity(["a", "b", "never"])
    finally:
        proto.close()
    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.upsert_items(
            {"product_id": p, "brand": b, "category": c, "price": x} for p, b, c, x in items
        )
        store.ingest(events, pz)
        want = store.profile(pz.pseudonym("alice"))
        assert popularity == pytest.approx(store.popularity(["a", "b", "never"]))
    assert got.recent_items == want.recent_items and got.interactions == want.interactions
    assert got.brand_affinity == pytest.approx(want.brand_affinity)


def test_the_command_writes_its_report_into_the_docs_page(tmp_path) -> None:
    from research.cli import bench_profiles_cmd

    page = tmp_path / "profiles.md"
    page.write_text("# Profile stores\n")
    args = ["--store", "sqlite", "--users", "20", "--events-per-user", "3", "--items", "100"]
    args += ["--candidates", "5", "--reads", "10", "--seconds", "0.2", "--docs", str(page)]
    result = CliRunner().invoke(bench_profiles_cmd, args)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert f"<!-- end written: {REPORT_KEY} -->" in text and "| sqlite | paced |" in text
    assert "--docs" not in text.split("<!-- written by: ")[1].split("-->")[0]

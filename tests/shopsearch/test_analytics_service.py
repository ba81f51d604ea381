"""``GET /admin/analytics`` and the ``/analytics`` page on the tiny service, over the hand-made
log of tests/tiny_search_log.py as the service's ``search_log``."""

from __future__ import annotations

import json

import pytest
from tiny_search_log import write_tiny_log

from analytics.report import analytics_report

ADMIN = {"X-Admin-Key": "admin-secret"}


@pytest.fixture()
def log(tmp_path):
    return write_tiny_log(tmp_path / "search-log")


def test_the_report_is_the_library_s_over_the_service_log(make_client, log):
    client = make_client(admin_key="admin-secret", search_log=str(log))
    got = client.get("/admin/analytics", headers=ADMIN)
    assert got.status_code == 200, got.text
    data = got.json()
    expected = analytics_report(log).to_dict()
    # the service may have rotated or added its own (empty) segment: the figures are the same
    assert data == expected
    assert data["searches"] == 9 and data["min_shoppers"] == 5
    assert data["top_queries"] == [] and data["rare_queries"] == {"queries": 4, "searches": 9}


def test_window_and_top(make_client, log):
    client = make_client(admin_key="admin-secret", search_log=str(log))
    got = client.get("/admin/analytics?since=2026-12-02&until=2026-12-02&top=3", headers=ADMIN)
    assert got.status_code == 200, got.text
    data = got.json()
    assert (data["since"], data["until"], data["searches"]) == ("2026-12-02", "2026-12-02", 5)
    assert [d["day"] for d in data["days"]] == ["2026-12-02"]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("since=2026-12-03&until=2026-12-01", 400, "since 2026-12-03 is after until 2026-12-01"),
        ("since=yesterday", 422, "since"),
        ("top=0", 422, "top"),
    ],
)
def test_bad_parameters(make_client, log, query, status, words):
    client = make_client(admin_key="admin-secret", search_log=str(log))
    got = client.get(f"/admin/analytics?{query}", headers=ADMIN)
    assert got.status_code == status and words in got.text


def test_no_search_log_is_a_409_that_says_how(make_client):
    client = make_client(admin_key="admin-secret")
    got = client.get("/admin/analytics", headers=ADMIN)
    assert got.status_code == 409
    assert "--search-log" in got.json()["detail"]


def test_a_log_folder_not_created_yet_is_an_empty_report(make_client, tmp_path):
    client = make_client(admin_key="admin-secret", search_log=str(tmp_path / "later"))
    got = client.get("/admin/analytics", headers=ADMIN)
    assert got.status_code == 200 and got.json()["searches"] == 0


def test_the_admin_key_is_needed(make_client, log):
    client = make_client(admin_key="admin-secret", search_log=str(log))
    assert client.get("/admin/analytics").status_code == 403
    assert client.get("/admin/analytics", headers={"X-Admin-Key": "wrong"}).status_code == 403
    keyless = make_client(search_log=str(log))
    assert keyless.get("/admin/analytics", headers=ADMIN).status_code == 403


def test_openapi_lists_every_answer(make_client):
    client = make_client(admin_key="admin-secret")
    op = client.get("/openapi.json").json()["paths"]["/admin/analytics"]["get"]
    assert set(op["responses"]) == {"200", "400", "401", "403", "409", "422", "503"}
    assert {p["name"] for p in op["parameters"]} == {"since", "until", "top"}
    assert "5 distinct shoppers" in op["description"]
    assert op["security"] == [{"api_key": [], "admin_key": []}]


def test_the_analytics_page_is_served_and_reads_the_endpoint(make_client):
    client = make_client(api_key="api-secret")
    page = client.get("/analytics")  # static, no data: open without the key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/analytics.js">' in page.text
    assert 'id="admin_key"' in page.text
    script = client.get("/static/analytics.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert '"/admin/analytics"' in script.text and "X-Admin-Key" in script.text
    assert "sessionStorage" in script.text and "innerHTML" not in script.text
    assert "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")  # no CDN


def test_the_report_reads_what_the_service_itself_logged(make_client, tmp_path):
    """Searches served and a click posted with only its search_id (no position): the report,
    read from the service's own live segment, counts them and places the click at the rank
    the service showed it."""
    import time

    client = make_client(admin_key="admin-secret", search_log=str(tmp_path / "own-log"))
    for q in ("drill", "cordless drill", "drill"):
        got = client.get("/search", params={"q": q, "user_id": "alice"})
        assert got.status_code == 200, got.text
    shown = got.json()
    click = {"event": "click", "search_id": shown["search_id"], "user_id": "alice",
             "product_id": shown["results"][1]["product_id"], "timestamp": time.time()}  # fmt: skip
    assert client.post("/events", json={"events": [click]}).json()["logged"] == 1
    deadline = time.monotonic() + 20  # the writer flushes its live segment each second
    while True:
        data = client.get("/admin/analytics", headers=ADMIN).json()
        if data["interactions"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (data["searches"], data["shoppers"], data["interactions"]) == (3, 1, 1)
    assert data["ctr"] == pytest.approx(1 / 3) and data["mean_click_position"] == 2.0
    assert "alice" not in json.dumps(data)


def test_rows_of_an_erased_shopper_not_yet_rewritten_are_left_out(make_client, tmp_path):
    """Another replica's live segment keeps an erased shopper's rows until it rotates; the
    report leaves them out already, by the folder's tombstones and the service's key."""
    from personalization.searchlog import FORGOTTEN_FILE, write_segment

    folder = tmp_path / "shared-log"
    client = make_client(admin_key="admin-secret", search_log=str(folder))
    client.get("/readyz")
    pz = client.app.state.runtime.current.pseudonymizer
    folder.mkdir(exist_ok=True)
    rows = [
        {"event": "search", "timestamp": 1_767_268_800.0 + i, "search_id": f"s{i}",
         "pseudonym": pz.pseudonym(user), "session": "", "query": "drill", "offset": 0,
         "k": 10, "results": ["p1", "p2"]}
        for i, user in enumerate(["alice", "bob", "bob"])
    ]  # fmt: skip
    write_segment(folder / "20260101T000000.000000Z-other-1.parquet", rows)
    before = client.get("/admin/analytics", headers=ADMIN).json()
    assert (before["searches"], before["shoppers"]) == (3, 2)
    (folder / FORGOTTEN_FILE).write_text(pz.tombstone(pz.pseudonym("alice")) + "\n")
    after = client.get("/admin/analytics", headers=ADMIN).json()
    assert (after["searches"], after["shoppers"]) == (2, 1)

"""The service against its own OpenAPI document: every status an endpoint can answer is listed
with its body model, and a bounded schemathesis run (a few hundred generated requests, every
check) finds no answer the document does not describe, no 500, no accepted invalid input and
no endpoint that ignores its key."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from shopsearch.service import ServiceSettings, create_app

API_KEY = "schema-api-key"
ADMIN_KEY = "schema-admin-key"
KEYS = {"X-API-Key": API_KEY, "X-Admin-Key": ADMIN_KEY}
#: Generated requests per operation and mode (8 operations, positive and negative: a few
#: hundred in all).
EXAMPLES = 40


@pytest.fixture(scope="module")
def app(tmp_path_factory, index_dir, personal_model, tiny_factory):
    settings_ = ServiceSettings(
        index=str(index_dir),
        profiles=str(tmp_path_factory.mktemp("schema") / "profiles"),
        personal=str(personal_model),
        api_key=API_KEY,
        admin_key=ADMIN_KEY,
        background_load=False,
        # what generated requests add (synonyms) stays out of the shared index's directory
        rules_dir=str(tmp_path_factory.mktemp("schema-rules")),
    )
    app = create_app(settings_, pipeline_factory=tiny_factory)
    runtime = app.state.runtime
    assert runtime.load(), runtime.error  # schemathesis calls the app without its lifespan
    yield app
    runtime.close()


def test_the_document_lists_every_status_with_its_body_and_the_keys(app):
    doc = app.openapi()
    paths = doc["paths"]
    expect = {
        ("get", "/search"): {"200", "400", "401", "422", "503"},
        ("post", "/search"): {"200", "400", "401", "413", "415", "422", "503"},
        ("post", "/events"): {"200", "401", "409", "413", "415", "422", "503"},
        ("delete", "/users/{user_id}"): {"200", "401", "403", "409", "422", "503"},
        ("post", "/admin/reload"): {"200", "400", "401", "403", "413", "415", "422"},
        ("get", "/readyz"): {"200", "503"},
        ("get", "/suggest"): {"200", "401", "422", "503"},
        ("post", "/suggest"): {"200", "401", "413", "415", "422", "503"},
        ("get", "/admin/analytics"): {"200", "400", "401", "403", "409", "422", "503"},
        ("get", "/metrics"): {"200", "401"},
        ("get", "/admin/rules"): {"200", "400", "401", "403", "409"},
        ("post", "/admin/rules"): {"201", "400", "401", "403", "409", "413", "415", "422", "503"},
        ("delete", "/admin/rules/{rule_id}"): {"200", "400", "401", "403", "404", "409", "422"},
        ("get", "/admin/rules/test"): {"200", "400", "401", "403", "409", "422", "503"},
        ("get", "/admin/synonyms"): {"200", "400", "401", "403", "409"},
        ("post", "/admin/synonyms"): {"200", "400", "401", "403", "409", "413", "415", "422"},
        ("delete", "/admin/synonyms/{synonym_id}"): {
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
            "422",
        },
    }
    for (method, path), statuses in expect.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (method, path, sorted(responses))
        for status, answer in responses.items():
            if status not in ("200", "201"):
                assert "application/json" in answer["content"], (method, path, status)
                assert "$ref" in answer["content"]["application/json"]["schema"]
    for method, path in (("get", "/search"), ("post", "/events"), ("delete", "/users/{user_id}")):
        assert "Retry-After" in paths[path][method]["responses"]["503"]["headers"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["api_key"]["name"] == "X-API-Key" and schemes["admin_key"]["in"] == "header"
    # admin endpoints need both keys (one requirement), /readyz takes the key optionally
    assert paths["/admin/reload"]["post"]["security"] == [{"api_key": [], "admin_key": []}]
    assert paths["/readyz"]["get"]["security"] == [{}, {"api_key": []}]
    assert "security" not in paths["/healthz"]["get"]


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_get_documented_answers(app, mode):
    """Schema-valid requests (positive) and invalid ones (negative) for every operation, each
    answer checked by every schemathesis check (status and body as documented, no 500,
    invalid data refused, valid data accepted, keys not ignored, ...)."""
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # the keys as fixed headers: generated requests reach past the key checks (the
        # ignored_auth check still sends each one without them)
        strategy = operation.as_strategy(generation_mode=GenerationMode(mode), headers=KEYS)
        if mode == "positive":
            # what JSON Schema cannot say, documented as the 400 of these operations
            strategy = strategy.filter(_schema_cannot_say_it_is_wrong)
        else:
            strategy = strategy.filter(_not_a_one_item_list)

        _fuzz(strategy, operation.label, sent)
    labels = set(sent)
    # every operation with an input to vary (readyz, metrics, healthz have none to break)
    assert {
        "GET /search",
        "POST /search",
        "POST /events",
        "DELETE /users/{user_id}",
        "POST /admin/reload",
    } <= labels, labels
    if mode == "positive":
        assert {"GET /healthz", "GET /readyz", "GET /metrics"} <= labels
    print(f"{mode}: {len(sent)} requests over {len(labels)} operations")


def _fuzz(strategy, label: str, sent: list[str]) -> None:
    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case):
        case.call_and_validate()
        sent.append(label)

    try:
        check()
    except Unsatisfiable:  # nothing in the operation can be made invalid (GET /healthz)
        print(f"no invalid request to make for {label}")


def _schema_cannot_say_it_is_wrong(case) -> bool:
    """False for a schema-valid request that is still wrong in a way JSON Schema cannot say:
    min_price above max_price, a filter, facet, sort or diversify on a field the index cannot
    use, or a reload folder that is not a model (documented 400s), and offset + k past 1000
    (a 422 naming it)."""
    fields = case.query if case.method == "GET" else case.body
    if case.path == "/search" and isinstance(fields, dict):
        low, high = fields.get("min_price"), fields.get("max_price")
        if _number(low) and _number(high) and float(low) > float(high):
            return False
        offset, k = fields.get("offset", 0), fields.get("k", 10)
        if _number(offset) and _number(k) and float(offset) + float(k) > 1000:
            return False
        # a filter, facet, sort or diversify names fields of the index (a documented 400)
        if any(fields.get(name) for name in ("filter", "facets", "sort", "diversify")):
            return False
    if case.path == "/admin/rules/test" and isinstance(case.query, dict):
        q = case.query.get("q")
        if isinstance(q, str) and not any(c.isalnum() for c in q):
            return False  # a query without a letter or digit in any script (a documented 400)
    if case.path == "/admin/rules" and case.method == "POST":
        return False  # which fields a rule takes depends on its action (a documented 400)
    if case.path == "/admin/synonyms" and case.method == "POST":
        return False  # whether a line has a word depends on the tokenizer (a documented 400)
    if case.path == "/admin/products" and case.method == "PATCH":
        return False  # whether a product is in the index, a value fits its field (a documented 400)
    if case.path == "/admin/reload" and isinstance(case.body, dict):
        return not (case.body.get("reranker") or case.body.get("personal"))
    return True


def _not_a_one_item_list(case) -> bool:
    """False for a "negative" case that is valid on the wire: a list-valued query parameter
    (``brands``, ``facets``) given one text value is a list of one in OpenAPI's form style
    (``?brands=a`` is ``["a"]``), so the service rightly accepts it."""
    if case.method == "GET" and isinstance(case.query, dict):
        return not any(isinstance(case.query.get(name), str) for name in ("brands", "facets"))
    return True


def _number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True

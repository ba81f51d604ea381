"""One router per feature: search, events, users, admin, ops (health, readiness, metrics) and
the page. A new endpoint is a router file here and one ``include_router`` line in
:mod:`shopsearch.service.main`."""

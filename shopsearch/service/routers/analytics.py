"""``GET /admin/analytics``: the merchandiser's report over the service's own search log (admin).

The report is :func:`analytics.report.analytics_report` over the ``search_log`` folder the
service writes (``serve --search-log``, ``SHOPSEARCH_SEARCH_LOG``), closed Parquet segments and
the live one; :mod:`analytics.report` defines each figure and the privacy threshold (a query's
text is listed only when 5 distinct shoppers typed it). It is computed on each call, in the
threadpool (a full report of 10M logged searches takes tens of seconds: see the benchmark).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from datetime import date
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from analytics.report import MIN_SHOPPERS, AnalyticsReport, analytics_report
from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    INVALID_RESPONSES,
    UNAVAILABLE_RESPONSES,
    RuntimeDep,
    Settings,
    problem,
)

router = APIRouter(tags=["admin"], dependencies=ADMIN)

NO_LOG = (
    "the service keeps no search log: start it with --search-log DIR (SHOPSEARCH_SEARCH_LOG) "
    "to record searches and read their analytics"
)


@router.get(
    "/admin/analytics",
    response_model=AnalyticsReport,
    description="Top queries, zero-result queries and the ones spelling correction rescued, "
    "click-through rate and mean click position per query, abandonment, searches per shopper "
    "and the examination curve (the estimator of `train personal`), per UTC day, from the "
    f"service's search log. A query's text is listed only when at least {MIN_SHOPPERS} "
    "distinct shoppers typed it (an anonymous search counts for its session); the others are "
    "summed as rare queries.",
    responses={
        400: problem("`since` is after `until`."),
        409: problem("The service keeps no search log (started without --search-log)."),
        **ADMIN_RESPONSES,
        **INVALID_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def read_analytics(
    settings: Settings,
    runtime: RuntimeDep,
    since: Annotated[
        date | None,
        Query(description="First UTC day included (YYYY-MM-DD); absent: the log's start."),
    ] = None,
    until: Annotated[
        date | None,
        Query(description="Last UTC day included (YYYY-MM-DD); absent: the log's end."),
    ] = None,
    top: Annotated[int, Query(ge=1, le=1000, description="Most queries in each list.")] = 20,
) -> AnalyticsReport:
    """The search log's analytics over a window of UTC days (see ``description``)."""
    folder = getattr(settings, "search_log", None)
    if folder is None:
        raise HTTPException(409, NO_LOG)
    # a folder not created yet (nothing logged so far) is an empty log
    paths = [folder] if Path(folder).exists() else []
    with runtime.pin() as loaded:  # the key the log is written with: erased shoppers out
        pz = loaded.pseudonymizer
    return analytics_report(
        paths, since, until, top=top, min_shoppers=MIN_SHOPPERS, pseudonymizer=pz
    )

"""``GET /``: the search page (static HTML and its script; it asks for the key itself);
``GET /analytics``: the analytics view (it asks for the admin key)."""

from importlib import resources

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
STATIC = resources.files("shopsearch.service") / "static"


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/static/app.js")
def page_script() -> Response:
    return Response((STATIC / "app.js").read_text(encoding="utf-8"), media_type="text/javascript")


@router.get("/analytics", response_class=HTMLResponse)
def analytics_page() -> HTMLResponse:
    """The analytics view: it asks for the admin key and reads ``GET /admin/analytics``."""
    return HTMLResponse((STATIC / "analytics.html").read_text(encoding="utf-8"))


@router.get("/static/analytics.js")
def analytics_script() -> Response:
    return Response(
        (STATIC / "analytics.js").read_text(encoding="utf-8"), media_type="text/javascript"
    )

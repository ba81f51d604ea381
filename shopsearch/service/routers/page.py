"""``GET /``: the search page (static HTML and its script; it asks for the key itself)."""

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

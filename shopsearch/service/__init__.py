"""The HTTP search service (FastAPI on uvicorn): see :mod:`shopsearch.service.main`."""

from shopsearch.service.main import create_app, create_app_from_env
from shopsearch.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "create_app_from_env"]

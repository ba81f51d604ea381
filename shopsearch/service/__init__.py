"""The HTTP search service (FastAPI on uvicorn): see :mod:`shopsearch.service.app`."""

from shopsearch.service.app import create_app, create_app_from_env
from shopsearch.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "create_app_from_env"]

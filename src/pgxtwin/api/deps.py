"""FastAPI dependencies that hand endpoints the application's stores and settings."""

from __future__ import annotations

from fastapi import Request

from ..store.repository import TwinStore
from ..store.service import ServiceStore
from .settings import Settings


def twin_store(request: Request) -> TwinStore:
    return request.app.state.twins


def service_store(request: Request) -> ServiceStore:
    return request.app.state.service


def settings(request: Request) -> Settings:
    return request.app.state.settings

"""Append-only storage of patient twins (SQLAlchemy 2 + Alembic; SQLite file or PostgreSQL)."""

from .engine import DEFAULT_URL, create_store_engine, database_url, migrate
from .errors import ConcurrentWriteError, StoreError, TwinExistsError, UnknownTwinError, VersionNotFoundError
from .repository import AuditRecord, HistoryEntry, TwinStore

__all__ = [
    "DEFAULT_URL", "AuditRecord", "ConcurrentWriteError", "HistoryEntry", "StoreError", "TwinExistsError",
    "TwinStore", "UnknownTwinError", "VersionNotFoundError", "create_store_engine", "database_url", "migrate",
]

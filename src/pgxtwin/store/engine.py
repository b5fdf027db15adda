"""Database URL, engine and migrations of the twin store.

* Default: a SQLite file ``./pgxtwin-data/pgxtwin.db`` (relative to the working directory) in WAL
  mode with ``synchronous=FULL`` (a committed event survives a crash of the process or machine).
* ``PGXTWIN_DATABASE_URL`` (or an explicit URL) selects another database, e.g.
  ``postgresql://user:password@host/dbname`` (driven by psycopg 3).

The Alembic migrations in ``pgxtwin/store/migrations`` run on open, inside one transaction that
also serialises concurrent openers (SQLite ``BEGIN IMMEDIATE``; PostgreSQL advisory lock).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from .errors import StoreError

__all__ = ["DEFAULT_URL", "MIGRATIONS_DIR", "create_store_engine", "database_url", "migrate"]

ENV_VAR = "PGXTWIN_DATABASE_URL"
DEFAULT_PATH = Path("pgxtwin-data") / "pgxtwin.db"
DEFAULT_URL = f"sqlite:///{DEFAULT_PATH.as_posix()}"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
WRITE = "pgxtwin_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
_MIGRATION_LOCK = 0x70677874  # PostgreSQL advisory-lock key ("pgxt")


def database_url(url: str | None = None) -> str:
    """``url``, else ``$PGXTWIN_DATABASE_URL``, else the default SQLite file; PostgreSQL URLs
    without a driver get psycopg 3."""
    chosen = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    for prefix in ("postgres://", "postgresql://"):
        if chosen.startswith(prefix):
            chosen = "postgresql+psycopg://" + chosen[len(prefix):]
    return chosen


def create_store_engine(url: str | None = None, *, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for the store; SQLite files get their folder, WAL mode and explicit transactions."""
    resolved = make_url(database_url(url))
    if resolved.get_backend_name() == "sqlite":
        database = resolved.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise StoreError("the twin store needs a SQLite file (several connections share it), not an in-memory database")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(resolved, connect_args={"timeout": busy_timeout_s})
        _sqlite_events(engine, busy_timeout_s)
        return engine
    if resolved.get_backend_name() != "postgresql":
        raise StoreError(f"unsupported database {resolved.get_backend_name()!r}: use a SQLite file or PostgreSQL")
    return create_engine(resolved, pool_pre_ping=True)


def _sqlite_events(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        # pysqlite's own transaction handling begins lazily (reads outside it); we issue BEGIN ourselves
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        _switch_to_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        # a writer takes the write lock at BEGIN: a second writer waits (busy timeout) instead of
        # failing later on a stale snapshot, and sees the first one's commit when it gets the lock
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def _switch_to_wal(cursor, busy_timeout_s: float) -> None:  # noqa: ANN001
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the file.

    Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    at once, without its busy handler, when two connections opening the same new file each hold a
    shared lock (it would otherwise deadlock).  WAL is then set by whichever wins; the other retries.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _alembic_config(connection) -> Config:  # noqa: ANN001
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> str:
    """Bring the schema to this pgxtwin's head revision (idempotent); returns the revision."""
    heads = ScriptDirectory.from_config(_alembic_config(None)).get_heads()
    head = heads[0]
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return head
            script = ScriptDirectory.from_config(_alembic_config(conn))
            if current is not None and not _known(script, current):
                raise StoreError(f"database schema revision {current!r} is unknown to this pgxtwin (head {head!r})")
            command.upgrade(_alembic_config(conn), "head")
    return head


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises ResolutionError / CommandError subclasses
        return False

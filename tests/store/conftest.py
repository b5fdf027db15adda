"""Store fixtures: a SQLite file per test, and PostgreSQL (a fresh schema per test) when
``PGXTWIN_TEST_POSTGRES_URL`` names a server, e.g. ``postgresql://pgxtwin:pgxtwin@localhost/pgxtwin_test``."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pgxtwin.store import database_url

POSTGRES_ENV = "PGXTWIN_TEST_POSTGRES_URL"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'twins.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"PostgreSQL store tests need {POSTGRES_ENV}, e.g. postgresql://pgxtwin:pgxtwin@localhost/pgxtwin_test")
    admin = create_engine(database_url(base))
    schema = f"pgxtwin_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:  # noqa: BLE001 - a named server that cannot be used is a failure, not a skip
        admin.dispose()
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL is not usable: {exc}")
    url = make_url(database_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request) -> str:
    """Each store test runs on a SQLite file and, when available, on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")

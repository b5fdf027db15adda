"""Alembic environment: run programmatically by :func:`pgxtwin.store.engine.migrate` on a connection
already inside a transaction (passed as ``config.attributes["connection"]``).

From the command line (developers, to write a new revision)::

    PGXTWIN_DATABASE_URL=sqlite:///dev.db alembic -c src/pgxtwin/store/migrations/alembic.ini revision -m "..."
"""

from __future__ import annotations

from alembic import context

from pgxtwin.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection, target_metadata=target_metadata, transactional_ddl=True, render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    from pgxtwin.store.engine import database_url

    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    from pgxtwin.store.engine import create_store_engine, database_url

    engine = create_store_engine(database_url())
    with engine.connect() as conn, conn.begin():
        _run(conn)
    engine.dispose()

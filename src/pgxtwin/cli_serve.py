"""``pgxtwin serve``: the twin service (REST, FHIR R4, CDS Hooks) under uvicorn.

Configuration comes from the environment (``PGXTWIN_DATABASE_URL``, default the embedded SQLite
file; ``PGXTWIN_OAUTH_ISSUERS``, ``PGXTWIN_CDS_CLIENTS``, ... see :mod:`pgxtwin.api.settings`).
uvicorn's access log is off by default: request lines carry patient ids, and no patient data goes
to the application log.  SIGTERM or Ctrl-C stops the service gracefully (running jobs finish).

``--workers N`` (default: the CPU count) runs N uvicorn worker processes on the same port (each builds the application from
the environment, ``create_app`` as factory); they share the store, so what must hold across calls
(idempotency keys, CDS cards, a CDS client ``jti`` accepted once) lives in the database.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional

import typer

from .errors import PgxInputError


class LogLevel(str, Enum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def serve(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8080,
    log_level: Annotated[LogLevel, typer.Option(help="uvicorn's log level")] = LogLevel.info,
    access_log: Annotated[bool, typer.Option(help="log each request line (paths carry patient ids)")] = False,
    workers: Annotated[Optional[int], typer.Option(min=1, max=64, help="uvicorn worker processes, sharing the store (default: CPU count)")] = None,
) -> None:
    """Run the twin service: REST API, FHIR R4 and CDS Hooks 2.0 (OpenAPI at /docs)."""
    import os

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from .api.app import create_app
    from .api.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    try:
        app = create_app(settings)
    except SQLAlchemyError as exc:  # the URL may hold a password: name only the error type
        raise PgxInputError(f"cannot open the twin store at PGXTWIN_DATABASE_URL ({type(exc).__name__})") from None
    # one process per core: a single process holds the GIL, and CDS latency under load needs both
    # cores (benchmarks/bench_cds.py: p95 171-189 ms with 1 worker, 122-126 ms with 2 on 2 cores)
    workers = workers or os.cpu_count() or 1
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level.value, "access_log": access_log, "lifespan": "on"}
    if workers == 1:
        uvicorn.run(app, **options)
        return
    # the application above checked the settings and migrated the store once; each worker makes its own
    app.state.twins.close()
    uvicorn.run("pgxtwin.api.app:create_app", factory=True, workers=workers, **options)

"""Error responses: FHIR OperationOutcome for REST and FHIR endpoints, a small JSON body for CDS
Hooks endpoints (the spec defines none).  A user's mistake is 4xx, a database outage 503, and an
unexpected failure 500 without internals; nothing about a patient goes to the application log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PgxInputError
from ..store.errors import ConcurrentWriteError, StoreError, TwinExistsError, UnknownTwinError, VersionNotFoundError

log = logging.getLogger("pgxtwin.api")

CDS_PREFIX = "/cds-services"
_ISSUE_CODE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               409: "conflict", 412: "conflict", 413: "too-long", 415: "not-supported", 422: "processing",
               428: "required", 429: "throttled", 503: "transient"}


def operation_outcome(status: int, message: str, *, code: str | None = None, expression: list[str] | None = None,
                      severity: str = "error") -> dict[str, Any]:
    """A FHIR R4 OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code or _ISSUE_CODE.get(status, "exception"),
                             "diagnostics": message}
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def problem(request: Request, status: int, message: str, *, headers: dict[str, str] | None = None,
            expression: list[str] | None = None) -> JSONResponse:
    """The error response for ``request``'s endpoint family."""
    if request.url.path.startswith(CDS_PREFIX):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return JSONResponse(operation_outcome(status, message, expression=expression), status_code=status,
                        headers=headers, media_type="application/fhir+json")


def _validation_message(exc: RequestValidationError) -> tuple[str, list[str]]:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}", [where]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, where = _validation_message(exc)
        return problem(request, 400, message, expression=where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(PgxInputError)
    async def _input(request: Request, exc: PgxInputError) -> JSONResponse:
        return problem(request, 400, str(exc))

    @app.exception_handler(UnknownTwinError)
    async def _unknown(request: Request, exc: UnknownTwinError) -> JSONResponse:
        return problem(request, 404, str(exc))

    @app.exception_handler(VersionNotFoundError)
    async def _version(request: Request, exc: VersionNotFoundError) -> JSONResponse:
        return problem(request, 404, str(exc))

    @app.exception_handler(TwinExistsError)
    async def _exists(request: Request, exc: TwinExistsError) -> JSONResponse:
        return problem(request, 409, str(exc))

    @app.exception_handler(ConcurrentWriteError)
    async def _conflict(request: Request, exc: ConcurrentWriteError) -> JSONResponse:
        # a stale If-Match / expected version: the client re-reads and retries
        return problem(request, 412, str(exc))

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem(request, 503, "the twin store is unavailable; retry later", headers={"Retry-After": "5"})

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return problem(request, 409, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the exception type and the route template only: messages and paths may carry patient data
        route = request.scope.get("route")
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, getattr(route, "path", "?"))
        return problem(request, 500, "internal error")

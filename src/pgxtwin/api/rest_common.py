"""Pieces every REST endpoint uses: who and where (audit), version ETags, cursors, error statuses
for the OpenAPI spec, and JSON that is always valid (no NaN or infinity)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from fastapi import HTTPException, Path, Request
from fastapi.responses import JSONResponse

from ..twin.state import FHIR_ID_PATTERN
from .schemas import OPERATION_OUTCOME_SCHEMA

PatientIdPath = Annotated[str, Path(pattern=FHIR_ID_PATTERN, description="the EHR/FHIR Patient.id")]

# Patient data must not be kept by shared caches or browsers.
NO_STORE = {"Cache-Control": "no-store"}

_ERROR_TEXT: dict[int | str, str] = {
    400: "Bad request: malformed JSON, an invalid field or value (OperationOutcome names it)",
    401: "No valid bearer token",
    403: "The token's scopes or patient do not allow this",
    404: "No such twin, version or job",
    409: "The twin already exists",
    412: "If-Match names a version that is no longer the twin's current one: re-read and retry",
    413: "Request body over the limit",
    415: "Unsupported Content-Type",
    422: "Idempotency-Key reused with a different request, or the request cannot be applied to this twin",
    428: "If-Match (the twin's version, its ETag) is required",
    429: "Rate limit exceeded",
    503: "The twin store is unavailable; retry later",
    "4XX": "Other client errors (e.g. 405 method not allowed)",
}
# "4XX" also keeps FastAPI from documenting its own 422 validation body: invalid requests are 400s here
_ALWAYS: tuple[int | str, ...] = (400, 401, 403, 413, 429, 503, "4XX")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses of an endpoint (always 400, 401, 403, 413, 429,
    503 and other 4xx), each an OperationOutcome."""
    return {
        status: {"description": _ERROR_TEXT[status],
                 "content": {"application/fhir+json": {"schema": OPERATION_OUTCOME_SCHEMA}}}
        for status in [*_ALWAYS, *(s for s in statuses if s not in _ALWAYS)]
    }


def header_doc(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


ETAG_HEADER = {"ETag": header_doc('the twin\'s version, quoted: "3"')}


def entry_point(request: Request) -> str:
    """``api:<METHOD> <route path>`` for the audit log (the route's template, never the patient id)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or "?"
    return f"api:{request.method} {path}"[:100]


def etag(version: int) -> str:
    return f'"{version}"'


_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


def if_match_version(value: str | None) -> int:
    """The version named by an ``If-Match`` header: 428 when missing, 400 when it is not one of ours."""
    if value is None or not value.strip():
        raise HTTPException(428, 'If-Match is required: send the twin\'s current ETag, e.g. If-Match: "3"')
    m = _ETAG.match(value)
    if m is None:
        raise HTTPException(400, f"If-Match: expected one version ETag such as \"3\", not {value[:40]!r}")
    return int(m.group(1))


def encode_cursor(kind: str, after: str | int) -> str:
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str, expected: type) -> Any:
    """The position after which a page starts (None: from the beginning); 400 for a foreign cursor."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("k") != kind or not isinstance(data.get("a"), expected) \
            or isinstance(data.get("a"), bool):
        raise HTTPException(400, "cursor: not a cursor of this listing (use next_cursor from the previous page)")
    return data["a"]


def next_url(request: Request, cursor: str | None) -> str | None:
    return None if cursor is None else str(request.url.include_query_params(cursor=cursor))


def plain_json(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python values, tuples as lists, and non-finite
    floats as null (JSON has no NaN or infinity; an open-ended target window has high = null)."""
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain_json(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_response(body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(plain_json(body), status_code=status_code, headers={**NO_STORE, **(headers or {})})

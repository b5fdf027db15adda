"""``Idempotency-Key`` on REST writes: a retried write gets the first response instead of a second change.

Keys are scoped per client (the token's ``issuer|subject``).  The first successful (2xx) response
to a key is stored in the twin store with a SHA-256 of the request (method, path, query, body);
a retry with the same key and the same request gets that response again (``Idempotent-Replayed:
true``), the same key with a different request is a 422.  Failed writes are not stored: nothing
changed, so the client may retry them under the same key.  When two retries race, the loser's
write is refused by the twin's version check (412) or by the unique patient id (409); it then
answers with the winner's stored response.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response

from ..errors import PgxInputError
from ..store.errors import StoreError
from ..store.service import ServiceStore, StoredResponse

__all__ = ["IDEMPOTENCY_HEADER_DOC", "check_key", "request_hash", "run_idempotent"]

REPLAYED = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # visible ASCII, as the store keeps at most 200 characters
_KEPT_HEADERS = ("etag", "location", "content-type")

IDEMPOTENCY_HEADER_DOC = ("A client-chosen key (1-200 visible ASCII characters) that makes retries of this write"
                          " safe: the same key with the same request replays the first response.")


def check_key(key: str | None) -> str | None:
    if key is not None and not _KEY.match(key):
        raise HTTPException(400, "Idempotency-Key: 1-200 visible ASCII characters")
    return key


def request_hash(request: Request, body: Any, *, body_digest: str | None = None) -> str:
    """SHA-256 of what makes two requests the same write: method, path, query and body
    (``body`` as canonical JSON, or the digest of a raw body)."""
    canonical = json.dumps(
        {"method": request.method, "path": request.url.path, "query": sorted(request.query_params.multi_items()),
         "body": body, "body_sha256": body_digest},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(stored: StoredResponse) -> JSONResponse:
    return JSONResponse(stored.body, status_code=stored.status_code, headers={**stored.headers, REPLAYED: "true"})


def stored_response(service: ServiceStore, client: str, key: str, digest: str) -> JSONResponse | None:
    """The replay of an earlier response to ``key`` (None when there is none); 422 when the key was
    used for a different request."""
    stored = service.idempotent_response(client, key)
    if stored is None:
        return None
    if stored.request_hash != digest:
        raise HTTPException(422, "Idempotency-Key was already used for a different request; use a new key")
    return _replay(stored)


def save_response(service: ServiceStore, client: str, key: str, digest: str, response: Response) -> None:
    if 200 <= response.status_code < 300:
        headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        service.save_idempotent_response(client, key, digest, response.status_code,
                                         json.loads(bytes(response.body)), headers)


def run_idempotent(service: ServiceStore, client: str, key: str | None, digest: str,
                   write: Callable[[], Response]) -> Response:
    """Run ``write`` once per (client, key): replay the stored response of an earlier run."""
    if key is None:
        return write()
    earlier = stored_response(service, client, key, digest)
    if earlier is not None:
        return earlier
    try:
        response = write()
    except (HTTPException, StoreError, PgxInputError):
        # a concurrent retry with this key may have made the write this one was refused for
        winner = stored_response(service, client, key, digest)
        if winner is not None:
            return winner
        raise
    save_response(service, client, key, digest, response)
    return response

"""Who may call the CDS services: a CDS client JWT on every call (CDS Hooks 2.0 §Trusting CDS Clients).

The client signs a JWT with ES384 or RS384 (the two algorithms the specification names) and sends
it as ``Authorization: Bearer <jwt>``.  Its ``iss`` must be on the allow-list
(``PGXTWIN_CDS_CLIENTS``), its key comes from that issuer's own key set (``jku`` only when it is
the issuer's configured ``jwks_url``), ``aud`` must be the URL called (``settings.public_url`` +
path behind a proxy), ``exp``/``iat``/``jti`` are required and a ``jti`` is accepted once.
Any failure is a 401 and no card.

"Once" holds across service processes (``pgxtwin serve --workers N``): each accepted (iss, jti) is
claimed in the store's ``seen_tokens`` table, committed before the call is answered (in the
process's group commit, :mod:`pgxtwin.store.recorder`); the per-process cache in front of it
refuses a replay to the same process without a database round trip.  Discovery and feedback claim
the token before they go on (:func:`cds_client`); a service call verifies it first
(:func:`verified_cds_client`) and claims it in the one commit of its audit entry and cards, so it
waits for one commit, not two: a call whose claim is lost answers 401 and records no card.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import Depends, HTTPException, Request

from ...store.recorder import Claim, claim_token
from ...store.service import check_token_id
from ..keys import ReplayCache, TokenError, verify_token

__all__ = ["CDS_ALGORITHMS", "CdsClient", "cds_client", "replayed", "verified_cds_client"]

CDS_ALGORITHMS = ("ES384", "RS384")
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")
LEEWAY_S = 30.0  # clock skew allowed on exp/iat (s); a jti is held until exp + this
_replay_lock = threading.Lock()


@dataclass(frozen=True)
class CdsClient:
    """The verified caller: the JWT's issuer and (when given) subject, its client id, and the claim
    of the token's (iss, jti) until it expires (committed by :func:`cds_client` or by the call)."""

    issuer: str
    subject: str | None
    tenant: str | None
    claim: Claim

    @property
    def actor(self) -> str:
        """The string recorded as actor in the audit log and with feedback."""
        return f"{self.issuer}|{self.subject}" if self.subject else self.issuer


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def replayed() -> HTTPException:
    """The answer to a call whose token's claim was lost: another call used it first."""
    return _unauthorized("invalid CDS client JWT: token replayed (jti seen before)")


def _replay_cache(request: Request) -> ReplayCache:
    """One replay cache per application (made on first use)."""
    state = request.app.state
    cache = getattr(state, "cds_replay", None)
    if cache is None:
        with _replay_lock:
            cache = getattr(state, "cds_replay", None)
            if cache is None:
                cache = state.cds_replay = ReplayCache()
    return cache


def audience(request: Request) -> str:
    """The URL this request was sent to, as the client must have put it in ``aud``."""
    public = request.app.state.settings.public_url
    if public:
        return public.rstrip("/") + request.url.path
    return str(request.url.replace(query=None, fragment=None))


async def verified_cds_client(request: Request) -> CdsClient:
    """FastAPI dependency: the CDS client whose JWT passes every check but the store's replay claim,
    which the caller commits (``client.claim``) before answering; or 401.  Pure computation (no
    I/O), so it runs on the event loop rather than taking a thread-pool round trip."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("a CDS client JWT is required (Authorization: Bearer <jwt>)")
    issuers = request.app.state.cds_clients
    if issuers is None:
        raise _unauthorized("no CDS client is trusted by this server (PGXTWIN_CDS_CLIENTS)")
    try:
        claims = verify_token(token.strip(), issuers, audience=audience(request), algorithms=CDS_ALGORITHMS,
                              require=REQUIRED_CLAIMS, replay=_replay_cache(request), leeway_s=LEEWAY_S)
        iss, jti = str(claims["iss"]), str(claims["jti"])
        check_token_id(iss, jti)
    except (TokenError, ValueError) as exc:
        raise _unauthorized(f"invalid CDS client JWT: {exc}") from None
    expires_at = datetime.fromtimestamp(float(claims["exp"]) + LEEWAY_S, timezone.utc)
    sub, tenant = claims.get("sub"), claims.get("tenant")
    return CdsClient(iss, None if sub is None else str(sub), None if tenant is None else str(tenant),
                     (iss, jti, expires_at))


def cds_client(request: Request, client: CdsClient = Depends(verified_cds_client)) -> CdsClient:
    """FastAPI dependency: the verified CDS client, its token claimed in the store; or 401."""
    # the in-process cache saw this jti first; the store tells whether another process did
    if not claim_token(request.app.state.twins, *client.claim):
        raise replayed()
    return client

"""OAuth2 bearer tokens with SMART-style scopes for the REST and FHIR endpoints.

Tokens are JWTs from an issuer in ``PGXTWIN_OAUTH_ISSUERS`` (same file format as the CDS clients),
with ``aud`` equal to ``PGXTWIN_OAUTH_AUDIENCE`` when one is configured.  Scopes follow SMART App
Launch: ``<context>/<resource>.<permission>`` with context ``patient``, ``user`` or ``system``,
resource ``*`` or a FHIR resource type, permission ``read``/``write``/``*`` (v1) or a subset of
``cruds`` (v2).  A token whose only matching scopes are ``patient/`` scopes is limited to the
patient named in its ``patient`` claim.  Nothing is readable without a valid token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .keys import TokenError, verify_token

__all__ = ["Principal", "require"]

Action = Literal["read", "write"]
REST_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]+)\.(read|write|\*|[cruds]+)$")
_V2 = {"read": set("rs"), "write": set("cud")}

_bearer = HTTPBearer(auto_error=False, description="OAuth2 bearer JWT with SMART scopes")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, issuer, scopes and (for patient-scoped tokens) patient."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    patient: str | None

    @property
    def actor(self) -> str:
        return f"{self.issuer}|{self.subject}"

    def contexts(self, action: Action, resource: str = "*") -> set[str]:
        """The scope contexts (patient/user/system) that allow ``action`` on ``resource``."""
        found = set()
        for scope in self.scopes:
            m = _SCOPE.match(scope)
            if m is None or m.group(2) not in ("*", resource):
                continue
            permission = m.group(3)
            if permission in (action, "*") or (permission not in ("read", "write") and _V2[action] & set(permission)):
                found.add(m.group(1))
        return found

    def may(self, action: Action, patient_id: str | None, resource: str = "*") -> bool:
        contexts = self.contexts(action, resource)
        if contexts & {"user", "system"}:
            return True
        return "patient" in contexts and patient_id is not None and patient_id == self.patient

    def check(self, action: Action, patient_id: str | None, resource: str = "*") -> None:
        """403 unless this principal may ``action`` the twin of ``patient_id`` (None: any patient / listing)."""
        if not self.may(action, patient_id, resource):
            target = "this patient" if patient_id is not None else "records of more than one patient"
            raise HTTPException(403, f"token's scopes do not allow {action} access to {target}")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def require(action: Action, resource: str = "*") -> Callable[..., Principal]:
    """FastAPI dependency: a verified principal with some scope allowing ``action`` on ``resource``.

    Per-patient checks happen in the endpoint (``principal.check(action, patient_id)``), which
    knows the patient.
    """

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("a bearer token is required")
        issuers = request.app.state.oauth_issuers
        if issuers is None:
            raise _unauthorized("no token issuer is configured on this server (PGXTWIN_OAUTH_ISSUERS)")
        settings = request.app.state.settings
        try:
            claims = verify_token(credentials.credentials, issuers, audience=settings.oauth_audience,
                                  algorithms=REST_ALGORITHMS, require=("iss", "exp", "sub"))
        except TokenError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        raw = claims.get("scope", claims.get("scp", ""))
        scopes = frozenset(raw.split() if isinstance(raw, str) else [str(s) for s in raw])
        patient = claims.get("patient")
        principal = Principal(str(claims["sub"]), str(claims["iss"]), scopes,
                              str(patient) if patient is not None else None)
        if not principal.contexts(action, resource):
            raise HTTPException(403, f"token has no scope allowing {action} of {resource}")
        request.state.principal = principal
        return principal

    return dependency

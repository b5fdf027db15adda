"""Trusted token issuers and JWT verification, shared by CDS Hooks clients and REST bearer tokens.

A trusted-issuer file is JSON: a list of ``{"iss": ..., "jwks": {...inline JWKS...}}`` or
``{"iss": ..., "jwks_url": ...}`` objects (``PGXTWIN_CDS_CLIENTS``, ``PGXTWIN_OAUTH_ISSUERS``);
with both, the inline keys are a pinned copy of the set at ``jwks_url`` and are used without fetching.
The issuer (``iss``) must be on the list; the signing key comes only from that issuer's own key
source, and a ``jku`` header is accepted only when it equals the issuer's configured ``jwks_url``
(CDS Hooks 2.0 §Trusting CDS Clients).  Verification errors are :class:`TokenError`; their message
is safe to return to the caller (no key material, no patient data).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ..errors import PgxInputError

__all__ = ["ReplayCache", "TokenError", "TrustedIssuer", "TrustedIssuers", "verify_token"]


class TokenError(Exception):
    """A bearer token or CDS client JWT that must be refused (answered 401)."""


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks: Mapping[str, Any] | None = None
    jwks_url: str | None = None


class TrustedIssuers:
    """The allow-list of issuers and their key sources."""

    def __init__(self, issuers: Iterable[TrustedIssuer], *, fetch_timeout_s: float = 5.0) -> None:
        self._by_iss = {i.iss: i for i in issuers}
        self._inline: dict[str, jwt.PyJWKSet] = {}
        self._clients: dict[str, jwt.PyJWKClient] = {}
        for issuer in self._by_iss.values():
            if issuer.jwks is not None:
                self._inline[issuer.iss] = jwt.PyJWKSet.from_dict(dict(issuer.jwks))
            else:
                assert issuer.jwks_url is not None
                self._clients[issuer.iss] = jwt.PyJWKClient(issuer.jwks_url, cache_keys=True, lifespan=300,
                                                            timeout=int(max(1, fetch_timeout_s)))

    @classmethod
    def from_file(cls, path: Path, *, fetch_timeout_s: float = 5.0) -> TrustedIssuers:
        """Read a trusted-issuer file; a malformed one is a one-line :class:`PgxInputError`."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PgxInputError(f"{path}: trusted-issuer file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PgxInputError(f"{path}: not a JSON trusted-issuer file ({exc})") from None
        entries = raw if isinstance(raw, list) else [raw]
        issuers = []
        for i, entry in enumerate(entries):
            where = f"{path}: [{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
                raise PgxInputError(f"{where}.iss: each entry needs an issuer string")
            jwks, url = entry.get("jwks"), entry.get("jwks_url")
            if jwks is None and url is None:
                raise PgxInputError(f"{where}: give jwks (inline keys) or jwks_url (or both: a pinned copy of that set)")
            if jwks is not None and (not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list)):
                raise PgxInputError(f"{where}.jwks: a JWKS object with a 'keys' list is required")
            if url is not None and (not isinstance(url, str) or not url.startswith("https://")):
                raise PgxInputError(f"{where}.jwks_url: must be an https:// URL")
            issuers.append(TrustedIssuer(entry["iss"], jwks, url))
        try:
            return cls(issuers, fetch_timeout_s=fetch_timeout_s)
        except jwt.PyJWTError as exc:
            raise PgxInputError(f"{path}: unusable key in a JWKS ({exc})") from None

    def __contains__(self, iss: object) -> bool:
        return iss in self._by_iss

    def signing_key(self, iss: str, header: Mapping[str, Any]) -> Any:
        """The public key that must have signed a token of ``iss`` with this header."""
        issuer = self._by_iss.get(iss)
        if issuer is None:
            raise TokenError("issuer is not trusted")
        jku = header.get("jku")
        if jku is not None and jku != issuer.jwks_url:
            raise TokenError("jku is not this issuer's key set")
        kid = header.get("kid")
        if issuer.iss in self._inline:
            keys = [k for k in self._inline[issuer.iss].keys if kid is None or k.key_id == kid]
            if len(keys) != 1:
                raise TokenError("no single key with this kid in the issuer's key set")
            return keys[0].key
        try:
            client = self._clients[issuer.iss]
            if kid is None:
                raise TokenError("a kid header is required for a remote key set")
            return client.get_signing_key(kid).key
        except jwt.PyJWKClientError as exc:
            raise TokenError(f"signing key unavailable ({exc})") from None


class ReplayCache:
    """``jti`` values seen before their token expires (bounded; thread-safe)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def check_and_add(self, iss: str, jti: str, expires_at: float) -> None:
        now = time.time()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self._max):
                self._seen.popitem(last=False)
            key = (iss, jti)
            if key in self._seen:
                raise TokenError("token replayed (jti seen before)")
            self._seen[key] = expires_at


def verify_token(
    token: str,
    issuers: TrustedIssuers,
    *,
    audience: str | Iterable[str] | None,
    algorithms: Iterable[str],
    require: Iterable[str] = ("iss", "exp", "iat"),
    replay: ReplayCache | None = None,
    leeway_s: float = 30.0,
) -> dict[str, Any]:
    """Verified claims of ``token``; :class:`TokenError` for any reason to refuse it."""
    allowed = list(algorithms)
    try:
        # header and claims in one parse, to find the issuer's key; everything is verified below
        unverified = jwt.decode_complete(token, options={"verify_signature": False})
        header, payload = unverified["header"], unverified["payload"]
    except jwt.PyJWTError as exc:
        raise TokenError(f"malformed token ({exc})") from None
    if header.get("alg") not in allowed:
        raise TokenError(f"algorithm {header.get('alg')!r} not accepted (use one of {', '.join(allowed)})")
    iss = payload.get("iss") if isinstance(payload, dict) else None
    if not isinstance(iss, str) or iss not in issuers:
        raise TokenError("issuer is not trusted")
    key = issuers.signing_key(iss, header)
    try:
        claims = jwt.decode(
            token, key, algorithms=allowed, audience=audience, issuer=iss, leeway=leeway_s,
            options={"require": list(require), "verify_aud": audience is not None},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc) or type(exc).__name__) from None
    if replay is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise TokenError("token has no jti")
        replay.check_and_add(iss, jti, float(claims["exp"]) + leeway_s)
    return claims

"""A real pgxtwin service on loopback (uvicorn in a thread) with test issuers and token minting.

``service`` (module scope) runs ``create_app`` against a fresh SQLite file; ``Service.token(...)``
signs REST bearer tokens, ``Service.cds_jwt(url)`` signs CDS client JWTs (ES384), with keys made
here (the spec's private test key is deliberately not shipped).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pgxtwin.api.app import create_app
from pgxtwin.api.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
OAUTH_ISS = "https://auth.test.example/"
CDS_ISS = "https://ehr.test.example/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jwk(public_key: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public_key))
    return jwk | {"kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Service:
    base_url: str
    app: Any
    oauth_key: Any = field(repr=False)
    cds_key: Any = field(repr=False)

    def token(self, scopes: str = "user/*.read user/*.write", *, patient: str | None = None, sub: str = "clinician-1",
              ttl_s: int = 300, **extra: Any) -> str:
        """A REST bearer token from the test issuer."""
        now = int(time.time())
        claims = {"iss": OAUTH_ISS, "sub": sub, "aud": "pgxtwin-test", "iat": now, "exp": now + ttl_s,
                  "scope": scopes, "jti": str(uuid.uuid4())} | extra
        if patient is not None:
            claims["patient"] = patient
        return jwt.encode(claims, self.oauth_key, algorithm="RS256", headers={"kid": "oauth-1"})

    def auth(self, scopes: str = "user/*.read user/*.write", **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes, **kw)}"}

    def cds_jwt(self, url: str, *, ttl_s: int = 300, **extra: Any) -> str:
        """A CDS client JWT (ES384) for a call to ``url`` (its ``aud``)."""
        now = int(time.time())
        claims = {"iss": CDS_ISS, "sub": "ehr-client", "aud": url, "iat": now, "exp": now + ttl_s,
                  "jti": str(uuid.uuid4())} | extra
        return jwt.encode(claims, self.cds_key, algorithm="ES384", headers={"kid": "cds-1", "typ": "JWT"})

    def cds_headers(self, service_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cds_jwt(f'{self.base_url}/cds-services/{service_id}')}"}


def start_service(tmp: Path, **settings: Any) -> tuple[Service, uvicorn.Server, threading.Thread]:
    oauth_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cds_key = ec.generate_private_key(ec.SECP384R1())
    (tmp / "oauth.json").write_text(json.dumps([{"iss": OAUTH_ISS, "jwks": {"keys": [_jwk(oauth_key.public_key(), "oauth-1", "RS256")]}}]))
    (tmp / "cds.json").write_text(json.dumps([{"iss": CDS_ISS, "jwks": {"keys": [_jwk(cds_key.public_key(), "cds-1", "ES384")]}}]))
    port = _free_port()
    config = Settings(database_url=settings.pop("database_url", f"sqlite:///{tmp / 'twins.db'}"),
                      cds_clients=tmp / "cds.json", oauth_issuers=tmp / "oauth.json", oauth_audience="pgxtwin-test",
                      **settings)
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return Service(f"http://127.0.0.1:{port}", app, oauth_key, cds_key), server, thread


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc, server, thread = start_service(tmp_path_factory.mktemp("service"))
    yield svc
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url, timeout=30) as c:
        yield c

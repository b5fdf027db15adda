"""Every CDS call needs a valid CDS client JWT: ES384/RS384 from a trusted issuer, ``aud`` = the URL
called, ``exp``/``iat``/``jti`` present, a ``jti`` once; otherwise 401 and no card."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pgxtwin.api.app import create_app
from pgxtwin.api.keys import TokenError, TrustedIssuers, verify_token
from pgxtwin.api.settings import Settings

from .conftest import CDS_ISS, SHARED, Service, _free_port, _jwk

VECTOR = SHARED / "fixtures" / "cds-hooks" / "spec-2.0.1" / "jwt"
RSA_ISS = "https://rsa-ehr.test.example/"
SPEC_ISS = "https://fhir-ehr.example.com/"
URL_PATH = "/cds-services/pgx-order-sign"
BODY = {"hook": "order-sign", "hookInstance": "c1", "context": {
    "patientId": "nobody", "draftOrders": {"resourceType": "Bundle", "entry": []}}}


class Clients:
    """A service trusting an ES384 client (conftest's), an RS384 client and the spec's example issuer,
    behind the public URL https://cds.example.org (the spec vector's audience)."""

    def __init__(self, tmp: Path) -> None:
        self.ec_key = ec.generate_private_key(ec.SECP384R1())
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        issuers: list[dict[str, Any]] = [
            {"iss": CDS_ISS, "jwks": {"keys": [_jwk(self.ec_key.public_key(), "cds-1", "ES384")]}},
            {"iss": RSA_ISS, "jwks": {"keys": [_jwk(self.rsa_key.public_key(), "rsa-1", "RS384")]}},
        ]
        if VECTOR.exists():
            issuers.append({"iss": SPEC_ISS, "jwks": json.loads((VECTOR / "jwks-public.json").read_text()),
                            "jwks_url": "https://fhir-ehr.example.com/jwk_uri"})
        (tmp / "cds.json").write_text(json.dumps(issuers))
        self.public = "https://cds.example.org"
        app = create_app(Settings(database_url=f"sqlite:///{tmp / 'twins.db'}", cds_clients=tmp / "cds.json",
                                  public_url=self.public))
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)

    def token(self, *, key: Any = None, alg: str = "ES384", kid: str = "cds-1", iss: str = CDS_ISS,
              aud: str | None = None, drop: tuple[str, ...] = (), **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": iss, "sub": "ehr-client", "aud": aud or self.public + URL_PATH, "iat": now, "exp": now + 300,
                "jti": str(uuid.uuid4())} | claims
        for name in drop:
            body.pop(name)
        return jwt.encode(body, key if key is not None else self.ec_key, algorithm=alg, headers={"kid": kid})

    def post(self, token: str | None, path: str = URL_PATH) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.post(f"http://127.0.0.1:{self.port}{path}", json=BODY, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    c = Clients(tmp_path_factory.mktemp("cds-security"))
    yield c
    c.server.should_exit = True
    c.thread.join(timeout=10)


def _refused(response: httpx.Response, why: str) -> None:
    assert response.status_code == 401, response.text
    assert "cards" not in response.json() and why in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_valid_es384_and_rs384_tokens_are_accepted(clients: Clients) -> None:
    assert clients.post(clients.token()).json() == {"cards": []}
    assert clients.post(clients.token(key=clients.rsa_key, alg="RS384", kid="rsa-1", iss=RSA_ISS)).status_code == 200


def test_missing_malformed_and_foreign_tokens_are_refused(clients: Clients) -> None:
    _refused(clients.post(None), "JWT is required")
    _refused(clients.post("not-a-jwt"), "malformed")
    stranger = ec.generate_private_key(ec.SECP384R1())
    _refused(clients.post(clients.token(key=stranger)), "invalid CDS client JWT")  # right kid, wrong key
    _refused(clients.post(clients.token(iss="https://evil.example/")), "issuer is not trusted")


@pytest.mark.parametrize(("alg", "why"), [("ES256", "not accepted"), ("RS256", "not accepted"), ("HS256", "not accepted")])
def test_only_es384_and_rs384(clients: Clients, alg: str, why: str) -> None:
    key = {"ES256": ec.generate_private_key(ec.SECP256R1()), "RS256": clients.rsa_key, "HS256": "a-shared-secret-32-bytes-long!!!"}[alg]
    _refused(clients.post(clients.token(key=key, alg=alg)), why)


def test_audience_must_be_the_url_called(clients: Clients) -> None:
    _refused(clients.post(clients.token(aud=clients.public + "/cds-services/pgx-patient-view")), "Audience")
    _refused(clients.post(clients.token(aud=f"http://127.0.0.1:{clients.port}{URL_PATH}")), "Audience")


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "aud"])
def test_required_claims(clients: Clients, claim: str) -> None:
    _refused(clients.post(clients.token(drop=(claim,))), "")


def test_expired_and_replayed_tokens_are_refused(clients: Clients) -> None:
    past = int(time.time()) - 3600
    _refused(clients.post(clients.token(iat=past - 300, exp=past)), "expired")
    token = clients.token()
    assert clients.post(token).status_code == 200
    _refused(clients.post(token), "replayed")


def test_the_spec_test_vector_verifies_only_with_the_exp_check_off(clients: Clients, tmp_path: Path) -> None:
    if not VECTOR.exists():
        pytest.skip("../shared fixtures absent")
    token = (VECTOR / "token.txt").read_text().strip()
    payload = json.loads((VECTOR / "payload.json").read_text())
    (tmp_path / "spec.json").write_text(json.dumps([{"iss": SPEC_ISS, "jwks_url": "https://fhir-ehr.example.com/jwk_uri",
                                                     "jwks": json.loads((VECTOR / "jwks-public.json").read_text())}]))
    issuers = TrustedIssuers.from_file(tmp_path / "spec.json")
    # exp check off: the signature (ES384, key via the pinned jku), iss and aud verify
    key = issuers.signing_key(SPEC_ISS, jwt.get_unverified_header(token))
    claims = jwt.decode(token, key, algorithms=["ES384"], audience=payload["aud"], options={"verify_exp": False})
    assert claims == payload
    with pytest.raises(TokenError, match="expired"):
        verify_token(token, issuers, audience=payload["aud"], algorithms=["ES384"])
    # and the service, whose URL is the vector's audience, refuses it as expired
    _refused(clients.post(token, "/cds-services/some-service"), "expired")


def test_discovery_needs_a_token_too(clients: Clients) -> None:
    url = f"http://127.0.0.1:{clients.port}/cds-services"
    assert httpx.get(url, timeout=30).status_code == 401
    good = clients.token(aud=clients.public + "/cds-services")
    assert httpx.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=30).status_code == 200


def test_conftest_client_is_trusted_by_the_shared_service(client: httpx.Client, service: Service) -> None:
    response = client.post(URL_PATH, json=BODY, headers=service.cds_headers("pgx-order-sign"))
    assert response.json() == {"cards": []}


def test_a_token_is_accepted_once_across_two_applications_on_one_store(tmp_path: Path) -> None:
    """Two service instances (as two worker processes are) on one SQLite file: a token used at one
    is refused at the other, whichever comes first."""
    first = Clients(tmp_path)
    second_app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'twins.db'}", cds_clients=tmp_path / "cds.json",
                                     public_url=first.public))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(second_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        second = f"http://127.0.0.1:{port}{URL_PATH}"
        token = first.token()
        assert first.post(token).status_code == 200
        _refused(httpx.post(second, json=BODY, headers={"Authorization": f"Bearer {token}"}, timeout=30), "replayed")
        other = first.token()
        assert httpx.post(second, json=BODY, headers={"Authorization": f"Bearer {other}"}, timeout=30).status_code == 200
        _refused(first.post(other), "replayed")
    finally:
        server.should_exit = first.server.should_exit = True
        thread.join(timeout=10)
        first.thread.join(timeout=10)


def test_serve_with_two_workers_refuses_a_replayed_token(tmp_path: Path) -> None:
    """``pgxtwin serve --workers 2`` as a process: a JWT replayed on fresh connections (which either
    worker may accept) is refused every time after its first use."""
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "cds.json").write_text(json.dumps([{"iss": CDS_ISS, "jwks": {"keys": [_jwk(key.public_key(), "cds-1", "ES384")]}}]))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGXTWIN_")}
    env |= {"PGXTWIN_DATABASE_URL": f"sqlite:///{tmp_path / 'twins.db'}", "PGXTWIN_CDS_CLIENTS": str(tmp_path / "cds.json")}
    command = [sys.executable, "-c", "import typer; from pgxtwin.cli_serve import serve; typer.run(serve)",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--workers", "2"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/cds-services"

    def token() -> str:
        now = int(time.time())
        claims = {"iss": CDS_ISS, "sub": "ehr-client", "aud": url, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "cds-1"})

    def get(jwt_: str) -> httpx.Response:  # a new connection each time: the kernel picks the worker
        return httpx.get(url, headers={"Authorization": f"Bearer {jwt_}", "Connection": "close"}, timeout=30)

    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.time() < deadline, "pgxtwin serve --workers 2 did not start"
            try:
                if get(token()).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        for _ in range(3):
            replayed = token()
            assert get(replayed).status_code == 200
            for _ in range(8):
                _refused(get(replayed), "replayed")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

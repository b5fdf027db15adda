"""Bearer tokens on the REST API: nothing without a valid token, SMART scopes, patient-scoped tokens."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import OAUTH_ISS

UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def two_twins(service):
    """Two twins, A and B, made with a user token."""
    import httpx

    ids = (f"auth-a-{uuid.uuid4().hex[:8]}", f"auth-b-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=service.base_url, timeout=30) as c:
        for pid in ids:
            assert c.post("/patients", json={"patient_id": pid}, headers=service.auth()).status_code == 201
    return ids


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _claims(**extra):
    now = int(time.time())
    return {"iss": OAUTH_ISS, "sub": "clinician-1", "aud": "pgxtwin-test", "iat": now, "exp": now + 300,
            "scope": "user/*.read", "jti": str(uuid.uuid4())} | extra


def test_every_rest_endpoint_refuses_a_request_without_a_token(client):
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith(("/patients", "/jobs", "/simulate")):
            continue  # /health, and the FHIR and CDS Hooks routers (tested with them)
        url = path.replace("{patient_id}", "some-patient").replace("{job_id}", UUID)
        for method in operations:
            kwargs = {"content": b"##fileformat=VCFv4.2\n", "headers": {"content-type": "text/plain"}} \
                if path.endswith("/vcf") else ({"json": {}} if method == "post" else {})
            r = client.request(method, url, **kwargs)
            assert r.status_code == 401, f"{method} {path}: {r.status_code}"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["resourceType"] == "OperationOutcome"
            checked += 1
    assert checked >= 15


def test_invalid_tokens_are_401(client, service, two_twins):
    url = f"/patients/{two_twins[0]}"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "garbage": "not.a.jwt",
        "wrong issuer": jwt.encode(_claims(iss="https://evil.example/"), service.oauth_key, algorithm="RS256",
                                   headers={"kid": "oauth-1"}),
        "expired": service.token("user/*.read", ttl_s=-3600),
        "bad signature": jwt.encode(_claims(), other_key, algorithm="RS256", headers={"kid": "oauth-1"}),
        "wrong audience": jwt.encode(_claims(aud="someone-else"), service.oauth_key, algorithm="RS256",
                                     headers={"kid": "oauth-1"}),
        "HS256": jwt.encode(_claims(), "a-shared-secret-of-enough-length-for-hmac", algorithm="HS256"),
    }
    for why, token in refused.items():
        r = client.get(url, headers=_bearer(token))
        assert r.status_code == 401, why
        assert r.json()["issue"][0]["code"] == "login"
    assert client.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert client.get(url, headers=_bearer(service.token("user/*.read"))).status_code == 200


def test_scopes_decide_what_a_token_may_do(client, service, two_twins):
    a = two_twins[0]
    change = {"measurements": [{"covariate": "weight", "value": 70, "unit": "kg"}]}
    read_only = service.auth("user/*.read")
    assert client.post(f"/patients/{a}/covariates", json=change, headers=read_only | {"If-Match": '"0"'}).status_code == 403
    assert client.post("/patients", json={"patient_id": f"x-{uuid.uuid4().hex[:6]}"}, headers=read_only).status_code == 403
    assert client.get(f"/patients/{a}", headers=service.auth("user/Observation.read")).status_code == 403
    assert client.get(f"/patients/{a}", headers=service.auth("openid profile")).status_code == 403
    assert client.get("/patients", headers=service.auth("system/*.read")).status_code == 200
    assert client.get(f"/patients/{a}", headers=service.auth("user/*.rs")).status_code == 200  # SMART v2


def test_a_patient_token_reaches_only_its_patient(client, service, two_twins):
    a, b = two_twins
    mine = service.auth("patient/*.read patient/*.write", patient=a)
    assert client.get(f"/patients/{a}", headers=mine).status_code == 200
    for url in (f"/patients/{b}", f"/patients/{b}/history", f"/patients/{b}/evaluate", f"/patients/{b}/report",
                "/patients/someone-who-does-not-exist"):
        r = client.get(url, headers=mine)
        assert r.status_code == 403, url
        assert r.json()["issue"][0]["code"] == "forbidden"
    listed = client.get("/patients", headers=mine).json()
    assert [item["patient_id"] for item in listed["items"]] == [a]
    change = {"measurements": [{"covariate": "weight", "value": 70, "unit": "kg"}]}
    assert client.post(f"/patients/{b}/covariates", json=change, headers=mine | {"If-Match": '"0"'}).status_code == 403
    assert client.post(f"/patients/{a}/covariates", json=change, headers=mine | {"If-Match": '"0"'}).status_code == 200
    # a patient token without a patient claim reaches nobody
    nobody = service.auth("patient/*.read")
    assert client.get(f"/patients/{a}", headers=nobody).status_code == 403
    assert client.get("/patients", headers=nobody).status_code == 403

    rows = service.app.state.twins.audit_log(a)
    assert any(r.action == "append:covariate_recorded" and r.actor == f"{OAUTH_ISS}|clinician-1" for r in rows)
    assert not any(r.patient_id == b and r.action == "read_state" and r.entry_point.endswith("/history")
                   for r in service.app.state.twins.audit_log(b))

"""Trusted issuers and JWT verification (api/keys.py), with the CDS Hooks 2.0.1 spec's test vector."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pgxtwin.api.keys import ReplayCache, TokenError, TrustedIssuers, verify_token
from pgxtwin.errors import PgxInputError

from .conftest import SHARED, _jwk

VECTOR = SHARED / "fixtures" / "cds-hooks" / "spec-2.0.1" / "jwt"
AUD = "https://cds.example.org/cds-services/some-service"


def _issuers(tmp_path: Path, entries: list[dict]) -> TrustedIssuers:
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(entries))
    return TrustedIssuers.from_file(path)


@pytest.mark.skipif(not VECTOR.is_dir(), reason="../shared/fixtures/cds-hooks is absent")
def test_spec_vector_verifies_without_exp_check_and_fails_with_it(tmp_path: Path) -> None:
    payload = json.loads((VECTOR / "payload.json").read_text())
    header = json.loads((VECTOR / "header.json").read_text())
    issuers = _issuers(tmp_path, [{"iss": payload["iss"], "jwks": json.loads((VECTOR / "jwks-public.json").read_text()),
                                   "jwks_url": header["jku"]}])
    token = (VECTOR / "token.txt").read_text().strip()
    with pytest.raises(TokenError, match="expired"):
        verify_token(token, issuers, audience=AUD, algorithms=["ES384", "RS384"])
    claims = verify_token(token, issuers, audience=AUD, algorithms=["ES384", "RS384"], leeway_s=1e10)
    assert claims["jti"] == payload["jti"]
    # the same token, with its jku not on this issuer's allow-list, is refused
    pinned_only = _issuers(tmp_path, [{"iss": payload["iss"], "jwks": json.loads((VECTOR / "jwks-public.json").read_text())}])
    with pytest.raises(TokenError, match="jku"):
        verify_token(token, pinned_only, audience=AUD, algorithms=["ES384"], leeway_s=1e10)


@pytest.fixture()
def ec_issuer(tmp_path: Path) -> tuple[TrustedIssuers, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    return _issuers(tmp_path, [{"iss": "https://ehr/", "jwks": {"keys": [_jwk(key.public_key(), "k1", "ES384")]}}]), key


def _sign(key, alg: str = "ES384", kid: str = "k1", **claims) -> str:
    now = int(time.time())
    body = {"iss": "https://ehr/", "aud": AUD, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())} | claims
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def test_refusals(ec_issuer) -> None:
    issuers, key = ec_issuer
    ok = dict(audience=AUD, algorithms=["ES384", "RS384"])
    assert verify_token(_sign(key), issuers, **ok)["iss"] == "https://ehr/"
    cases = {
        "aud": _sign(key, aud="https://elsewhere/"),
        "expired": _sign(key, exp=int(time.time()) - 3600),
        "not trusted": _sign(key, iss="https://intruder/"),
        "kid": _sign(key, kid="unknown-kid"),
        "iat": _sign(key, iat=None),
    }
    for reason, token in cases.items():
        with pytest.raises(TokenError):
            verify_token(token, issuers, **ok)
    # another key claiming the same issuer and kid: bad signature
    forged = _sign(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(TokenError, match="[Ss]ignature"):
        verify_token(forged, issuers, **ok)
    # algorithms outside the allowed set (CDS Hooks: ES384/RS384 only), including "none"
    with pytest.raises(TokenError, match="algorithm"):
        verify_token(_sign(ec.generate_private_key(ec.SECP256R1()), alg="ES256"), issuers, **ok)
    unsigned = jwt.encode({"iss": "https://ehr/", "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time())},
                          None, algorithm="none")
    with pytest.raises(TokenError, match="algorithm"):
        verify_token(unsigned, issuers, **ok)
    with pytest.raises(TokenError, match="malformed"):
        verify_token("not.a.jwt", issuers, **ok)


def test_replayed_jti_is_refused(ec_issuer) -> None:
    issuers, key = ec_issuer
    cache = ReplayCache()
    token = _sign(key)
    verify_token(token, issuers, audience=AUD, algorithms=["ES384"], replay=cache)
    with pytest.raises(TokenError, match="replayed"):
        verify_token(token, issuers, audience=AUD, algorithms=["ES384"], replay=cache)
    with pytest.raises(TokenError, match="jti"):
        verify_token(_sign(key, jti=None), issuers, audience=AUD, algorithms=["ES384"], replay=cache)


def test_rsa_issuer(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuers = _issuers(tmp_path, [{"iss": "https://ehr/", "jwks": {"keys": [_jwk(key.public_key(), "k1", "RS384")]}}])
    assert verify_token(_sign(key, alg="RS384"), issuers, audience=AUD, algorithms=["ES384", "RS384"])["aud"] == AUD


@pytest.mark.parametrize("content, reason", [
    ("{not json", "not a JSON"),
    ('[{"jwks": {"keys": []}}]', r"\[0\]\.iss"),
    ('[{"iss": "https://x/"}]', "jwks"),
    ('[{"iss": "https://x/", "jwks_url": "http://plain/"}]', "https://"),
    ('[{"iss": "https://x/", "jwks": {"nokeys": 1}}]', "keys"),
])
def test_bad_issuer_files_name_the_file_and_field(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "clients.json"
    path.write_text(content)
    with pytest.raises(PgxInputError, match=reason) as info:
        TrustedIssuers.from_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(PgxInputError, match="not found"):
        TrustedIssuers.from_file(tmp_path / "absent.json")

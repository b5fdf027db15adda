"""Body-size and rate limits on a real server (api/limits.py)."""

from __future__ import annotations


import httpx
import pytest

from pgxtwin.api.limits import RateLimit

from .conftest import start_service


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory):
    svc, server, thread = start_service(tmp_path_factory.mktemp("tight"), max_body_bytes=2048, rate_limit_per_minute=30)
    yield svc
    server.should_exit = True
    thread.join(timeout=10)


def test_huge_body_is_413_with_operation_outcome(tight) -> None:
    with httpx.Client(base_url=tight.base_url) as c:
        r = c.post("/fhir/Bundle", content=b"{" + b" " * 10_000 + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert r.json()["resourceType"] == "OperationOutcome"
        r = c.post("/cds-services/anything", content=b"x" * 10_000)
        assert r.status_code == 413 and "error" in r.json()


def test_rate_limit_answers_429_with_retry_after(tight) -> None:
    with httpx.Client(base_url=tight.base_url) as c:
        statuses = [c.get("/openapi.json").status_code for _ in range(40)]
    assert statuses.count(429) >= 1
    assert statuses[:25] == [200] * 25


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimit(lambda *a: None, per_minute=60, clock=lambda: now[0])
    assert all(limiter._take("c") == 0 for _ in range(60))
    assert limiter._take("c") > 0
    now[0] += 1.0  # one token per second
    assert limiter._take("c") == 0
    assert limiter._take("other") == 0  # per client


def test_oauth_issuers_without_an_audience_refuse_to_start(tmp_path) -> None:
    from pgxtwin.api.app import create_app
    from pgxtwin.api.settings import Settings
    from pgxtwin.errors import PgxInputError

    (tmp_path / "issuers.json").write_text('[{"iss": "https://auth/", "jwks": {"keys": []}}]')
    with pytest.raises(PgxInputError, match="PGXTWIN_OAUTH_AUDIENCE"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 't.db'}", oauth_issuers=tmp_path / "issuers.json"))

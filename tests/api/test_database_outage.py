"""PostgreSQL goes away under a running service: 503 with an OperationOutcome, no partial write,
and the service recovers by itself when the database returns."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Service, start_service

URL = os.environ.get("PGXTWIN_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL or shutil.which("psql") is None or os.geteuid() != 0,
    reason="needs PGXTWIN_TEST_POSTGRES_URL, psql and root (to switch connections off as the postgres superuser)",
)


def _superuser(sql: str) -> None:
    subprocess.run(["su", "postgres", "-c", f'psql -qc "{sql}"'], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc, server, thread = start_service(tmp_path_factory.mktemp("pg"), database_url=URL)
    yield svc
    server.should_exit = True
    thread.join(timeout=10)


def test_outage_is_503_and_the_service_recovers(pg_service: Service) -> None:
    database = URL.rsplit("/", 1)[1]
    headers = pg_service.auth("user/*.read user/*.write")
    patient = f"outage-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=pg_service.base_url, timeout=30) as c:
        created = c.post("/patients", json={"patient_id": patient, "demographics": {"sex": "F", "age_years": 50}}, headers=headers)
        assert created.status_code == 201, created.text
        before = c.get(f"/patients/{patient}/history", headers=headers).json()
        try:
            _superuser(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            _superuser(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()")
            down = c.get(f"/patients/{patient}", headers=headers)
            assert down.status_code == 503
            assert down.json()["resourceType"] == "OperationOutcome"
            assert "Retry-After" in down.headers
            write = c.post(f"/patients/{patient}/covariates", json={"measurements": [{"covariate": "weight", "value": 70, "unit": "kg"}]}, headers=headers | {"If-Match": created.headers["ETag"]})
            assert write.status_code == 503
        finally:
            _superuser(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        # back: reads work again and the refused write left nothing behind
        assert c.get(f"/patients/{patient}", headers=headers).status_code == 200
        assert c.get(f"/patients/{patient}/history", headers=headers).json() == before

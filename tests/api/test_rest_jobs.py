"""VCF upload as a background job: the demo VCF to ``succeeded`` (genotype in the twin), garbage to
``failed`` with a one-line reason, size and type limits, idempotent uploads, access to jobs."""

from __future__ import annotations

import gzip
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .conftest import OAUTH_ISS, start_service
from .test_rest import api_spec, conforms  # noqa: F401 - api_spec is a fixture

DEMO_VCF = Path(__file__).resolve().parents[2] / "examples" / "demo_patient.vcf"
TEXT = {"content-type": "text/plain"}


def _twin(client, service) -> str:
    pid = f"vcf-{uuid.uuid4().hex[:10]}"
    assert client.post("/patients", json={"patient_id": pid}, headers=service.auth()).status_code == 201
    return pid


def _finished(client, service, location: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(location, headers=service.auth("user/*.read")).json()
        assert job["status"] in ("queued", "running", "succeeded", "failed")
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_demo_vcf_upload_runs_to_succeeded_and_sets_the_genotype(client, service, api_spec):
    pid = _twin(client, service)
    accepted = conforms(api_spec, "/patients/{patient_id}/vcf", client.post(
        f"/patients/{pid}/vcf", content=DEMO_VCF.read_bytes(), headers=service.auth() | TEXT))
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    assert location == f"/jobs/{accepted.json()['id']}" and accepted.json()["status"] in ("queued", "running", "succeeded")

    job = _finished(client, service, location)
    assert job["status"] == "succeeded", job
    conforms(api_spec, "/jobs/{job_id}", client.get(location, headers=service.auth()))
    assert job["result"]["version"] == 1 and job["result"]["sample"] == "DEMO-001"
    assert "CYP2C19" in job["result"]["genes_called"]
    twin = client.get(f"/patients/{pid}", headers=service.auth()).json()
    assert twin["version"] == 1
    assert twin["phenotypes"]["CYP2C19"]["phenotype"] != "n/a"
    assert twin["state"]["genotype"]["call_result"]["source"] == f"upload (job {job['id']})"

    rows = service.app.state.twins.audit_log(pid)
    actions = {(r.action, r.entry_point) for r in rows if r.actor == f"{OAUTH_ISS}|clinician-1"}
    assert ("upload_vcf", "api:POST /patients/{patient_id}/vcf") in actions
    assert ("append:genotype_set", "api:POST /patients/{patient_id}/vcf") in actions
    assert ("read_job", "api:GET /jobs/{job_id}") in actions


def test_garbage_upload_fails_with_a_one_line_reason(client, service):
    pid = _twin(client, service)
    accepted = client.post(f"/patients/{pid}/vcf", content=b"this is not a VCF\nat all\n", headers=service.auth() | TEXT)
    assert accepted.status_code == 202
    job = _finished(client, service, accepted.headers["location"])
    assert job["status"] == "failed" and job["result"] is None
    assert "not a VCF" in job["error"] and "\n" not in job["error"]
    assert "/tmp" not in job["error"] and "pgxtwin-upload" not in job["error"]  # no server paths
    assert client.get(f"/patients/{pid}", headers=service.auth()).json()["version"] == 0


def test_upload_conditions_type_gzip_and_idempotency(client, service):
    pid = _twin(client, service)
    body = DEMO_VCF.read_bytes()
    stale = client.post(f"/patients/{pid}/vcf", content=body, headers=service.auth() | TEXT | {"If-Match": '"5"'})
    assert stale.status_code == 412
    assert client.post(f"/patients/{pid}/vcf", content=body,
                       headers=service.auth() | {"content-type": "application/json"}).status_code == 415
    assert client.post(f"/patients/{pid}/vcf", content=b"", headers=service.auth() | TEXT).status_code == 400
    assert client.post("/patients/no-such-twin/vcf", content=body, headers=service.auth() | TEXT).status_code == 404
    assert client.post(f"/patients/{pid}/vcf", content=body, params={"assembly": "hg19"},
                       headers=service.auth() | TEXT).status_code == 400

    keyed = service.auth() | {"content-type": "application/gzip", "Idempotency-Key": f"upload-{pid}"}
    packed = gzip.compress(body)
    first = client.post(f"/patients/{pid}/vcf", content=packed, headers=keyed)
    again = client.post(f"/patients/{pid}/vcf", content=packed, headers=keyed)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert client.post(f"/patients/{pid}/vcf", content=body, headers=keyed).status_code == 422
    assert _finished(client, service, first.headers["location"])["status"] == "succeeded"
    assert client.get(f"/patients/{pid}", headers=service.auth()).json()["version"] == 1  # one genotype event


def test_jobs_are_readable_only_with_access_to_their_patient(client, service):
    pid, other = _twin(client, service), _twin(client, service)
    accepted = client.post(f"/patients/{pid}/vcf", content=b"nope\n", headers=service.auth() | TEXT)
    location = accepted.headers["location"]
    assert client.get(location).status_code == 401
    assert client.get(location, headers=service.auth("patient/*.read", patient=other)).status_code == 403
    assert client.get(location, headers=service.auth("patient/*.read", patient=pid)).status_code == 200
    assert client.post(f"/patients/{other}/vcf", content=b"nope\n",
                       headers=service.auth("patient/*.write", patient=pid) | TEXT).status_code == 403
    assert client.get(f"/jobs/{uuid.uuid4()}", headers=service.auth()).status_code == 404
    assert client.get("/jobs/not-a-job-id", headers=service.auth()).status_code == 400
    _finished(client, service, location)


@pytest.fixture(scope="module")
def small_upload_service(tmp_path_factory):
    svc, server, thread = start_service(tmp_path_factory.mktemp("small"), max_vcf_bytes=4096)
    yield svc
    server.should_exit = True
    thread.join(timeout=10)


def test_an_upload_over_the_limit_is_413(small_upload_service):
    svc = small_upload_service
    with httpx.Client(base_url=svc.base_url, timeout=30) as c:
        assert c.post("/patients", json={"patient_id": "big-vcf"}, headers=svc.auth()).status_code == 201
        body = DEMO_VCF.read_bytes()
        assert len(body) > 4096
        declared = c.post("/patients/big-vcf/vcf", content=body, headers=svc.auth() | TEXT)
        assert declared.status_code == 413 and declared.json()["resourceType"] == "OperationOutcome"

        def chunks():  # no Content-Length: the limit is found while streaming
            for k in range(0, len(body), 1024):
                yield body[k:k + 1024]

        streamed = c.post("/patients/big-vcf/vcf", content=chunks(), headers=svc.auth() | TEXT)
        assert streamed.status_code == 413
        assert c.get("/patients/big-vcf", headers=svc.auth()).json()["version"] == 0


def test_shutdown_leaves_no_job_queued_or_running_and_no_upload_behind(tmp_path):
    from pgxtwin.api.jobs import VCF_JOB, JobRunner
    from pgxtwin.store.repository import TwinStore
    from pgxtwin.store.service import ServiceStore

    with TwinStore(f"sqlite:///{tmp_path / 'jobs.db'}", actor="test") as twins:
        twins.create_twin("pool-1")
        service = ServiceStore(twins)
        runner = JobRunner(twins, service, workers=1)
        jobs, uploads = [], []
        for k in range(4):
            upload = tmp_path / f"upload-{k}.vcf"
            upload.write_bytes(DEMO_VCF.read_bytes())
            job = service.create_job(VCF_JOB, actor="test", patient_id="pool-1")
            runner.submit_vcf(job, upload, sample=None, assembly="GRCh38", entry_point="api:test")
            jobs.append(job.id)
            uploads.append(upload)
        runner.shutdown()
        outcomes = [service.job(job_id) for job_id in jobs]
        assert all(j.status in ("succeeded", "failed") for j in outcomes)
        assert all(j.status == "succeeded" or "service stopped" in j.error for j in outcomes)
        assert not any(u.exists() for u in uploads)
        succeeded = sum(j.status == "succeeded" for j in outcomes)
        assert twins.current_version("pool-1") == succeeded  # one genotype event per job that ran

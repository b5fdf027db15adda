"""Service records beside the twins: idempotent responses, jobs, CDS cards and feedback."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pgxtwin.store import TwinStore
from pgxtwin.store.service import ServiceStore

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("PGXTWIN_TEST_POSTGRES_URL") else [])


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> ServiceStore:
    if request.param == "sqlite":
        twins = TwinStore(f"sqlite:///{tmp_path / 'twins.db'}")
    else:
        twins = TwinStore(os.environ["PGXTWIN_TEST_POSTGRES_URL"])
    yield ServiceStore(twins)
    twins.close()


def test_first_idempotent_response_wins(service: ServiceStore) -> None:
    key = f"key-{datetime.now().timestamp()}"
    assert service.idempotent_response("client-a", key) is None
    first = service.save_idempotent_response("client-a", key, "hash-1", 201, {"version": 1}, {"etag": '"1"'})
    again = service.save_idempotent_response("client-a", key, "hash-2", 201, {"version": 2}, {"etag": '"2"'})
    assert again == first
    assert service.idempotent_response("client-a", key).body == {"version": 1}
    # keys are per client
    assert service.idempotent_response("client-b", key) is None


def test_job_lifecycle(service: ServiceStore) -> None:
    job = service.create_job("call_vcf", actor="someone", patient_id="p-1")
    assert service.job(job.id).status == "queued"
    service.update_job(job.id, "running")
    service.update_job(job.id, "failed", error="upload.vcf: not a VCF")
    stored = service.job(job.id)
    assert (stored.status, stored.error, stored.patient_id) == ("failed", "upload.vcf: not a VCF", "p-1")
    assert stored.updated_at >= stored.created_at
    with pytest.raises(ValueError):
        service.update_job(job.id, "exploded")
    assert service.job("no-such-job") is None


def test_feedback_is_idempotent_and_summarised_per_rule(service: ServiceStore) -> None:
    stamp = datetime.now(timezone.utc).timestamp()
    rule = f"clopidogrel:CYP2C19:Poor Metabolizer:{stamp}"
    service.record_card(f"card-1-{stamp}", "pgx-order-sign", rule, "p-1")
    service.record_card(f"card-2-{stamp}", "pgx-order-sign", rule, "p-2")
    at = datetime.now(timezone.utc)
    assert service.record_feedback(service_id="pgx-order-sign", card_uuid=f"card-1-{stamp}", outcome="overridden",
                                   outcome_at=at, client="ehr", override_reason={"reason": {"code": "x"}})
    # the EHR retries the same feedback: stored once
    assert not service.record_feedback(service_id="pgx-order-sign", card_uuid=f"card-1-{stamp}", outcome="overridden",
                                       outcome_at=at, client="ehr")
    assert service.record_feedback(service_id="pgx-order-sign", card_uuid=f"card-2-{stamp}", outcome="accepted",
                                   outcome_at=at + timedelta(seconds=1), client="ehr")
    summary = {s.rule: s for s in service.feedback_summary()}[rule]
    assert (summary.accepted, summary.overridden, summary.override_rate) == (1, 1, 0.5)

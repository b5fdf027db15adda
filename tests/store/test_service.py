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


def test_a_token_is_claimed_once_until_it_expires(service: ServiceStore) -> None:
    now = datetime.now(timezone.utc)
    jti = f"jti-{now.timestamp()}"
    assert service.claim_token("https://ehr.example/", jti, now + timedelta(minutes=5)) is True
    assert service.claim_token("https://ehr.example/", jti, now + timedelta(minutes=5)) is False
    # the jti is per issuer
    assert service.claim_token("https://other-ehr.example/", jti, now + timedelta(minutes=5)) is True
    # within one batch, the second of two equal tokens is the replay
    assert service.claim_tokens([("https://ehr.example/", jti + "-b", now + timedelta(minutes=5))] * 2) == [True, False]
    # an expired claim no longer holds its jti
    assert service.claim_token("https://ehr.example/", jti + "-c", now - timedelta(seconds=1)) is True
    assert service.claim_token("https://ehr.example/", jti + "-c", now + timedelta(minutes=5)) is True
    assert service.claim_token("https://ehr.example/", jti + "-c", now + timedelta(minutes=5)) is False


def test_claims_hold_across_store_instances_and_expired_rows_are_pruned(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from pgxtwin.store.models import SeenToken

    url = f"sqlite:///{tmp_path / 'twins.db'}"
    now = datetime.now(timezone.utc)
    with TwinStore(url) as a_twins, TwinStore(url) as b_twins:
        a, b = ServiceStore(a_twins), ServiceStore(b_twins)
        assert a.claim_tokens([("iss", f"old-{i}", now - timedelta(minutes=1)) for i in range(3)]) == [True] * 3
        assert a.claim_token("iss", "t-1", now + timedelta(minutes=5)) is True
        assert b.claim_token("iss", "t-1", now + timedelta(minutes=5)) is False  # seen by the other instance
        # the expired rows were pruned (on a process's first claim, then every PRUNE_EVERY_S); the live one stays
        with b.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(SeenToken)).scalar_one() == 1


def test_overlong_token_ids_are_refused(service: ServiceStore) -> None:
    with pytest.raises(ValueError, match="jti"):
        service.claim_token("iss", "x" * 256, datetime.now(timezone.utc))


def test_concurrent_claims_of_one_token_in_the_group_commit_have_one_winner(tmp_path: Path) -> None:
    """The CDS path claims through the recorder's group commit: of many threads presenting the same
    jti at once (batched or not), exactly one wins; distinct jtis all win."""
    import threading

    from pgxtwin.store.recorder import claim_token

    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    with TwinStore(f"sqlite:///{tmp_path / 'twins.db'}") as twins:
        results: list[bool] = []
        lock = threading.Lock()

        def claim(jti: str) -> None:
            won = claim_token(twins, "https://ehr.example/", jti, expires)
            with lock:
                results.append(won)

        threads = [threading.Thread(target=claim, args=("same" if i % 2 else f"own-{i}",)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [False] * 7 + [True] * 9  # 8 own jtis + 1 of the 8 "same"
        with pytest.raises(ValueError, match="jti"):
            claim_token(twins, "https://ehr.example/", "x" * 256, expires)

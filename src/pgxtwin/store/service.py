"""Service-side records of the twin store: idempotent write responses, background jobs, CDS Hooks
cards and their feedback.  They share the twin store's engine (and so its transactions and
migrations); none of them is patient state, which lives only in the append-only events.
"""

from __future__ import annotations

import time
import uuid
from functools import lru_cache
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from .engine import WRITE
from .models import CdsCard, CdsFeedback, IdempotentResponse, Job, SeenToken
from .repository import TwinStore

__all__ = ["FeedbackSummary", "JobRecord", "ServiceStore", "StoredResponse", "check_token_id", "claim_tokens"]

JOB_STATES = ("queued", "running", "succeeded", "failed")
PRUNE_EVERY_S = 60.0  # expired seen-token rows are deleted at most this often (per process)
MAX_ISS, MAX_JTI = 1000, 255  # the seen_tokens columns' width


@dataclass(frozen=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    patient_id: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    actor: str
    result: Any
    error: str | None


@dataclass(frozen=True)
class FeedbackSummary:
    """Outcomes of the cards of one rule: how often clinicians accepted or overrode them."""

    rule: str
    accepted: int
    overridden: int

    @property
    def override_rate(self) -> float | None:
        total = self.accepted + self.overridden
        return None if total == 0 else self.overridden / total


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ServiceStore:
    """Records kept beside the twins, in the same database as ``twins``."""

    def __init__(self, twins: TwinStore) -> None:
        self.engine = twins.engine
        self._pruned_at = 0.0  # time.monotonic() of the last deletion of expired seen tokens

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # --- idempotency keys
    def idempotent_response(self, client: str, key: str) -> StoredResponse | None:
        """The response first given to ``client``'s write with ``key``, if any."""
        r = IdempotentResponse
        client, key = client[:200], key[:200]  # the columns' width
        with self._read() as conn:
            row = conn.execute(
                select(r.request_hash, r.status_code, r.body, r.headers).where(r.client == client, r.key == key)
            ).first()
        return None if row is None else StoredResponse(row.request_hash, row.status_code, row.body, dict(row.headers))

    def save_idempotent_response(self, client: str, key: str, request_hash: str, status_code: int, body: Any,
                                 headers: dict[str, str]) -> StoredResponse:
        """Keep the first response for (client, key); a concurrent duplicate gets the one that won."""
        client, key = client[:200], key[:200]
        try:
            with self._write() as conn:
                conn.execute(insert(IdempotentResponse).values(
                    client=client, key=key, request_hash=request_hash, status_code=status_code, body=body,
                    headers=headers, created_at=_now(),
                ))
        except IntegrityError:
            stored = self.idempotent_response(client, key)
            assert stored is not None  # the unique constraint fired, so the row exists
            return stored
        return StoredResponse(request_hash, status_code, body, headers)

    # --- background jobs
    def create_job(self, kind: str, *, actor: str, patient_id: str | None = None) -> JobRecord:
        now = _now()
        job_id = str(uuid.uuid4())
        with self._write() as conn:
            conn.execute(insert(Job).values(id=job_id, kind=kind, patient_id=patient_id, status="queued",
                                            created_at=now, updated_at=now, actor=actor[:200]))
        return JobRecord(job_id, kind, patient_id, "queued", now, now, actor, None, None)

    def update_job(self, job_id: str, status: str, *, result: Any = None, error: str | None = None) -> None:
        if status not in JOB_STATES:
            raise ValueError(f"job status must be one of {JOB_STATES}, not {status!r}")
        with self._write() as conn:
            conn.execute(update(Job).where(Job.id == job_id).values(
                status=status, result=result, error=None if error is None else error[:2000], updated_at=_now()))

    def job(self, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(
                select(Job.id, Job.kind, Job.patient_id, Job.status, Job.created_at, Job.updated_at, Job.actor,
                       Job.result, Job.error).where(Job.id == job_id)
            ).first()
        return None if row is None else JobRecord(*row)

    # --- CDS Hooks cards and feedback
    def record_card(self, card_uuid: str, service_id: str, rule: str, patient_id: str | None) -> None:
        with self._write() as conn:
            conn.execute(insert(CdsCard).values(card_uuid=card_uuid, service_id=service_id, rule=rule,
                                                patient_id=patient_id, created_at=_now()))

    def card_rule(self, card_uuid: str) -> str | None:
        with self._read() as conn:
            return conn.execute(select(CdsCard.rule).where(CdsCard.card_uuid == card_uuid)).scalar()

    def record_feedback(self, *, service_id: str, card_uuid: str, outcome: str, outcome_at: datetime, client: str,
                        accepted_suggestions: Any = None, override_reason: Any = None) -> bool:
        """Store one feedback item; False when the same item was stored before (retries are harmless)."""
        rule = self.card_rule(card_uuid)
        try:
            with self._write() as conn:
                conn.execute(insert(CdsFeedback).values(
                    service_id=service_id, card_uuid=card_uuid, outcome=outcome, outcome_at=outcome_at, rule=rule,
                    accepted_suggestions=accepted_suggestions, override_reason=override_reason, client=client[:200],
                    received_at=_now(),
                ))
        except IntegrityError:
            return False
        return True

    def feedback_summary(self) -> list[FeedbackSummary]:
        """Accepted and overridden counts per rule (cards of unknown rule under ``"unknown"``)."""
        f = CdsFeedback
        rule = func.coalesce(f.rule, "unknown")
        with self._read() as conn:
            rows = conn.execute(select(rule, f.outcome, func.count()).group_by(rule, f.outcome)).all()
        counts: dict[str, dict[str, int]] = {}
        for name, outcome, n in rows:
            counts.setdefault(name, {"accepted": 0, "overridden": 0})[outcome] = int(n)
        return [FeedbackSummary(name, c["accepted"], c["overridden"]) for name, c in sorted(counts.items())]

    # --- CDS client JWTs seen (replay refusal across service processes)
    def claim_token(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record the token (``iss``, ``jti``) as used until ``expires_at``; False when it was used
        before and has not expired (a replay).  See :meth:`claim_tokens`."""
        return self.claim_tokens([(iss, jti, expires_at)])[0]

    def claim_tokens(self, tokens: list[tuple[str, str, datetime]]) -> list[bool]:
        """Claim several tokens in one transaction (one commit): per token, True when this call
        claimed it, False when it is held by an earlier claim (or an earlier entry of ``tokens``).
        See :func:`claim_tokens`; expired rows are deleted every ``PRUNE_EVERY_S`` (per instance)."""
        prune = time.monotonic() - self._pruned_at > PRUNE_EVERY_S
        with self._write() as conn:
            claimed = claim_tokens(conn, tokens, prune=prune)
        if prune:
            self._pruned_at = time.monotonic()
        return claimed


def claim_tokens(conn: Connection, tokens: list[tuple[str, str, datetime]], *, prune: bool = False) -> list[bool]:
    """In ``conn``'s write transaction, claim each (iss, jti, expires_at): True when claimed here,
    False when an unexpired claim holds it (a replay).

    A row whose token has expired is taken over (the ``jti`` may come again with a new token);
    ``prune`` also deletes the expired rows.  ``iss`` and ``jti`` longer than the columns raise
    ``ValueError`` before anything is written (truncating could merge two tokens).
    """
    for iss, jti, _ in tokens:
        check_token_id(iss, jti)
    now = _now()
    stmt = _claim_statement(conn.dialect.name)
    # a row comes back when inserted or taken over (rowcount is -1 for this statement on psycopg)
    claimed = [conn.execute(stmt, {"iss": iss, "jti": jti, "expires_at": expires_at, "now": now}).first() is not None
               for iss, jti, expires_at in tokens]
    if prune:
        conn.execute(delete(SeenToken).where(SeenToken.expires_at < now))
    return claimed


@lru_cache(maxsize=2)
def _claim_statement(dialect_name: str) -> Insert:
    """INSERT of a (iss, jti, expires_at) claim that takes over an expired row, RETURNING a row when
    claimed; built once per dialect (building it costs more than running it)."""
    table = SeenToken.__table__
    dialect = sqlite if dialect_name == "sqlite" else postgresql
    stmt = dialect.insert(table).values(iss=bindparam("iss"), jti=bindparam("jti"), expires_at=bindparam("expires_at"))
    return stmt.on_conflict_do_update(
        index_elements=["iss", "jti"], set_={"expires_at": stmt.excluded.expires_at},
        where=table.c.expires_at < bindparam("now", type_=table.c.expires_at.type),
    ).returning(table.c.jti)


def check_token_id(iss: str, jti: str) -> None:
    """``ValueError`` when ``iss`` or ``jti`` is wider than its ``seen_tokens`` column."""
    if len(iss) > MAX_ISS or len(jti) > MAX_JTI:
        raise ValueError(f"token issuer over {MAX_ISS} or jti over {MAX_JTI} characters")

"""SQLAlchemy 2 tables of the twin store (the schema itself is created by the Alembic migrations).

Append-only: ``twin_events`` and ``audit_log`` rows are never updated or deleted (database triggers
refuse it); in ``twins`` only ``current_version`` moves, by one, in the transaction that inserts
the event of that version.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# BIGINT primary keys on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY
BigId = BigInteger().with_variant(Integer(), "sqlite")
Payload = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC times")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Twin(Base):
    __tablename__ = "twins"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(64), nullable=False)
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)

    __table_args__ = (
        UniqueConstraint("patient_id", name="uq_twins_patient_id"),
        CheckConstraint("current_version >= 0", name="ck_twins_version_nonneg"),
    )


class TwinEvent(Base):
    __tablename__ = "twin_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    twin_id: Mapped[int] = mapped_column(ForeignKey("twins.id", ondelete="RESTRICT"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(Payload, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    entry_point: Mapped[str] = mapped_column(String(100), nullable=False)

    __table_args__ = (
        UniqueConstraint("twin_id", "version", name="uq_twin_events_twin_version"),
        CheckConstraint("version >= 1", name="ck_twin_events_version_positive"),
    )


class AuditEntry(Base):
    """Who did what to which patient's twin, when, through which entry point, and the outcome."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    entry_point: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_audit_log_patient_at", "patient_id", "at"),)


class IdempotentResponse(Base):
    """The first response to a write sent with an ``Idempotency-Key``, replayed to its retries."""

    __tablename__ = "idempotent_responses"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(200), nullable=False)
    key: Mapped[str] = mapped_column(String(200), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    body: Mapped[Any] = mapped_column(Payload, nullable=True)
    headers: Mapped[dict[str, Any]] = mapped_column(Payload, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("client", "key", name="uq_idempotent_client_key"),)


class Job(Base):
    """A background job (e.g. calling an uploaded VCF) and its outcome."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    result: Mapped[Any] = mapped_column(Payload, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_jobs_status"),)


class CdsFeedback(Base):
    """CDS Hooks feedback: whether a card (of a rule) was accepted or overridden, and why."""

    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(100), nullable=False)
    card_uuid: Mapped[str] = mapped_column(String(100), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    outcome_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    rule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    accepted_suggestions: Mapped[Any] = mapped_column(Payload, nullable=True)
    override_reason: Mapped[Any] = mapped_column(Payload, nullable=True)
    client: Mapped[str] = mapped_column(String(200), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)

    __table_args__ = (
        UniqueConstraint("service_id", "card_uuid", "outcome", "outcome_at", name="uq_cds_feedback_once"),
        CheckConstraint("outcome IN ('accepted', 'overridden')", name="ck_cds_feedback_outcome"),
    )


class CdsCard(Base):
    """Which rule produced each card we returned, so feedback (which names only the card) maps to a rule."""

    __tablename__ = "cds_cards"

    card_uuid: Mapped[str] = mapped_column(String(100), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(100), nullable=False)
    rule: Mapped[str] = mapped_column(String(200), nullable=False)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class SeenToken(Base):
    """A CDS client JWT already accepted: its (issuer, jti) until the token expires (replay refusal
    shared by every service process)."""

    __tablename__ = "seen_tokens"

    iss: Mapped[str] = mapped_column(String(1000), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)

"""Twins, their append-only events and the audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from pgxtwin.store.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PAYLOAD = sa.JSON().with_variant(JSONB(), "postgresql")

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER twin_events_no_update BEFORE UPDATE ON twin_events
       BEGIN SELECT RAISE(ABORT, 'twin_events is append-only: rows are never updated'); END""",
    """CREATE TRIGGER twin_events_no_delete BEFORE DELETE ON twin_events
       BEGIN SELECT RAISE(ABORT, 'twin_events is append-only: rows are never deleted'); END""",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: rows are never updated'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: rows are never deleted'); END""",
    """CREATE TRIGGER twins_no_delete BEFORE DELETE ON twins
       BEGIN SELECT RAISE(ABORT, 'twins are never deleted'); END""",
    """CREATE TRIGGER twins_version_advances BEFORE UPDATE ON twins
       WHEN NEW.id != OLD.id OR NEW.patient_id != OLD.patient_id OR NEW.created_at != OLD.created_at
            OR NEW.created_by != OLD.created_by OR NEW.current_version != OLD.current_version + 1
       BEGIN SELECT RAISE(ABORT, 'twins: only current_version changes, by one per appended event'); END""",
]

_POSTGRES_TRIGGERS = [
    """CREATE FUNCTION pgxtwin_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION '% is append-only: rows are never updated or deleted', TG_TABLE_NAME; END $$""",
    """CREATE FUNCTION pgxtwin_twins_guard() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'twins are never deleted'; END IF;
         IF NEW.id <> OLD.id OR NEW.patient_id <> OLD.patient_id OR NEW.created_at <> OLD.created_at
            OR NEW.created_by <> OLD.created_by OR NEW.current_version <> OLD.current_version + 1 THEN
           RAISE EXCEPTION 'twins: only current_version changes, by one per appended event';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER twin_events_append_only BEFORE UPDATE OR DELETE ON twin_events
       FOR EACH ROW EXECUTE FUNCTION pgxtwin_append_only()""",
    """CREATE TRIGGER twin_events_no_truncate BEFORE TRUNCATE ON twin_events
       FOR EACH STATEMENT EXECUTE FUNCTION pgxtwin_append_only()""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION pgxtwin_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION pgxtwin_append_only()""",
    """CREATE TRIGGER twins_guard BEFORE UPDATE OR DELETE ON twins
       FOR EACH ROW EXECUTE FUNCTION pgxtwin_twins_guard()""",
]


def upgrade() -> None:
    op.create_table(
        "twins",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("patient_id", name="uq_twins_patient_id"),
        sa.CheckConstraint("current_version >= 0", name="ck_twins_version_nonneg"),
    )
    op.create_table(
        "twin_events",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("twin_id", _BIG_ID, sa.ForeignKey("twins.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", _PAYLOAD, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("entry_point", sa.String(100), nullable=False),
        sa.UniqueConstraint("twin_id", "version", name="uq_twin_events_twin_version"),
        sa.CheckConstraint("version >= 1", name="ck_twin_events_version_positive"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entry_point", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_log_patient_at", "audit_log", ["patient_id", "at"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": _SQLITE_TRIGGERS, "postgresql": _POSTGRES_TRIGGERS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the twin store is append-only: its first revision is not downgraded")

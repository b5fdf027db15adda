"""What a CDS call writes, with group commit: the claim of its client JWT's ``jti``, the audit entry
of its twin read and its cards' rules, in one transaction.

Under load, one write transaction per record serialises every call on the database's commit
(SQLite: an fsync each, ``synchronous=FULL``; with concurrent writers also the busy-handler's
sleeps).  Here the calls waiting to write share one transaction: the first waiting call writes the
records of every call queued so far, the others wait for that commit, so a call still returns only
after its records are durable.  The rows are those ``TwinStore.state_at`` (audit entry
``read_state``) and ``ServiceStore.record_card`` write one by one, and the ``seen_tokens`` claims
of :func:`~pgxtwin.store.service.claim_tokens`.  A service call claims its token in the same
commit as its cards, before it answers: when the claim is lost (the token was replayed to another
process) the call's cards are not recorded, its audit entry says it was refused, and the call
answers 401 instead of its cards.  One group commit serves every recorder and claimer of an
engine, so a process has one stream of write transactions, and a call waits for one commit.

The twin read itself: a twin at a version never changes, so a state read once (through the audited
``TwinStore.state_at``, which records that first read's audit entry itself, as it reads) is kept
per (patient, version); later reads check the current version and record their audit entry here.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine

from .engine import WRITE
from .models import AuditEntry, CdsCard
from .repository import TwinStore
from .service import PRUNE_EVERY_S, check_token_id, claim_tokens
from ..twin.state import TwinState

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy handler alone orders the processes
    fcntl = None  # type: ignore[assignment]

__all__ = ["Claim", "GroupCommit", "Recorder", "Records", "claim_token", "group_commit"]

Claim = tuple[str, str, datetime]  # (iss, jti, expires_at) of a client JWT
REPLAYED = "CDS client JWT replayed (jti seen before)"
_AUDIT = AuditEntry.__table__
_CARDS = CdsCard.__table__


@dataclass
class Records:
    """What one call writes: the claims of its client JWT, its audit rows and its card rows."""

    claims: list[Claim] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    cards: list[dict[str, Any]] = field(default_factory=list)


# write(batch) -> per call of the batch, whether all its claims were won
Write = Callable[[list[Records]], list[bool]]


@dataclass
class _Ticket:
    records: Records
    won: bool = False
    done: bool = False
    error: BaseException | None = field(default=None)


class GroupCommit:
    """Leader/follower group commit: ``submit`` returns once its rows are committed (or raises the
    batch's error), with whether its token claims were won."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._busy = False

    def submit(self, records: Records) -> bool:
        ticket = _Ticket(records)
        with self._cond:
            self._queue.append(ticket)
            while self._busy and not ticket.done:
                self._cond.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return ticket.won
            batch, self._queue, self._busy = self._queue, [], True
        error: BaseException | None = None
        won: list[bool] = []
        try:
            won = self._write([t.records for t in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every call of the batch, then re-raised
            error = exc
        with self._cond:
            for i, t in enumerate(batch):
                t.done, t.error = True, error
                if error is None:
                    t.won = won[i]
            self._busy = False
            self._cond.notify_all()
        if error is not None:
            raise error
        return ticket.won


class _EngineWriter:
    """The one batch write of an engine, in one transaction: token claims first (a later claim of
    the same jti in the batch loses), then audit and card rows; a call whose claim was lost (a
    replay) gets no card rows and its audit rows say it was refused.  Expired claims are pruned
    now and then."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._pruned_at = 0.0  # time.monotonic() of the last pruning; only the batch leader writes it
        # SQLite: the batch leaders of several processes (``serve --workers``) queue on a blocking file
        # lock, woken as soon as it is free, rather than in SQLite's busy handler, which polls with
        # sleeps growing to 100 ms and so leaves a waiting process's batch behind for up to seconds
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._lock_path = f"{database}.group-commit-lock" if database else None

    def _between_processes(self) -> AbstractContextManager[object]:
        return nullcontext() if self._lock_path is None or fcntl is None else _FileLock(self._lock_path)

    def __call__(self, batch: list[Records]) -> list[bool]:
        engine = self._engine()
        assert engine is not None  # the engine outlives the calls that use it
        claims = [c for r in batch for c in r.claims]
        prune = bool(claims) and time.monotonic() - self._pruned_at > PRUNE_EVERY_S
        won: list[bool] = []
        with self._between_processes(), engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                claimed = iter(claim_tokens(conn, claims, prune=prune) if claims else [])
                audit: list[dict[str, Any]] = []
                cards: list[dict[str, Any]] = []
                for records in batch:
                    won.append(all([next(claimed) for _ in records.claims]))
                    if won[-1]:
                        audit += records.audit
                        cards += records.cards
                    else:
                        audit += [dict(a, outcome="refused", detail=REPLAYED) for a in records.audit]
                # Core executemany (the ORM bulk path costs more per row)
                if audit:
                    conn.execute(_AUDIT.insert(), audit)
                if cards:
                    conn.execute(_CARDS.insert(), cards)
        if prune:
            self._pruned_at = time.monotonic()
        return won


class _FileLock:
    """An exclusive ``flock`` on a file beside the database, held for one batch write."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # closing releases the lock


_commits: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_commits_lock = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The group commit shared by every recorder and token claim on ``engine`` (made on first use)."""
    with _commits_lock:
        commit = _commits.get(engine)
        if commit is None:
            commit = _commits[engine] = GroupCommit(_EngineWriter(engine))
        return commit


def claim_token(twins: TwinStore, iss: str, jti: str, expires_at: datetime) -> bool:
    """Claim a client JWT's (iss, jti) until ``expires_at`` in the next group commit: False when it was
    claimed before (a replay); ``ValueError`` for an over-long iss or jti."""
    check_token_id(iss, jti)  # here, not in the batch: one bad token must not fail the others' commit
    return group_commit(twins.engine).submit(Records(claims=[(iss, jti, expires_at)]))


class Recorder:
    """Twin reads (cached per version, audited) and card records of the CDS services."""

    def __init__(self, twins: TwinStore, max_states: int = 4096) -> None:
        self.twins = twins
        self._states: OrderedDict[tuple[str, int], TwinState] = OrderedDict()
        self._max = max_states
        self._lock = threading.Lock()
        self._commit = group_commit(twins.engine)

    def read_twin(self, patient_id: str, *, actor: str, entry_point: str) -> tuple[TwinState, dict[str, Any] | None]:
        """The twin's current state and the audit row still to record (None when ``state_at`` recorded
        it); :class:`~pgxtwin.store.errors.UnknownTwinError` when there is no twin."""
        version = self.twins.current_version(patient_id)
        key = (patient_id, version)
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
        if state is None:
            state = self.twins.state_at(patient_id, version, actor=actor, entry_point=entry_point)
            with self._lock:
                self._states[key] = state
                while len(self._states) > self._max:
                    self._states.popitem(last=False)
            return state, None
        # the columns' widths, as TwinStore._who applies them (an issuer|subject can be longer)
        return state, {"at": _now(), "actor": actor[:200], "entry_point": entry_point[:100], "patient_id": patient_id,
                       "action": "read_state", "version": version, "outcome": "ok", "detail": None}

    def record(self, audit: dict[str, Any] | None, cards: list[tuple[str, str, str, str | None]],
               claim: Claim | None = None) -> bool:
        """Commit the call's claim of its client JWT, its audit row and its cards (uuid, service id,
        rule, patient id) together: False when the claim was lost (a replay: no card is recorded and
        the audit row says the read was refused); ``ValueError`` for an over-long iss or jti."""
        if claim is not None:
            check_token_id(claim[0], claim[1])  # here, not in the batch: one bad token must not fail the others
        if audit is None and not cards and claim is None:
            return True
        now = _now()
        rows = [{"card_uuid": u, "service_id": s, "rule": r[:200], "patient_id": p, "created_at": now}
                for u, s, r, p in cards]
        return self._commit.submit(Records([] if claim is None else [claim], [] if audit is None else [audit], rows))


def _now() -> datetime:
    return datetime.now(timezone.utc)

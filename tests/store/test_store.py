"""The append-only twin store on real databases: a SQLite file per test, and PostgreSQL when
PGXTWIN_TEST_POSTGRES_URL is set (see conftest.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pgxtwin.store import (
    ConcurrentWriteError,
    TwinExistsError,
    TwinStore,
    UnknownTwinError,
    VersionNotFoundError,
)
from pgxtwin.store.models import Base
from pgxtwin.twin.state import (
    CovariateRecorded,
    DemographicsSet,
    InvalidEventError,
    TwinState,
    fold,
)

from .events import T0, story

REPO = Path(__file__).resolve().parents[2]


def _filled(url: str, patient: str = "pat-1") -> tuple[TwinStore, list]:
    store = TwinStore(url, actor="alice", entry_point="test")
    store.create_twin(patient)
    events = story()
    for version, event in enumerate(events):
        store.append(patient, event, expected_version=version)
    return store, events


def _event_count(store: TwinStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM twin_events")).scalar_one()


# --- append-only history and read-back


def test_history_and_every_past_version_read_back(store_url: str) -> None:
    store, events = _filled(store_url)
    history = store.history("pat-1")
    assert [h.version for h in history] == list(range(1, len(events) + 1))
    assert [h.event_type for h in history] == [e.type for e in events]
    assert all(h.actor == "alice" and h.entry_point == "test" for h in history)
    assert "voriconazole concentration 2.1 mg/L" in history[-1].summary
    assert store.state_at("pat-1", 0) == TwinState.empty("pat-1")
    for k in range(len(events) + 1):
        assert store.state_at("pat-1", k) == fold("pat-1", events[:k])
    store.close()
    # a fresh store (new engine, no cache) reads the same versions back from the database
    reopened = TwinStore(store_url)
    assert reopened.state_at("pat-1") == fold("pat-1", events)
    assert reopened.state_at("pat-1", 3) == fold("pat-1", events[:3])
    assert reopened.events("pat-1") == events
    with pytest.raises(VersionNotFoundError, match="no version 99"):
        reopened.state_at("pat-1", 99)
    reopened.close()


def test_events_and_audit_rows_cannot_be_changed(store_url: str) -> None:
    store, _ = _filled(store_url)
    for statement in (
        "UPDATE twin_events SET actor = 'mallory'",
        "DELETE FROM twin_events",
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
        "DELETE FROM twins",
        "UPDATE twins SET current_version = 2",  # the pointer only moves forward by one
        "UPDATE twins SET patient_id = 'other'",
    ):
        with pytest.raises(DBAPIError, match="append-only|never deleted|only current_version"):
            with store.engine.begin() as conn:
                conn.execute(text(statement))
    assert store.current_version("pat-1") == len(story())
    store.close()


def test_audit_log_records_who_what_when_and_entry_point(store_url: str) -> None:
    store, events = _filled(store_url)
    store.state_at("pat-1", 2, actor="bob", entry_point="cli")
    with pytest.raises(ConcurrentWriteError):
        store.append("pat-1", DemographicsSet(sex="M"), expected_version=1, actor="carol", entry_point="fhir-sync")
    log = store.audit_log("pat-1")
    assert log[0].action == "create_twin" and log[0].actor == "alice"
    appends = [a for a in log if a.action.startswith("append:")]
    assert [a.version for a in appends] == list(range(1, len(events) + 1))
    read = [a for a in log if a.action == "read_state"][-1]
    assert (read.actor, read.entry_point, read.version) == ("bob", "cli", 2)
    conflict = log[-1]
    assert (conflict.actor, conflict.entry_point, conflict.outcome) == ("carol", "fhir-sync", "conflict")
    assert all(a.at.tzinfo is not None for a in log)
    store.close()


# --- optimistic concurrency


def test_two_concurrent_writers_exactly_one_wins(store_url: str) -> None:
    setup = TwinStore(store_url)
    setup.create_twin("pat-1")
    setup.append("pat-1", DemographicsSet(sex="F"), expected_version=0)
    writers = [TwinStore(store_url, actor=f"writer-{i}") for i in range(2)]  # separate engines and connections
    barrier = threading.Barrier(len(writers))
    outcomes: list[object] = [None] * len(writers)

    def write(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = writers[i].append(
                "pat-1", CovariateRecorded(covariate="weight", value=60.0 + i, unit="kg", time=T0), expected_version=1
            )
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wins = [o for o in outcomes if isinstance(o, TwinState)]
    losses = [o for o in outcomes if isinstance(o, ConcurrentWriteError)]
    assert len(wins) == 1 and len(losses) == 1, outcomes
    assert losses[0].expected_version == 1
    assert "nothing was written" in str(losses[0])
    final = setup.state_at("pat-1")
    assert final.version == 2 and final == wins[0]
    assert len(setup.history("pat-1")) == 2
    for s in [setup, *writers]:
        s.close()


def test_writer_blocked_by_an_open_transaction_gets_conflict_not_lost_update(store_url: str) -> None:
    """Writer A holds its transaction open (test hook); B, with the same expected version, waits
    for A's lock and is then refused: A's write is kept, B's is never silently lost."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        release.wait(30)

    a = TwinStore(store_url, actor="a", before_commit=hold)
    b = TwinStore(store_url, actor="b")
    a.create_twin("pat-1")
    result: dict[str, object] = {}

    def write_a() -> None:
        result["a"] = a.append("pat-1", DemographicsSet(sex="F"), expected_version=0)

    def write_b() -> None:
        try:
            result["b"] = b.append("pat-1", DemographicsSet(sex="M"), expected_version=0)
        except ConcurrentWriteError as exc:
            result["b"] = exc

    ta = threading.Thread(target=write_a)
    ta.start()
    assert inside.wait(30)
    tb = threading.Thread(target=write_b)
    tb.start()
    time.sleep(0.5)
    assert tb.is_alive(), "B must wait for A's open transaction"
    release.set()
    ta.join(30)
    tb.join(30)
    assert isinstance(result["a"], TwinState)
    assert isinstance(result["b"], ConcurrentWriteError)
    assert b.state_at("pat-1").demographics.sex == "F"
    assert b.current_version("pat-1") == 1
    a.close()
    b.close()


# --- crash safety


def test_writer_killed_mid_transaction_leaves_last_committed_version(store_url: str, tmp_path: Path) -> None:
    store, events = _filled(store_url)
    committed = store.state_at("pat-1")
    marker = tmp_path / "inside.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", store_url, "pat-1", str(len(events)), str(marker)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"writer exited early: {proc.stderr.read().decode()}")
            assert time.monotonic() < deadline, "writer never reached its transaction"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store.close()

    after = TwinStore(store_url, actor="after-crash")
    assert after.current_version("pat-1") == len(events)
    assert after.state_at("pat-1") == committed
    assert len(after.history("pat-1")) == len(events)
    assert all(a.actor != "crash-writer" for a in after.audit_log())
    # the store accepts the next write at the committed version (the killed writer's lock is gone)
    new = after.append("pat-1", CovariateRecorded(covariate="weight", value=67.0, unit="kg", time=T0 + timedelta(days=1)),
                       expected_version=len(events))
    assert new.version == len(events) + 1
    if store_url.startswith("sqlite"):
        with after.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
    after.close()


# --- bad input


BAD_EVENTS = [
    ({"type": "covariate_recorded", "covariate": "weight", "value": 700, "unit": "kg", "time": "2024-03-02T08:00:00Z"},
     "weight=700 kg is outside the plausible range"),
    ({"type": "covariate_recorded", "covariate": "height", "value": 170, "unit": "parsecs/furlong", "time": "2024-03-02T08:00:00Z"},
     "height"),
    ({"type": "covariate_recorded", "covariate": "weight", "value": 70, "unit": "blorps", "time": "2024-03-02T08:00:00Z"},
     "weight: unknown unit 'blorps'"),
    ({"type": "observation_recorded", "observation": {"kind": "concentration", "drug": "voriconazole",
      "time": "2024-03-02T08:00:00Z", "value": -1.0, "unit": "mg/L"}}, "value=-1 mg/L must not be negative"),
    ({"type": "observation_recorded", "observation": {"kind": "concentration", "drug": "voriconazole",
      "time": "2024-02-01T08:00:00Z", "value": 1.0, "unit": "mg/L"}}, "before the first dose of voriconazole"),
    ({"type": "observation_recorded", "observation": {"kind": "concentration", "drug": "tacrolimus",
      "time": "2024-03-02T08:00:00Z", "value": 0.01, "unit": "mg/L"}}, "no dose of tacrolimus is recorded"),
    ({"type": "dose_recorded", "medication_id": "nope", "time": "2024-03-02T08:00:00Z", "amount": 5},
     "medication_id='nope': no such medication"),
    ({"type": "dose_recorded", "medication_id": "vori-1", "time": "2024-03-02T08:00:00", "amount": 5},
     "dose_recorded.time: Input should have timezone info"),
    ({"type": "weather_recorded", "sunny": True}, "does not match any of the expected tags"),
]


@pytest.mark.parametrize(("event", "message"), BAD_EVENTS, ids=[m[:30] for _, m in BAD_EVENTS])
def test_bad_input_is_refused_and_nothing_is_written(sqlite_url: str, event: dict, message: str) -> None:
    store, events = _filled(sqlite_url)
    before_state, before_rows = store.state_at("pat-1"), _event_count(store)
    with pytest.raises(InvalidEventError) as info:
        store.append("pat-1", event, expected_version=len(events))
    assert message in str(info.value)
    assert store.current_version("pat-1") == len(events)
    assert _event_count(store) == before_rows
    assert TwinStore(sqlite_url).state_at("pat-1") == before_state
    refusal = [a for a in store.audit_log("pat-1") if a.action == "append"][-1]
    assert refusal.outcome == "refused" and message in (refusal.detail or "")
    store.close()


def test_refusals_for_unknown_twins_ids_and_versions(store_url: str) -> None:
    store = TwinStore(store_url)
    with pytest.raises(UnknownTwinError, match="no twin for patient 'ghost'"):
        store.append("ghost", DemographicsSet(sex="F"), expected_version=0)
    with pytest.raises(UnknownTwinError):
        store.state_at("ghost")
    store.create_twin("pat-1")
    with pytest.raises(TwinExistsError):
        store.create_twin("pat-1")
    with pytest.raises(InvalidEventError, match="patient_id='no spaces allowed'"):
        store.create_twin("no spaces allowed")
    with pytest.raises(InvalidEventError, match="expected_version=-1"):
        store.append("pat-1", DemographicsSet(sex="F"), expected_version=-1)
    with pytest.raises(ConcurrentWriteError, match="version 0, not the expected version 3"):
        store.append("pat-1", DemographicsSet(sex="F"), expected_version=3)
    assert store.patients() == ["pat-1"]
    assert store.current_version("pat-1") == 0
    store.close()


# --- schema, migrations and configuration


def test_migrations_match_the_models_and_are_idempotent(store_url: str) -> None:
    first = TwinStore(store_url)
    assert first.schema_revision == "0003"  # the head: seen tokens (0003), service tables (0002), twins (0001)
    second = TwinStore(store_url)  # the migrations run again on open: nothing to do
    with second.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0003"
    assert diffs == []
    first.close()
    second.close()


def test_concurrent_first_opens_migrate_once(sqlite_url: str) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            TwinStore(sqlite_url).close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_default_url_is_a_wal_sqlite_file_under_pgxtwin_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGXTWIN_DATABASE_URL", raising=False)
    store = TwinStore()
    store.create_twin("pat-1")
    store.close()
    path = tmp_path / "pgxtwin-data" / "pgxtwin.db"
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_environment_variable_selects_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGXTWIN_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere' / 'x.db'}")
    TwinStore().close()
    assert (tmp_path / "elsewhere" / "x.db").is_file()
    assert not (tmp_path / "pgxtwin-data").exists()

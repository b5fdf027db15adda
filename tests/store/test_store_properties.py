"""Property: whatever valid story is appended, the store gives back every version as the fold of
its events (SQLite file per example)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from pgxtwin.store import TwinStore
from pgxtwin.twin.state import fold
from tests.twin.test_state_properties import stories


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories(max_events=12))
def test_store_versions_are_folds_of_their_prefix(events: list) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = TwinStore(f"sqlite:///{Path(folder) / 'twins.db'}")
        store.create_twin("pat-1")
        for version, event in enumerate(events):
            store.append("pat-1", event, expected_version=version)
        reader = TwinStore(f"sqlite:///{Path(folder) / 'twins.db'}")  # no cache: folds from the rows
        for k in range(len(events) + 1):
            assert reader.state_at("pat-1", k) == fold("pat-1", events[:k])
        assert reader.events("pat-1") == events
        store.close()
        reader.close()

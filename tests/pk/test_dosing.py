import numpy as np
import pytest

from pgxtwin.pk.dosing import DoseTable, DosingEvent, DosingHistory, Route


def test_regular_regimen_events() -> None:
    h = DosingHistory.regular("75 mg", "12 h", n_doses=3, start_h=2.0)
    assert [e.time_h for e in h] == [2.0, 14.0, 26.0]
    assert all(e.amount_mg == 75.0 and e.route is Route.ORAL for e in h)
    assert h.regimen is not None and h.regimen.interval_h == 12.0 and not h.steady_state


def test_from_records_sorts_and_keeps_changed_doses() -> None:
    h = DosingHistory.from_records([48, 0, 24], [50, 100, 0])  # out of order; a missed dose recorded as 0
    assert [(e.time_h, e.amount_mg) for e in h] == [(0, 100), (24, 0), (48, 50)]
    assert h.regimen is None


def test_infusion_needs_duration_and_others_reject_it() -> None:
    with pytest.raises(ValueError, match="duration_h > 0"):
        DosingEvent(0.0, 100.0, Route.IV_INFUSION)
    with pytest.raises(ValueError, match="only meaningful"):
        DosingEvent(0.0, 100.0, Route.ORAL, duration_h=1.0)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"time_h": -1.0, "amount_mg": 1.0}, "time_h"),
        ({"time_h": 0.0, "amount_mg": -5.0}, "amount_mg"),
        ({"time_h": float("nan"), "amount_mg": 1.0}, "finite"),
        ({"time_h": 0.0, "amount_mg": 1.0, "route": "rectal"}, "route"),
    ],
)
def test_event_validation(kwargs: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        DosingEvent(**kwargs)


def test_record_errors_name_the_record() -> None:
    with pytest.raises(ValueError, match="record 1"):
        DosingHistory.from_records([0, -4], [10, 10])
    with pytest.raises(ValueError, match="3 records"):
        DosingHistory.from_records([0, 1, 2], [10, 10])


def test_regular_validation() -> None:
    with pytest.raises(ValueError, match="interval_h"):
        DosingHistory.regular(10, 0, 3)
    with pytest.raises(ValueError, match="n_doses"):
        DosingHistory.regular(10, 12, 0)
    with pytest.raises(ValueError, match="relative"):
        DosingHistory.regular("1 mg/kg", 12, 2)
    with pytest.raises(ValueError, match="no longer than the interval"):
        DosingHistory.regular(10, 12, 2, route="iv_infusion", duration_h=13, steady_state=True)
    with pytest.raises(ValueError, match="steady-state"):
        DosingHistory.regular(10, 12, 2, steady_state=True) + DosingHistory.regular(10, 12, 2)


def test_dose_table_unions_per_patient_histories() -> None:
    a = DosingHistory.from_records([0, 24], [100, 100])
    b = DosingHistory.from_records([0, 12], [50, 50])
    table = DoseTable.build([a, b], n=2)
    np.testing.assert_array_equal(table.times, [0, 12, 24])
    np.testing.assert_array_equal(table.amounts, [[100, 0, 100], [50, 50, 0]])
    with pytest.raises(ValueError, match="3 patients"):
        DoseTable.build([a, b], n=3)

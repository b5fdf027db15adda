"""A small, valid clinical story as twin events (shared by the store tests)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pgxtwin.twin.state import (
    Concentration,
    CovariateRecorded,
    DemographicsSet,
    DoseRecorded,
    MedicationStarted,
    ObservationRecorded,
)

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)


def story() -> list:
    return [
        DemographicsSet(sex="F", birth_date="1961-07-14"),
        CovariateRecorded(covariate="weight", value=68.0, unit="kg", time=T0),
        CovariateRecorded(covariate="serum_creatinine", value=80.0, unit="umol/L", time=T0),
        MedicationStarted(medication_id="vori-1", drug="voriconazole", time=T0, dose=200, interval_h=12),
        DoseRecorded(dose_id="d1", medication_id="vori-1", time=T0, amount=200),
        DoseRecorded(dose_id="d2", medication_id="vori-1", time=T0 + timedelta(hours=12), amount=200),
        ObservationRecorded(observation=Concentration(
            observation_id="c1", drug="voriconazole", time=T0 + timedelta(hours=23), value=2100, unit="ng/mL")),
    ]

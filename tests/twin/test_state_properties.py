"""Property tests: a twin version is the fold of its events, whatever the (valid) story."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgxtwin.twin.state import (
    INR,
    Concentration,
    CovariateRecorded,
    DemographicsSet,
    DoseRecorded,
    EntryRetracted,
    Lab,
    MedicationChanged,
    MedicationStarted,
    MedicationStopped,
    ObservationRecorded,
    TwinState,
    apply,
    fold,
    parse_event,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
DRUGS = ("voriconazole", "tacrolimus", "warfarin", "fluoxetine")
COVARIATE_RANGES = {"weight": (2.0, 250.0, "kg"), "height": (45.0, 210.0, "cm"),
                    "serum_creatinine": (0.2, 10.0, "mg/dL"), "albumin": (1.0, 5.5, "g/dL")}


@st.composite
def stories(draw, max_events: int = 25) -> list:
    """Valid event sequences: time moves forward; doses and stops refer to started medications;
    concentrations follow a dose of their drug; retractions name recorded entries."""
    events: list = []
    hours = 0.0
    meds: dict[str, dict] = {}  # id -> {"drug", "stopped", "last_dose"}
    dosed: set[str] = set()
    entries: list[tuple[str, str]] = []
    n = draw(st.integers(0, max_events))
    for i in range(n):
        hours += draw(st.floats(0.0, 48.0, allow_nan=False))
        t = T0 + timedelta(hours=hours)
        options = ["covariate", "demographics", "start", "lab", "inr"]
        open_meds = [m for m, info in meds.items() if not info["stopped"]]
        if open_meds:
            options += ["dose", "dose", "change", "stop"]
        if dosed:
            options.append("concentration")
        if entries:
            options.append("retract")
        kind = draw(st.sampled_from(options))
        if kind == "covariate":
            name = draw(st.sampled_from(sorted(COVARIATE_RANGES)))
            low, high, unit = COVARIATE_RANGES[name]
            events.append(CovariateRecorded(covariate=name, value=draw(st.floats(low, high)), unit=unit, time=t))
        elif kind == "demographics":
            events.append(DemographicsSet(sex=draw(st.sampled_from(["F", "M"])),
                                          age_years=draw(st.floats(18, 95)), age_recorded_at=t))
        elif kind == "start":
            med_id = f"m{i}"
            drug = draw(st.sampled_from(DRUGS))
            meds[med_id] = {"drug": drug, "stopped": False}
            events.append(MedicationStarted(medication_id=med_id, drug=drug, time=t,
                                            dose=draw(st.floats(0.5, 500)), interval_h=draw(st.sampled_from([8, 12, 24]))))
        elif kind == "dose":
            med_id = draw(st.sampled_from(open_meds))
            events.append(DoseRecorded(dose_id=f"d{i}", medication_id=med_id, time=t, amount=draw(st.floats(0, 500))))
            dosed.add(meds[med_id]["drug"])
            entries.append(("dose", f"d{i}"))
        elif kind == "change":
            events.append(MedicationChanged(medication_id=draw(st.sampled_from(open_meds)), time=t,
                                            dose=draw(st.floats(0.5, 500))))
        elif kind == "stop":
            med_id = draw(st.sampled_from(open_meds))
            meds[med_id]["stopped"] = True
            events.append(MedicationStopped(medication_id=med_id, time=t))
        elif kind == "concentration":
            drug = draw(st.sampled_from(sorted(dosed)))
            if draw(st.booleans()):
                obs = Concentration(observation_id=f"o{i}", drug=drug, time=t, blq=True, lloq=0.01, unit="mg/L")
            else:
                obs = Concentration(observation_id=f"o{i}", drug=drug, time=t,
                                    value=draw(st.floats(0.0, 5000.0)), unit=draw(st.sampled_from(["mg/L", "ng/mL"])))
            events.append(ObservationRecorded(observation=obs))
            entries.append(("observation", f"o{i}"))
        elif kind == "lab":
            events.append(ObservationRecorded(observation=Lab(observation_id=f"o{i}", name="ALT", time=t,
                                                              value=draw(st.floats(1, 500)), unit="U/L")))
            entries.append(("observation", f"o{i}"))
        elif kind == "inr":
            events.append(ObservationRecorded(observation=INR(observation_id=f"o{i}", time=t,
                                                              value=draw(st.floats(0.8, 6.0)))))
            entries.append(("observation", f"o{i}"))
        else:
            entry, entry_id = draw(st.sampled_from(entries))
            entries.remove((entry, entry_id))
            if entry == "dose":
                # a retracted dose may have been a drug's only dose: stop offering that drug's concentrations
                dosed.clear()
            events.append(EntryRetracted(entry=entry, entry_id=entry_id, reason="entered in error"))
    return events


def _fold_in_order(events: list) -> list[TwinState]:
    states = [TwinState.empty("pat-1")]
    for event in events:
        states.append(apply(states[-1], event))
    return states


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories())
def test_every_prefix_folds_to_its_version(events: list) -> None:
    states = _fold_in_order(events)
    for k, state in enumerate(states):
        assert state.version == k
        assert fold("pat-1", events[:k]) == state


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories())
def test_events_and_states_survive_their_json_form(events: list) -> None:
    replayed = [parse_event(e.model_dump(mode="json"), trusted=True) for e in events]
    assert replayed == events
    final = fold("pat-1", replayed)
    assert final == fold("pat-1", events)
    assert TwinState.model_validate_json(final.model_dump_json()) == final


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stories(max_events=15))
def test_apply_never_changes_its_input(events: list) -> None:
    state = TwinState.empty("pat-1")
    for event in events:
        before = state.model_dump_json()
        new = apply(state, event)
        assert state.model_dump_json() == before
        state = new

"""TwinState, its events and ``apply``: units, derived renal function, validation messages."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pgxtwin.genomics.result import AlleleInfo, CallResult, GeneResult, KnowledgeBaseVersion
from pgxtwin.pk.dosing import Route as PkRoute
from pgxtwin.twin.renal import ckd_epi_2021_egfr, cockcroft_gault_crcl
from pgxtwin.twin.state import (
    ROUTES,
    Concentration,
    CovariateRecorded,
    DemographicsSet,
    DoseRecorded,
    EntryRetracted,
    EstimateRecorded,
    GenotypeSet,
    InvalidEventError,
    Lab,
    MedicationChanged,
    MedicationStarted,
    MedicationStopped,
    ObservationRecorded,
    OutsideCallSet,
    TwinState,
    apply,
    fold,
    parse_event,
)

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


def _gene(status: str, diplotypes: list[str], phenotype: str, score: float | None) -> GeneResult:
    return GeneResult(status=status, diplotypes=diplotypes, phenotype=phenotype, activity_score=score,
                      alleles=[AlleleInfo(name="*1", function="Normal function", activity_value=1.0)],
                      missing_positions=[], unexpected_variants=[], notes=[])


CALL = CallResult(
    source="patient.vcf", sample="S1", assembly="GRCh38",
    knowledge_base=KnowledgeBaseVersion(source="test", pypgx_version="0.27.0", tables_sha256="a" * 64,
                                        overlay_sha256="b" * 64, version="pypgx-0.27.0+abcdefabcdef"),
    genes={"CYP2C19": _gene("called", ["*2/*17"], "Intermediate Metabolizer", None),
           "CYP2C9": _gene("called", ["*1/*3"], "Intermediate Metabolizer", 1.5),
           "CYP2D6": _gene("no_call", [], "Indeterminate", None)},
)


def _err(state: TwinState, event, match: str) -> InvalidEventError:
    with pytest.raises(InvalidEventError, match=match) as info:
        apply(state, event)
    return info.value


def _bad(data: dict, match: str) -> None:
    with pytest.raises(InvalidEventError, match=match):
        parse_event(data)


def _on_voriconazole() -> TwinState:
    return fold("pat-1", [
        DemographicsSet(sex="M", age_years=60, age_recorded_at=T0),
        MedicationStarted(medication_id="v1", drug="voriconazole", time=T0, dose=200, interval_h=12),
        DoseRecorded(dose_id="d1", medication_id="v1", time=T0, amount=200),
    ])


# --- renal function


def test_cockcroft_gault_matches_the_1976_equation() -> None:
    assert cockcroft_gault_crcl(60, 72, 1.0, "M") == pytest.approx(80.0)
    assert cockcroft_gault_crcl(60, 72, 1.0, "F") == pytest.approx(68.0)
    assert cockcroft_gault_crcl(40, 70, 2.0, "M") == pytest.approx(100 * 70 / 144)


def test_ckd_epi_2021_race_free_values() -> None:
    # 142 * (1.0/0.9)^-1.200 * 0.9938^60 = 86.2 (men above kappa)
    assert ckd_epi_2021_egfr(60, 1.0, "M") == pytest.approx(142 * (1 / 0.9) ** -1.2 * 0.9938**60, rel=1e-12)
    assert ckd_epi_2021_egfr(60, 1.0, "M") == pytest.approx(86.2, abs=0.1)  # NKF calculator: 86
    # women below kappa: alpha = -0.241, times 1.012
    assert ckd_epi_2021_egfr(50, 0.5, "F") == pytest.approx(142 * (0.5 / 0.7) ** -0.241 * 0.9938**50 * 1.012)
    assert ckd_epi_2021_egfr(50, 0.7, "F") > ckd_epi_2021_egfr(50, 1.4, "F")
    with pytest.raises(ValueError, match="sex"):
        ckd_epi_2021_egfr(50, 1.0, "X")


# --- covariates and units


def test_covariates_are_converted_with_pint_and_taken_at_a_time() -> None:
    state = fold("pat-1", [
        DemographicsSet(sex="F", birth_date="1964-03-01"),
        CovariateRecorded(covariate="weight", value=154.32, unit="lb", time=T0),
        CovariateRecorded(covariate="height", value=1.65, unit="m", time=T0),
        CovariateRecorded(covariate="serum_creatinine", value=88.4, unit="µmol/L", time=T0),
        CovariateRecorded(covariate="albumin", value=35, unit="g/L", time=T0),
        CovariateRecorded(covariate="weight", value=65, unit="kg", time=T0 + 48 * H),
    ])
    assert state.covariates[0].value == pytest.approx(70.0, rel=1e-4)
    assert state.covariates[0].unit == "kg" and state.covariates[0].original == "154.32 lb"
    snap = state.covariates_at(T0 + H)
    assert snap.height_cm == pytest.approx(165.0)
    assert snap.serum_creatinine_mg_dl == pytest.approx(1.0, rel=1e-3)
    assert snap.albumin_g_dl == pytest.approx(3.5)
    assert snap.age_years == pytest.approx(60.0, abs=0.01)
    assert snap.crcl_ml_min == pytest.approx(cockcroft_gault_crcl(snap.age_years, snap.weight_kg, snap.serum_creatinine_mg_dl, "F"))
    assert snap.egfr_ml_min_1_73m2 == pytest.approx(ckd_epi_2021_egfr(snap.age_years, snap.serum_creatinine_mg_dl, "F"))
    assert state.covariates_at(T0 + 72 * H).weight_kg == 65.0  # the later weight from then on
    assert state.covariates_at(T0 - H).weight_kg is None  # nothing measured yet
    assert state.covariates_at(T0 - H).crcl_ml_min is None


@pytest.mark.parametrize(("covariate", "value", "unit", "match"), [
    ("weight", 700, "kg", r"covariate_recorded: weight=700 kg is outside the plausible range \[0.5, 400\] kg"),
    ("weight", -3, "kg", "weight=-3 kg must not be negative"),
    ("weight", 70, "blorps", "weight: unknown unit 'blorps'"),
    ("weight", 70, "mL", "weight: unit 'mL' is not a kg-compatible unit"),
    ("height", 170, "kg", "height: unit 'kg' is not a cm-compatible unit"),
    ("serum_creatinine", 1.0, "", "serum_creatinine: a unit is required"),
    ("albumin", 35, "g/dL", "albumin=35 g/dL is outside the plausible range"),
])
def test_impossible_covariates_are_refused_naming_the_field(covariate, value, unit, match) -> None:
    _bad({"type": "covariate_recorded", "covariate": covariate, "value": value, "unit": unit,
          "time": T0.isoformat()}, match)


def test_naive_times_and_unknown_event_types_are_refused() -> None:
    _bad({"type": "covariate_recorded", "covariate": "weight", "value": 70, "unit": "kg",
          "time": "2024-03-01T08:00:00"}, "covariate_recorded.time: Input should have timezone info")
    _bad({"type": "mood_recorded"}, "does not match any of the expected tags")
    _bad({"type": "demographics_set", "sex": "X"}, "demographics_set.sex")
    _bad({"type": "demographics_set", "age_years": 50}, "age_recorded_at: required with age_years")


def test_times_are_kept_in_utc() -> None:
    event = CovariateRecorded(covariate="weight", value=70, unit="kg",
                              time=datetime(2024, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))))
    assert event.time == T0 and event.time.tzinfo == timezone.utc


# --- medications and doses


def test_medication_lifecycle_current_and_past() -> None:
    state = _on_voriconazole()
    state = apply(state, MedicationChanged(medication_id="v1", time=T0 + 24 * H, dose=150, reason="trough high"))
    state = apply(state, DoseRecorded(dose_id="d2", medication_id="v1", time=T0 + 24 * H, amount=0.15, unit="g"))
    assert [m.medication_id for m in state.current_medications] == ["v1"]
    med = state.medications["v1"]
    assert [r.dose_mg for r in med.regimen] == [200.0, 150.0] and med.regimen[-1].interval_h == 12
    assert [d.amount_mg for d in state.doses_of("VORICONAZOLE")] == [200.0, 150.0]
    hist = med.dosing_history(T0)
    assert [e.time_h for e in hist.events] == [0.0, 24.0]
    assert [e.route for e in hist.events] == [PkRoute.ORAL, PkRoute.ORAL]
    stopped = apply(state, MedicationStopped(medication_id="v1", time=T0 + 30 * H, reason="switched"))
    assert stopped.current_medications == [] and [m.drug for m in stopped.past_medications] == ["voriconazole"]
    _err(stopped, DoseRecorded(medication_id="v1", time=T0 + 31 * H, amount=150), "after voriconazole .* was stopped")
    _err(stopped, MedicationStopped(medication_id="v1", time=T0 + 30 * H), "already stopped")
    _err(state, MedicationStopped(medication_id="v1", time=T0 + 2 * H), "before the last recorded dose")
    _err(state, DoseRecorded(medication_id="v1", time=T0 - H, amount=200), "before voriconazole .* was started")
    _err(state, DoseRecorded(medication_id="zz", time=T0, amount=200), "medication_id='zz': no such medication")
    _err(state, MedicationStarted(medication_id="v1", drug="warfarin", time=T0), "'v1' is already used")
    _err(state, DoseRecorded(dose_id="d1", medication_id="v1", time=T0 + H, amount=200), "dose_id='d1' is already used")


def test_dose_units_and_infusions() -> None:
    assert DoseRecorded(medication_id="m", time=T0, amount=0.5, unit="g").amount == 500.0
    assert DoseRecorded(medication_id="m", time=T0, amount=250, unit="ug").amount == pytest.approx(0.25)
    assert parse_event({"type": "dose_recorded", "medication_id": "m", "time": T0.isoformat(),
                        "amount": 500}).amount == 500.0
    _bad({"type": "dose_recorded", "medication_id": "m", "time": T0.isoformat(), "amount": -5},
         "amount=-5 mg must not be negative")
    _bad({"type": "dose_recorded", "medication_id": "m", "time": T0.isoformat(), "amount": 5, "route": "iv_infusion"},
         "iv_infusion needs a duration")
    _bad({"type": "dose_recorded", "medication_id": "m", "time": T0.isoformat(), "amount": 5, "route": "rectal"},
         "dose_recorded.route")
    state = fold("p", [MedicationStarted(medication_id="t", drug="tacrolimus", time=T0, route="iv_infusion")])
    _err(state, DoseRecorded(medication_id="t", time=T0, amount=1), "given as iv_infusion and needs a duration")
    state = apply(state, DoseRecorded(medication_id="t", time=T0, amount=1, duration_h=4))
    assert state.medications["t"].doses[0].route == "iv_infusion"


def test_twin_routes_are_the_pk_routes() -> None:
    assert set(ROUTES) == {r.value for r in PkRoute}


# --- observations


def test_concentrations_are_converted_and_checked_against_doses() -> None:
    state = _on_voriconazole()
    obs = Concentration(observation_id="c1", drug="voriconazole", time=T0 + 11 * H, value=1800, unit="ng/mL")
    assert obs.value == pytest.approx(1.8) and obs.unit == "mg/L" and obs.original_unit == "ng/mL"
    state = apply(state, ObservationRecorded(observation=obs))
    blq = Concentration(drug="voriconazole", time=T0 + 12 * H, blq=True, lloq=50, unit="ug/L")
    assert blq.lloq == pytest.approx(0.05) and blq.value is None
    state = apply(state, ObservationRecorded(observation=blq))
    assert [c.value for c in state.concentrations("voriconazole")] == [pytest.approx(1.8), None]
    err = _err(state, ObservationRecorded(observation=Concentration(
        drug="voriconazole", time=T0 - H, value=1, unit="mg/L")), "before the first dose of voriconazole")
    assert err.field == "time"
    _err(state, ObservationRecorded(observation=Concentration(drug="tacrolimus", time=T0 + H, value=0.01, unit="mg/L")),
         "no dose of tacrolimus is recorded")
    _err(state, ObservationRecorded(observation=obs), "observation_id='c1' is already used")


@pytest.mark.parametrize(("observation", "match"), [
    ({"value": -0.5, "unit": "mg/L"}, "value=-0.5 mg/L must not be negative"),
    ({"value": 1, "unit": "nmol/L"}, "unit 'nmol/L' is not a mg/L-compatible unit"),
    ({"value": 1, "unit": "zorkmids/L"}, "unknown unit 'zorkmids/L'"),
    ({"value": 1, "unit": "mg"}, "not a mg/L-compatible unit"),
    ({"blq": True, "unit": "mg/L"}, "lloq: a BLQ concentration needs"),
    ({"blq": True, "value": 0.2, "lloq": 0.1, "unit": "mg/L"}, "is not below lloq"),
    ({"value": 0.05, "lloq": 0.1, "unit": "mg/L"}, "record it with blq=true"),
    ({"unit": "mg/L"}, "value: required unless blq is true"),
])
def test_impossible_concentrations_are_refused(observation: dict, match: str) -> None:
    _bad({"type": "observation_recorded", "observation": {"kind": "concentration", "drug": "voriconazole",
                                                          "time": T0.isoformat(), **observation}}, match)


def test_labs_inr_and_retraction() -> None:
    state = _on_voriconazole()
    state = apply(state, ObservationRecorded(observation=Lab(observation_id="l1", name="ALT", value=40, unit="U/L", time=T0)))
    state = apply(state, parse_event({"type": "observation_recorded",
                                      "observation": {"kind": "inr", "observation_id": "i1", "value": 2.4, "time": T0.isoformat()}}))
    _bad({"type": "observation_recorded", "observation": {"kind": "inr", "value": -1, "time": T0.isoformat()}},
         "INR value=-1 must be positive")
    state = apply(state, EntryRetracted(entry="dose", entry_id="d1", reason="charted on the wrong patient"))
    assert state.medications["v1"].doses[0].retracted and state.doses_of("voriconazole") == []
    state = apply(state, EntryRetracted(entry="observation", entry_id="i1", reason="haemolysed"))
    assert state.observations[-1].retracted
    _err(state, EntryRetracted(entry="observation", entry_id="i1", reason="again"), "already retracted")
    _err(state, EntryRetracted(entry="dose", entry_id="nope", reason="x"), "entry_id='nope': no such dose")


# --- genotype, posterior, PK bridge


def test_genotype_and_outside_calls_feed_patient_factors() -> None:
    cyp2d6 = _gene("outside_call", ["*1/*4"], "Intermediate Metabolizer", 1.0)
    state = fold("pat-1", [
        DemographicsSet(sex="M", age_years=60, age_recorded_at=T0),
        CovariateRecorded(covariate="weight", value=80, unit="kg", time=T0),
        CovariateRecorded(covariate="serum_creatinine", value=1.2, unit="mg/dL", time=T0),
        GenotypeSet(call_result=CALL, recorded_at=T0),
        OutsideCallSet(gene="CYP2D6", result=cyp2d6),
        MedicationStarted(medication_id="o1", drug="omeprazole", time=T0),
    ])
    assert state.genotype.knowledge_base_version == "pypgx-0.27.0+abcdefabcdef"
    assert state.genotype.genes["CYP2D6"].status == "outside_call"
    factors = state.patient_factors(T0 + H)
    assert factors.genes["CYP2C19"].diplotype == "*2/*17"
    assert factors.genes["CYP2C9"].activity_score == 1.5
    assert factors.genes["CYP2D6"].phenotype == "Intermediate Metabolizer"
    assert factors.weight_kg == 80 and factors.sex == "M" and factors.age_years == pytest.approx(60, abs=0.01)
    assert factors.crcl_ml_min == pytest.approx(80 * 80 / (72 * 1.2), rel=1e-3)
    assert factors.comedications == ("omeprazole",)
    _bad({"type": "outside_call_set", "gene": "CYP2D6", "result": CALL.genes["CYP2C9"].model_dump()},
         "must be 'outside_call'")


def _posterior(**changes) -> dict:
    data = {"drug": "voriconazole", "parameters": ["cl", "v"], "mode": [0.1, -0.2],
            "covariance": [[0.04, 0.01], [0.01, 0.09]], "library_digest": "c" * 64,
            "estimated_at": T0.isoformat(), "based_on_version": 3, "method": "MAP", "n_observations": 1}
    data.update(changes)
    return {"type": "estimate_recorded", "posterior": data}


def test_posterior_is_validated_and_kept_per_drug() -> None:
    state = _on_voriconazole()
    state = apply(state, parse_event(_posterior()))
    assert state.posteriors["voriconazole"].mode == (0.1, -0.2)
    _bad(_posterior(mode=[0.1]), "mode: 1 values for 2 parameters")
    _bad(_posterior(covariance=[[0.04, 0.01], [0.02, 0.09]]), "not symmetric")
    _bad(_posterior(covariance=[[-0.04, 0.0], [0.0, 0.09]]), "variance of cl")
    _bad(_posterior(library_digest="xyz"), "library_digest")
    _err(state, parse_event(_posterior(based_on_version=99)), "based_on_version=99 is later than")


def test_apply_is_pure_and_state_round_trips_through_json() -> None:
    state = _on_voriconazole()
    before = state.model_dump_json()
    after = apply(state, ObservationRecorded(observation=Concentration(
        drug="voriconazole", time=T0 + H, value=1.0, unit="mg/L")))
    assert state.model_dump_json() == before and after.version == state.version + 1
    assert TwinState.model_validate_json(after.model_dump_json()) == after


def test_patient_id_is_a_fhir_id() -> None:
    with pytest.raises(InvalidEventError, match="not a FHIR id"):
        TwinState.empty("has spaces")
    with pytest.raises(InvalidEventError):
        TwinState.empty("x" * 65)
    assert TwinState.empty("Patient-1.a").patient_id == "Patient-1.a"

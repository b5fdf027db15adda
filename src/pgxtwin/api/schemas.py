"""Request and response bodies of the REST endpoints (pydantic; the OpenAPI spec is generated from them).

Our own request models forbid unknown fields (a misspelt field is a 400, not silently dropped).
Units as in the twin: mg, h, mg/L, kg, cm; dose and interval texts as the CLI takes them
(``"75 mg"``, ``"0.1 mg/kg"``, ``"5 mg/m2"``; ``"24h"``, ``"12 h"``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..genomics.result import CallResult
from ..twin.state import FHIR_ID_PATTERN, CovariateName, Event, Route, TwinState

MAX_EVENTS_PER_WRITE = 50
MAX_SIMULATED_PATIENTS = 2000
MAX_SIMULATED_DAYS = 90.0
MAX_DOSES_GIVEN = 500


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


PatientIdField = Annotated[str, Field(pattern=FHIR_ID_PATTERN, description="the EHR/FHIR Patient.id")]
DrugText = Annotated[str, Field(min_length=1, max_length=100, description="drug name (library name or synonym)")]
DoseText = Annotated[str, Field(min_length=1, max_length=50, description="dose with unit, e.g. '75 mg', '0.1 mg/kg'")]
EveryText = Annotated[str, Field(min_length=1, max_length=20, description="dosing interval, e.g. '24h', '12 h'")]


# ------------------------------------------------------------------------------ errors (FHIR R4)

# An R4 OperationOutcome as api/problems.py writes it (inline schema: the media type is
# application/fhir+json, which FastAPI's ``model=`` would put under application/json).
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


# ------------------------------------------------------------------------------ twins: writes

class DemographicsIn(_Request):
    """Sex and either a birth date or an age (recorded now)."""

    sex: Literal["F", "M"] | None = None
    birth_date: date | None = None
    age_years: float | None = Field(None, ge=0, le=125, description="years, as of the request")


class CovariateIn(_Request):
    """One covariate measurement; converted to the twin's unit (kg, cm, mg/dL, g/dL)."""

    covariate: CovariateName
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=20, description="e.g. kg, lb, cm, mg/dL, umol/L, g/dL")
    time: AwareDatetime | None = Field(None, description="when measured (default: now)")


class TwinCreate(_Request):
    """A new twin (version 0) and, optionally, its first events: demographics, covariates, genotype."""

    patient_id: PatientIdField
    demographics: DemographicsIn | None = None
    covariates: list[CovariateIn] = Field(default_factory=list, max_length=MAX_EVENTS_PER_WRITE)
    genotype: CallResult | None = Field(None, description="a `pgxtwin call --format json` result (one sample)")


class CovariatesIn(_Request):
    """New covariate measurements and/or demographics."""

    measurements: list[CovariateIn] = Field(default_factory=list, max_length=MAX_EVENTS_PER_WRITE)
    demographics: DemographicsIn | None = None


class MedicationIn(_Request):
    """Start a medication (as ``pgxtwin twin medicate``); ``given`` doses already administered are
    recorded every ``every`` from ``start``."""

    drug: DrugText
    dose: DoseText
    every: EveryText = "24h"
    start: AwareDatetime | None = Field(None, description="first dose (default: now)")
    given: int = Field(0, ge=0, le=MAX_DOSES_GIVEN, description="doses already administered")
    route: Route = "oral"
    infusion_h: float | None = Field(None, gt=0, le=48, allow_inf_nan=False,
                                     description="duration of each iv_infusion dose, h")


class ObservationIn(_Request):
    """A measured drug level (as ``pgxtwin twin observe``); the drug's posterior is re-estimated after it.

    Give the sample ``time`` or ``hours_after_first_dose``; below the limit of quantification,
    ``blq`` with ``lloq``."""

    drug: DrugText
    value: float | None = Field(None, ge=0, allow_inf_nan=False, description="concentration in `unit`")
    unit: str = Field("mg/L", min_length=1, max_length=20, description="e.g. mg/L, ng/mL, umol/L")
    time: AwareDatetime | None = None
    hours_after_first_dose: float | None = Field(None, ge=0, le=24 * 3650, allow_inf_nan=False)
    blq: bool = False
    lloq: float | None = Field(None, gt=0, allow_inf_nan=False)
    analyte: str | None = Field(None, min_length=1, max_length=100, description="when not the parent drug")


class EventsIn(_Request):
    """Raw twin events (see :mod:`pgxtwin.twin.state`), appended in order, one version each."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS_PER_WRITE)


class AppendedEvent(BaseModel):
    version: int
    event_type: str
    summary: str


class WriteResult(BaseModel):
    """The twin after a write: its new version (also the ``ETag``) and the events appended."""

    patient_id: str
    version: int
    appended: list[AppendedEvent]
    medication_id: str | None = None
    estimate: dict[str, Any] | None = Field(None, description="the re-estimated posterior (observations)")
    notes: list[str] = Field(default_factory=list)


# ------------------------------------------------------------------------------ twins: reads

class TwinSummary(BaseModel):
    patient_id: str
    version: int
    href: str


class PatientPage(BaseModel):
    items: list[TwinSummary]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last")
    next: str | None = Field(None, description="URL of the next page")


class CovariatesNow(BaseModel):
    """Covariates in effect at ``time`` and derived renal function."""

    time: datetime
    age_years: float | None = None
    sex: str | None = None
    weight_kg: float | None = None
    height_cm: float | None = None
    serum_creatinine_mg_dl: float | None = None
    albumin_g_dl: float | None = None
    crcl_ml_min: float | None = None
    egfr_ml_min_1_73m2: float | None = None


class PhenotypeSummary(BaseModel):
    status: str
    diplotypes: list[str]
    phenotype: str
    activity_score: float | None = None


class TwinDocument(BaseModel):
    """A twin at one version: a summary (covariates now, phenotypes) and the full state."""

    patient_id: str
    version: int
    latest_version: int
    covariates: CovariatesNow
    phenotypes: dict[str, PhenotypeSummary] = Field(description="genes with a phenotype or an outside call")
    state: TwinState


class HistoryItem(BaseModel):
    version: int
    event_type: str
    summary: str
    created_at: datetime
    actor: str
    entry_point: str


class HistoryPage(BaseModel):
    patient_id: str
    items: list[HistoryItem]
    next_cursor: str | None = None
    next: str | None = None


# ------------------------------------------------------------------------------ jobs

class JobView(BaseModel):
    """A background job: ``queued`` → ``running`` → ``succeeded`` (``result``) or ``failed`` (``error``)."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    patient_id: str | None
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None = None
    error: str | None = Field(None, description="one line: why the job failed")
    href: str


# ------------------------------------------------------------------------------ decisions

class PrescriptionIn(_Request):
    drug: DrugText
    dose: DoseText
    every: EveryText = "24h"


class EvaluateIn(_Request):
    """Prescriptions to check; empty: the twin's current medications."""

    prescriptions: list[PrescriptionIn] = Field(default_factory=list, max_length=20)


class EvaluationOut(BaseModel):
    """One verdict (as ``pgxtwin twin evaluate --json``); further fields as there."""

    model_config = ConfigDict(extra="allow")

    drug: str
    regimen: dict[str, float]
    verdict: Literal["ok", "adjust_dose", "avoid", "insufficient_data"]
    reasons: list[str]
    notes: list[str]


class EvaluationsOut(BaseModel):
    patient_id: str
    version: int
    evaluations: list[EvaluationOut]


class RecommendationOut(BaseModel):
    """The regimen with the highest probability of target attainment (as ``pgxtwin twin recommend --json``)."""

    patient_id: str
    version: int
    drug: str
    recommendation: dict[str, Any]


class PatientIn(_Request):
    """A (virtual) patient for a stateless simulation, as the options of ``pgxtwin simulate``."""

    weight_kg: float | None = Field(None, ge=0.5, le=400)
    height_cm: float | None = Field(None, ge=30, le=260)
    age_years: float | None = Field(None, ge=0, le=120)
    sex: Literal["F", "M"] | None = None
    crcl_ml_min: float | None = Field(None, ge=0, le=300)
    phenotypes: dict[str, str] = Field(default_factory=dict, max_length=50, description='GENE: "Poor Metabolizer"')
    diplotypes: dict[str, Annotated[str, Field(pattern=r"/")]] = Field(
        default_factory=dict, max_length=50, description='GENE: "*1/*3"')
    comedications: list[DrugText] = Field(default_factory=list, max_length=20)
    genotype: CallResult | None = Field(None, description="a `pgxtwin call --format json` result")


class SimulateIn(_Request):
    """A regimen for a typical patient (n = 1) or a virtual population (as ``pgxtwin simulate --json``)."""

    drug: DrugText
    dose: DoseText
    every: EveryText = "24h"
    days: float = Field(14.0, gt=0, le=MAX_SIMULATED_DAYS, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_SIMULATED_PATIENTS, description="virtual patients")
    seed: int = Field(1, ge=0, le=2**32 - 1)
    times_h: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, min_length=1, max_length=5000, description="hours, strictly increasing (default grid otherwise)")
    patient: PatientIn = Field(default_factory=PatientIn)


class SimulationOut(BaseModel):
    """Concentration quantiles per analyte (mg/L) and last-interval metrics; further fields as the CLI's JSON."""

    model_config = ConfigDict(extra="allow")

    drug: str
    n: int
    analytes: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    notes: list[str]


class Health(BaseModel):
    status: Literal["ok"]
    version: str

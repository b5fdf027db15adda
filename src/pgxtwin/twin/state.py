"""The versioned patient twin: its state, the events that change it, and ``apply``.

A :class:`TwinState` at version *n* is the fold of the patient's first *n* events::

    state = TwinState.empty("pat-123")
    for event in events:
        state = apply(state, event)

``apply`` is pure (no clock, no storage, no randomness): the same events always give the same
state.  Storage lives in :mod:`pgxtwin.store`.

Units (internal, after conversion with pint): mg, L, h, mg/L, kg, cm, serum creatinine mg/dL,
albumin g/dL.  Every time is timezone-aware and kept in UTC.

Validation happens in two places, both raising errors that name the field:

* when an event is built (pydantic): impossible values (a negative concentration, a weight of
  700 kg), unknown or wrong-dimension units, naive datetimes;
* in :func:`apply`, against the state: an unknown medication, a dose before the medication was
  started, a drug concentration sampled before the first dose of that drug, ...
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import pint

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..errors import PgxInputError
from ..genomics.result import CallResult, GeneResult
from ..knowledge.drugs import UnknownDrug, resolve_drug
from .renal import ADULT_AGE_YEARS, ckd_epi_2021_egfr, cockcroft_gault_crcl

if TYPE_CHECKING:  # pgxtwin.pk imports torch (seconds): loaded only where the PK layer is called
    from ..pk.dosing import DosingHistory
    from ..pk.drug_model import GeneInput, PatientFactors

# the administration routes of pgxtwin.pk.dosing.Route (kept equal by a test)
Route = Literal["oral", "iv_bolus", "iv_infusion"]
ROUTES: tuple[str, ...] = ("oral", "iv_bolus", "iv_infusion")

__all__ = [
    "COVARIATES", "Concentration", "CovariateName", "CovariateRecord", "CovariateRecorded", "CovariateSnapshot",
    "Demographics", "DemographicsSet", "DoseRecord", "DoseRecorded", "EVENT_ADAPTER", "EntryRetracted",
    "EstimateRecorded", "Event", "GenotypeRecord", "GenotypeSet", "INR", "InvalidEventError", "Lab", "Medication",
    "MedicationChanged", "MedicationStarted", "MedicationStopped", "Observation", "ObservationRecorded",
    "OutsideCallSet", "ParameterPosterior", "RegimenRecord", "TwinState", "apply", "fold", "parse_event",
]


class InvalidEventError(PgxInputError):
    """An event that is impossible in itself or against the twin's state; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


# ---------------------------------------------------------------------------------------------
# shared field types and unit conversion


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]

# FHIR resource id: [A-Za-z0-9\-\.]{1,64}
FHIR_ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
PatientId = Annotated[str, Field(pattern=FHIR_ID_PATTERN, description="the EHR/FHIR Patient.id")]
RecordId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]


def _new_id() -> str:
    return uuid.uuid4().hex


@lru_cache(maxsize=1)
def _registry() -> pint.UnitRegistry:
    return pint.UnitRegistry()


def _trusted(info: ValidationInfo | None) -> bool:
    """Events read back from the store were checked when written: skip plausibility ranges, so a
    later, tighter range never makes stored history unreadable (units and structure still checked)."""
    return bool(info is not None and info.context and info.context.get("trusted"))


def _finite(value: float, field: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{field}={value!r} must be a finite number")
    return v


_CREATININE_G_PER_MOL = 113.12  # creatinine molar mass: µmol/L -> mg/dL (88.4 µmol/L = 1 mg/dL)
_UNIT_REWRITES = {"mcg": "ug", "μ": "u", "µ": "u", "cc": "mL"}


def _quantity(value: float, unit: str, field: str) -> Any:
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError(f"{field}: a unit is required")
    text = unit.strip()
    for old, new in _UNIT_REWRITES.items():
        text = text.replace(old, new)
    number = _finite(value, field)  # outside the try: a bad number is not an unknown unit
    try:
        return _registry().Quantity(number, text)
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 - pint raises UndefinedUnitError, DefinitionSyntaxError, TokenError, ...
        raise ValueError(f"{field}: unknown unit {unit!r}") from None


def convert(value: float, unit: str, target: str, field: str, *, molar_mass_g_mol: float | None = None) -> float:
    """``value`` in ``unit`` expressed in ``target`` (pint), or ValueError naming ``field``.

    A molar unit (µmol/L) converts to a mass unit only with ``molar_mass_g_mol``."""
    q = _quantity(value, unit, field)
    reg = _registry()
    wanted = reg.get_dimensionality(reg.Unit(target).dimensionality)
    if q.dimensionality != wanted and molar_mass_g_mol is not None:
        q = q * reg.Quantity(molar_mass_g_mol, "g/mol")
    if q.dimensionality != wanted:
        raise ValueError(f"{field}: unit {unit!r} is not a {target}-compatible unit (dimension {q.dimensionality})")
    return float(q.to(target).magnitude)


def _check_range(value: float, field: str, unit: str, low: float, high: float, info: ValidationInfo | None) -> float:
    if value < 0 and low >= 0:
        raise ValueError(f"{field}={value:g} {unit} must not be negative")
    if not _trusted(info) and not (low <= value <= high):
        raise ValueError(f"{field}={value:g} {unit} is outside the plausible range [{low:g}, {high:g}] {unit}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------
# state records

CovariateName = Literal["weight", "height", "serum_creatinine", "albumin"]

# covariate -> (internal unit, plausible low, plausible high, molar mass for molar units)
COVARIATES: dict[str, tuple[str, float, float, float | None]] = {
    "weight": ("kg", 0.5, 400.0, None),
    "height": ("cm", 30.0, 260.0, None),
    "serum_creatinine": ("mg/dL", 0.05, 25.0, _CREATININE_G_PER_MOL),
    "albumin": ("g/dL", 0.5, 7.0, None),
}


class Demographics(_Model):
    """Sex and either a birth date or an age recorded at a given time."""

    sex: Literal["F", "M"] | None = None
    birth_date: date | None = None
    age_years: float | None = None
    age_recorded_at: UtcDatetime | None = None

    def age_at(self, when: datetime) -> float | None:
        """Age in years at ``when`` (birth date preferred; else the recorded age moved forward)."""
        if self.birth_date is not None:
            born = datetime(self.birth_date.year, self.birth_date.month, self.birth_date.day, tzinfo=timezone.utc)
            return (when - born).total_seconds() / (365.25 * 86400.0)
        if self.age_years is not None and self.age_recorded_at is not None:
            return self.age_years + (when - self.age_recorded_at).total_seconds() / (365.25 * 86400.0)
        return None


class CovariateRecord(_Model):
    """One measurement of a time-varying covariate, converted to its internal unit."""

    covariate: CovariateName
    value: float
    unit: str
    time: UtcDatetime
    original: str | None = Field(default=None, description="value and unit as given, when converted")

    @model_validator(mode="before")
    @classmethod
    def _convert(cls, data: Any, info: ValidationInfo) -> Any:
        return _covariate_fields(data, info)


def _covariate_fields(data: Any, info: ValidationInfo) -> Any:
    # a non-string covariate (e.g. an object in a hand-written event) is left to pydantic to refuse
    if not isinstance(data, dict) or not isinstance(data.get("covariate"), str) or data["covariate"] not in COVARIATES:
        return data
    name = data["covariate"]
    target, low, high, molar = COVARIATES[name]
    if "value" not in data or "unit" not in data:
        return data  # pydantic reports the missing field
    given_unit = data["unit"]
    value = convert(data["value"], given_unit, target, name, molar_mass_g_mol=molar)
    _check_range(value, name, target, low, high, info)
    out = dict(data, value=value, unit=target)
    if isinstance(given_unit, str) and given_unit.strip() != target and out.get("original") is None:
        out["original"] = f"{data['value']} {given_unit}"
    return out


class CovariateSnapshot(_Model):
    """Covariates in effect at one time (the latest measurement at or before it) and derived renal function."""

    time: UtcDatetime
    age_years: float | None = None
    sex: Literal["F", "M"] | None = None
    weight_kg: float | None = None
    height_cm: float | None = None
    serum_creatinine_mg_dl: float | None = None
    albumin_g_dl: float | None = None
    crcl_ml_min: float | None = Field(None, description="Cockcroft-Gault (PMID 1244564), adults")
    egfr_ml_min_1_73m2: float | None = Field(None, description="CKD-EPI 2021 race-free (PMID 34554658), adults")


class GenotypeRecord(_Model):
    """The genotype call (``CallResult`` JSON with its knowledge-base version) and outside calls."""

    call_result: CallResult | None = None
    outside_calls: dict[str, GeneResult] = Field(default_factory=dict)
    recorded_at: UtcDatetime | None = None

    @property
    def knowledge_base_version(self) -> str | None:
        return None if self.call_result is None else self.call_result.knowledge_base.version

    @property
    def genes(self) -> dict[str, GeneResult]:
        """Per gene, the outside call when there is one, else the VCF-based call."""
        genes = dict(self.call_result.genes) if self.call_result is not None else {}
        genes.update(self.outside_calls)
        return genes


class DoseRecord(_Model):
    dose_id: RecordId
    time: UtcDatetime
    amount_mg: float
    route: Route
    duration_h: float = 0.0
    retracted: bool = False


class RegimenRecord(_Model):
    """The prescribed regimen from ``time`` on (a start or a change)."""

    time: UtcDatetime
    dose_mg: float | None = None
    interval_h: float | None = None
    route: Route
    reason: str | None = None


class Medication(_Model):
    medication_id: RecordId
    drug: str = Field(description="drug-library name when the drug is in the library, else the lower-cased name")
    route: Route
    started_at: UtcDatetime
    stopped_at: UtcDatetime | None = None
    stop_reason: str | None = None
    regimen: tuple[RegimenRecord, ...] = ()
    doses: tuple[DoseRecord, ...] = ()

    @property
    def current(self) -> bool:
        return self.stopped_at is None

    def active_at(self, when: datetime) -> bool:
        return self.started_at <= when and (self.stopped_at is None or when < self.stopped_at)

    def dosing_history(self, origin: datetime) -> DosingHistory:
        """Recorded (not retracted) doses as a :class:`DosingHistory` in hours since ``origin``."""
        from ..pk.dosing import DosingEvent, DosingHistory

        events = [
            DosingEvent((d.time - origin).total_seconds() / 3600.0, d.amount_mg, d.route, d.duration_h)
            for d in self.doses if not d.retracted
        ]
        return DosingHistory.from_events(events)


def _concentration_fields(data: Any, info: ValidationInfo) -> Any:
    if not isinstance(data, dict) or "unit" not in data:
        return data
    unit = data["unit"]
    out = dict(data, unit="mg/L")
    for name in ("value", "lloq"):
        raw = data.get(name)
        if raw is None:
            continue
        value = convert(raw, unit, "mg/L", name)
        if value < 0:
            raise ValueError(f"{name}={raw:g} {unit} must not be negative")
        out[name] = value
    if isinstance(unit, str) and unit.strip() != "mg/L" and out.get("original_unit") is None:
        out["original_unit"] = unit
    return out


class Concentration(_Model):
    """A drug (or metabolite) concentration, mg/L; below the LLOQ: ``blq`` with ``lloq`` (value optional)."""

    kind: Literal["concentration"] = "concentration"
    observation_id: RecordId = Field(default_factory=_new_id)
    drug: str
    analyte: str | None = Field(None, description="measured analyte when not the parent drug (e.g. endoxifen)")
    time: UtcDatetime = Field(description="sample time")
    value: float | None = None
    unit: Literal["mg/L"] = "mg/L"
    blq: bool = False
    lloq: float | None = None
    original_unit: str | None = None
    retracted: bool = False

    @model_validator(mode="before")
    @classmethod
    def _convert(cls, data: Any, info: ValidationInfo) -> Any:
        return _concentration_fields(data, info)

    @field_validator("drug")
    @classmethod
    def _drug(cls, value: str) -> str:
        return normalise_drug(value)

    @model_validator(mode="after")
    def _consistent(self) -> Concentration:
        if self.blq:
            if self.lloq is None:
                raise ValueError("lloq: a BLQ concentration needs the lower limit of quantification")
            if self.value is not None and self.value >= self.lloq:
                raise ValueError(f"value={self.value:g} mg/L is not below lloq={self.lloq:g} mg/L but blq is true")
        else:
            if self.value is None:
                raise ValueError("value: required unless blq is true")
            if self.lloq is not None and self.value < self.lloq:
                raise ValueError(
                    f"value={self.value:g} mg/L is below lloq={self.lloq:g} mg/L: record it with blq=true"
                )
        if self.lloq is not None and self.lloq <= 0:
            raise ValueError(f"lloq={self.lloq:g} mg/L must be positive")
        return self


class Lab(_Model):
    """Any other laboratory value, kept with its unit as reported."""

    kind: Literal["lab"] = "lab"
    observation_id: RecordId = Field(default_factory=_new_id)
    name: str = Field(min_length=1)
    time: UtcDatetime
    value: float
    unit: str = Field(min_length=1)
    code: str | None = Field(None, description="LOINC code when known")
    retracted: bool = False

    @field_validator("value")
    @classmethod
    def _value(cls, value: float) -> float:
        return _finite(value, "value")


class INR(_Model):
    """International normalised ratio (dimensionless)."""

    kind: Literal["inr"] = "inr"
    observation_id: RecordId = Field(default_factory=_new_id)
    time: UtcDatetime
    value: float
    retracted: bool = False

    @field_validator("value")
    @classmethod
    def _value(cls, value: float, info: ValidationInfo) -> float:
        value = _finite(value, "INR value")
        if value <= 0:
            raise ValueError(f"INR value={value:g} must be positive")
        if not _trusted(info) and value > 20.0:
            raise ValueError(f"INR value={value:g} is outside the plausible range (0, 20]")
        return value


Observation = Annotated[Union[Concentration, Lab, INR], Field(discriminator="kind")]


class ParameterPosterior(_Model):
    """Individual parameter posterior of one drug: mode and covariance of the individual deviations
    (eta, log scale) around the typical values of the drug library identified by ``library_digest``."""

    drug: str
    parameters: tuple[str, ...] = Field(min_length=1)
    mode: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    library_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the drug library")
    estimated_at: UtcDatetime
    based_on_version: int | None = Field(None, ge=0, description="twin version whose data were used")
    method: str | None = None
    n_observations: int | None = Field(None, ge=0)

    @field_validator("drug")
    @classmethod
    def _drug(cls, value: str) -> str:
        return normalise_drug(value)

    @model_validator(mode="after")
    def _shape(self) -> ParameterPosterior:
        n = len(self.parameters)
        if len(set(self.parameters)) != n:
            raise ValueError(f"parameters: names repeat ({', '.join(self.parameters)})")
        if len(self.mode) != n:
            raise ValueError(f"mode: {len(self.mode)} values for {n} parameters")
        if len(self.covariance) != n or any(len(row) != n for row in self.covariance):
            raise ValueError(f"covariance: must be a {n}x{n} matrix")
        for i, row in enumerate(self.covariance):
            for j, v in enumerate(row):
                _finite(v, f"covariance[{i}][{j}]")
                if abs(v - self.covariance[j][i]) > 1e-9 * max(1.0, abs(v)):
                    raise ValueError(f"covariance: not symmetric at [{i}][{j}]")
            if row[i] < 0:
                raise ValueError(f"covariance[{i}][{i}]={row[i]:g} (variance of {self.parameters[i]}) is negative")
        for i, v in enumerate(self.mode):
            _finite(v, f"mode[{i}]")
        return self


def normalise_drug(name: str) -> str:
    """Library name for a known drug (synonyms allowed), else the stripped lower-cased name."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("drug: a drug name is required")
    try:
        return resolve_drug(name)
    except UnknownDrug:
        return name.strip().lower()


# ---------------------------------------------------------------------------------------------
# events


class _Event(_Model):
    def summary(self) -> str:
        return self.type  # type: ignore[attr-defined]


class DemographicsSet(_Event):
    """Sets the given demographics (fields left out keep their value)."""

    type: Literal["demographics_set"] = "demographics_set"
    sex: Literal["F", "M"] | None = None
    birth_date: date | None = None
    age_years: float | None = None
    age_recorded_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> DemographicsSet:
        if self.sex is None and self.birth_date is None and self.age_years is None:
            raise ValueError("demographics_set: give sex, birth_date or age_years")
        if self.age_years is not None:
            _check_range(_finite(self.age_years, "age_years"), "age_years", "years", 0.0, 125.0, info)
            if self.age_recorded_at is None:
                raise ValueError("age_recorded_at: required with age_years (the age changes with time)")
        if self.birth_date is not None and not _trusted(info) and self.birth_date < date(1890, 1, 1):
            raise ValueError(f"birth_date={self.birth_date.isoformat()} is implausibly early")
        return self

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in (("sex", self.sex), ("birth_date", self.birth_date), ("age", self.age_years)) if v is not None]
        return "demographics: " + ", ".join(parts)


class GenotypeSet(_Event):
    """Replaces the genotype: a ``CallResult`` (carrying its knowledge-base version) and outside calls."""

    type: Literal["genotype_set"] = "genotype_set"
    call_result: CallResult
    outside_calls: dict[str, GeneResult] = Field(default_factory=dict)
    recorded_at: UtcDatetime | None = None

    @field_validator("outside_calls")
    @classmethod
    def _outside(cls, calls: dict[str, GeneResult]) -> dict[str, GeneResult]:
        for gene, result in calls.items():
            if result.status != "outside_call":
                raise ValueError(f"outside_calls.{gene}.status must be 'outside_call', not {result.status!r}")
        return calls

    def summary(self) -> str:
        return (f"genotype: {len(self.call_result.genes)} genes (knowledge base {self.call_result.knowledge_base.version})"
                + (f", outside calls {', '.join(sorted(self.outside_calls))}" if self.outside_calls else ""))


class OutsideCallSet(_Event):
    """Adds or replaces one gene's outside call (CYP2D6 from a CNV-aware caller, HLA typing, ...)."""

    type: Literal["outside_call_set"] = "outside_call_set"
    gene: str = Field(min_length=1)
    result: GeneResult
    recorded_at: UtcDatetime | None = None

    @field_validator("result")
    @classmethod
    def _status(cls, result: GeneResult) -> GeneResult:
        if result.status != "outside_call":
            raise ValueError(f"result.status must be 'outside_call', not {result.status!r}")
        return result

    def summary(self) -> str:
        return f"outside call {self.gene}: {', '.join(self.result.diplotypes) or '-'} ({self.result.phenotype})"


class CovariateRecorded(_Event):
    type: Literal["covariate_recorded"] = "covariate_recorded"
    covariate: CovariateName
    value: float
    unit: str
    time: UtcDatetime
    original: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _convert(cls, data: Any, info: ValidationInfo) -> Any:
        return _covariate_fields(data, info)

    def record(self) -> CovariateRecord:
        return CovariateRecord.model_validate(
            self.model_dump(exclude={"type"}), context={"trusted": True}
        )

    def summary(self) -> str:
        return f"{self.covariate} {self.value:g} {self.unit} at {self.time.isoformat()}"


def _dose_mg(data: dict[str, Any], amount_key: str, unit_key: str) -> dict[str, Any]:
    if data.get(amount_key) is None:
        return data
    unit = data.get(unit_key, "mg")
    mg = convert(data[amount_key], unit, "mg", amount_key)
    if mg < 0:
        raise ValueError(f"{amount_key}={data[amount_key]:g} {unit} must not be negative")
    return dict(data, **{amount_key: mg, unit_key: "mg"})


class MedicationStarted(_Event):
    type: Literal["medication_started"] = "medication_started"
    medication_id: RecordId = Field(default_factory=_new_id)
    drug: str
    time: UtcDatetime
    route: Route = "oral"
    dose: float | None = Field(None, description="prescribed amount per administration")
    dose_unit: Literal["mg"] = "mg"
    interval_h: float | None = Field(None, gt=0)
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _mg(cls, data: Any) -> Any:
        return _dose_mg(data, "dose", "dose_unit") if isinstance(data, dict) else data

    @field_validator("drug")
    @classmethod
    def _drug(cls, value: str) -> str:
        return normalise_drug(value)

    def summary(self) -> str:
        dose = f" {self.dose:g} mg" if self.dose is not None else ""
        every = f" every {self.interval_h:g} h" if self.interval_h is not None else ""
        return f"started {self.drug}{dose}{every} {self.route} ({self.medication_id})"


class MedicationChanged(_Event):
    type: Literal["medication_changed"] = "medication_changed"
    medication_id: RecordId
    time: UtcDatetime
    dose: float | None = None
    dose_unit: Literal["mg"] = "mg"
    interval_h: float | None = Field(None, gt=0)
    route: Route | None = None
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _mg(cls, data: Any) -> Any:
        return _dose_mg(data, "dose", "dose_unit") if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _something(self) -> MedicationChanged:
        if self.dose is None and self.interval_h is None and self.route is None:
            raise ValueError("medication_changed: give a new dose, interval_h or route")
        return self

    def summary(self) -> str:
        parts = [p for p in (
            f"dose {self.dose:g} mg" if self.dose is not None else None,
            f"every {self.interval_h:g} h" if self.interval_h is not None else None,
            self.route if self.route is not None else None) if p]
        return f"changed {self.medication_id}: {', '.join(parts)}"


class MedicationStopped(_Event):
    type: Literal["medication_stopped"] = "medication_stopped"
    medication_id: RecordId
    time: UtcDatetime
    reason: str | None = None

    def summary(self) -> str:
        return f"stopped {self.medication_id}" + (f" ({self.reason})" if self.reason else "")


class DoseRecorded(_Event):
    """An administered dose (0 mg = a documented missed dose)."""

    type: Literal["dose_recorded"] = "dose_recorded"
    dose_id: RecordId = Field(default_factory=_new_id)
    medication_id: RecordId
    time: UtcDatetime
    amount: float
    unit: Literal["mg"] = "mg"
    route: Route | None = Field(None, description="the medication's route when left out")
    duration_h: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _mg(cls, data: Any) -> Any:
        return _dose_mg(data, "amount", "unit") if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _infusion(self) -> DoseRecorded:
        if not math.isfinite(self.duration_h) or self.duration_h < 0:
            raise ValueError(f"duration_h={self.duration_h!r} must be a non-negative finite number")
        if self.route == "iv_infusion" and self.duration_h <= 0:
            raise ValueError("duration_h: an iv_infusion needs a duration > 0")
        if self.route is not None and self.route != "iv_infusion" and self.duration_h != 0:
            raise ValueError(f"duration_h={self.duration_h:g} is only meaningful for iv_infusion")
        return self

    def summary(self) -> str:
        return f"dose {self.amount:g} mg of {self.medication_id} at {self.time.isoformat()}"


class ObservationRecorded(_Event):
    type: Literal["observation_recorded"] = "observation_recorded"
    observation: Observation

    def summary(self) -> str:
        o = self.observation
        if isinstance(o, Concentration):
            what = f"< {o.lloq:g} mg/L (BLQ)" if o.blq else f"{o.value:g} mg/L"
            return f"{o.analyte or o.drug} concentration {what} at {o.time.isoformat()}"
        if isinstance(o, Lab):
            return f"lab {o.name} {o.value:g} {o.unit} at {o.time.isoformat()}"
        return f"INR {o.value:g} at {o.time.isoformat()}"


class EntryRetracted(_Event):
    """Marks a recorded dose or observation as entered in error (it stays in the history)."""

    type: Literal["entry_retracted"] = "entry_retracted"
    entry: Literal["dose", "observation"]
    entry_id: RecordId
    reason: str = Field(min_length=1)

    def summary(self) -> str:
        return f"retracted {self.entry} {self.entry_id}: {self.reason}"


class EstimateRecorded(_Event):
    type: Literal["estimate_recorded"] = "estimate_recorded"
    posterior: ParameterPosterior

    def summary(self) -> str:
        p = self.posterior
        return f"estimate for {p.drug} ({', '.join(p.parameters)}) from version {p.based_on_version}"


Event = Annotated[
    Union[
        DemographicsSet, GenotypeSet, OutsideCallSet, CovariateRecorded, MedicationStarted, MedicationChanged,
        MedicationStopped, DoseRecorded, ObservationRecorded, EntryRetracted, EstimateRecorded,
    ],
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_TYPES: tuple[str, ...] = tuple(
    m.model_fields["type"].default for m in (
        DemographicsSet, GenotypeSet, OutsideCallSet, CovariateRecorded, MedicationStarted, MedicationChanged,
        MedicationStopped, DoseRecorded, ObservationRecorded, EntryRetracted, EstimateRecorded)
)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def parse_event(data: Any, *, trusted: bool = False) -> Event:
    """An event from its JSON form (a dict or an event); errors become :class:`InvalidEventError`.

    ``trusted`` (events read back from the store) skips plausibility ranges, see ``_trusted``."""
    if isinstance(data, BaseModel) and not trusted:
        return data  # type: ignore[return-value]
    try:
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return EVENT_ADAPTER.validate_python(data, context={"trusted": trusted})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidEventError(f"invalid event: {_describe(exc)}",
                                field=".".join(str(p) for p in first["loc"]) or None) from None


# ---------------------------------------------------------------------------------------------
# the state


class TwinState(_Model):
    """One patient's twin at ``version`` (the number of events folded into it)."""

    patient_id: PatientId
    version: int = Field(0, ge=0)
    demographics: Demographics = Field(default_factory=Demographics)
    covariates: tuple[CovariateRecord, ...] = ()
    genotype: GenotypeRecord = Field(default_factory=GenotypeRecord)
    medications: dict[str, Medication] = Field(default_factory=dict, description="by medication_id, in start order")
    observations: tuple[Observation, ...] = ()
    posteriors: dict[str, ParameterPosterior] = Field(default_factory=dict, description="latest estimate per drug")

    @classmethod
    def empty(cls, patient_id: str) -> TwinState:
        try:
            return cls(patient_id=patient_id)
        except ValidationError:
            raise InvalidEventError(
                f"patient_id={patient_id!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)", field="patient_id"
            ) from None

    # --- covariates
    def covariate_at(self, name: str, when: datetime) -> CovariateRecord | None:
        """Latest measurement of ``name`` at or before ``when`` (a later-recorded one wins a tie)."""
        best = None
        for rec in self.covariates:
            if rec.covariate == name and rec.time <= when and (best is None or rec.time >= best.time):
                best = rec
        return best

    def covariates_at(self, when: datetime) -> CovariateSnapshot:
        """Covariates in effect at ``when`` with CrCL (Cockcroft–Gault) and eGFR (CKD-EPI 2021)."""
        def value(name: str) -> float | None:
            rec = self.covariate_at(name, when)
            return None if rec is None else rec.value

        age = self.demographics.age_at(when)
        sex = self.demographics.sex
        weight, scr = value("weight"), value("serum_creatinine")
        crcl = egfr = None
        if age is not None and sex is not None and scr is not None and age >= ADULT_AGE_YEARS:
            egfr = ckd_epi_2021_egfr(age, scr, sex)
            if weight is not None:
                crcl = cockcroft_gault_crcl(age, weight, scr, sex)
        return CovariateSnapshot(
            time=when, age_years=age, sex=sex, weight_kg=weight, height_cm=value("height"),
            serum_creatinine_mg_dl=scr, albumin_g_dl=value("albumin"), crcl_ml_min=crcl, egfr_ml_min_1_73m2=egfr,
        )

    # --- genotype
    def gene_inputs(self) -> dict[str, GeneInput]:
        """What the PK layer needs per gene (see :meth:`GeneInput.from_gene_result`)."""
        from ..pk.drug_model import gene_inputs

        return gene_inputs(self.genotype.genes)

    # --- medications
    @property
    def current_medications(self) -> list[Medication]:
        return [m for m in self.medications.values() if m.current]

    @property
    def past_medications(self) -> list[Medication]:
        return [m for m in self.medications.values() if not m.current]

    def doses_of(self, drug: str) -> list[DoseRecord]:
        """Recorded, not retracted doses of ``drug`` (all its medication entries), by time."""
        name = normalise_drug(drug)
        doses = [d for m in self.medications.values() if m.drug == name for d in m.doses if not d.retracted]
        return sorted(doses, key=lambda d: d.time)

    def first_dose_time(self, drug: str) -> datetime | None:
        doses = self.doses_of(drug)
        return doses[0].time if doses else None

    def concentrations(self, drug: str | None = None) -> list[Concentration]:
        name = None if drug is None else normalise_drug(drug)
        return sorted(
            (o for o in self.observations
             if isinstance(o, Concentration) and not o.retracted and (name is None or o.drug == name)),
            key=lambda o: o.time,
        )

    def patient_factors(self, when: datetime) -> PatientFactors:
        """Covariates, genotype and co-medications at ``when`` for :mod:`pgxtwin.pk`."""
        from ..pk.drug_model import PatientFactors

        snap = self.covariates_at(when)
        comeds = tuple(sorted({m.drug for m in self.medications.values() if m.active_at(when)}))
        return PatientFactors(
            weight_kg=snap.weight_kg, height_cm=snap.height_cm, age_years=snap.age_years, sex=snap.sex,
            crcl_ml_min=None if snap.crcl_ml_min is None else min(snap.crcl_ml_min, 300.0),
            genes=self.gene_inputs(), comedications=comeds,
        )


# ---------------------------------------------------------------------------------------------
# apply


def _fail(message: str, field: str) -> None:
    raise InvalidEventError(message, field=field)


def _medication(state: TwinState, event: Any) -> Medication:
    med = state.medications.get(event.medication_id)
    if med is None:
        _fail(f"{event.type}.medication_id={event.medication_id!r}: no such medication in twin "
              f"{state.patient_id!r} (start it first)", "medication_id")
    assert med is not None
    if event.time < med.started_at:
        _fail(f"{event.type}.time={event.time.isoformat()} is before {med.drug} ({med.medication_id}) "
              f"was started at {med.started_at.isoformat()}", "time")
    if med.stopped_at is not None and event.time > med.stopped_at:
        _fail(f"{event.type}.time={event.time.isoformat()} is after {med.drug} ({med.medication_id}) "
              f"was stopped at {med.stopped_at.isoformat()}", "time")
    return med


def _with_medication(state: TwinState, med: Medication) -> dict[str, Medication]:
    meds = dict(state.medications)
    meds[med.medication_id] = med
    return meds


def _ids_in_use(state: TwinState) -> set[str]:
    return {d.dose_id for m in state.medications.values() for d in m.doses} | {o.observation_id for o in state.observations}


def apply(state: TwinState, event: Event) -> TwinState:
    """The state after ``event`` (version + 1), or :class:`InvalidEventError` naming the field.

    Pure: ``state`` is not modified."""
    update: dict[str, Any]
    if isinstance(event, DemographicsSet):
        given = event.model_dump(exclude={"type"}, exclude_none=True)
        update = {"demographics": state.demographics.model_copy(update=given)}
    elif isinstance(event, GenotypeSet):
        update = {"genotype": GenotypeRecord(
            call_result=event.call_result, outside_calls=dict(event.outside_calls), recorded_at=event.recorded_at)}
    elif isinstance(event, OutsideCallSet):
        calls = dict(state.genotype.outside_calls)
        calls[event.gene] = event.result
        update = {"genotype": state.genotype.model_copy(update={"outside_calls": calls})}
    elif isinstance(event, CovariateRecorded):
        update = {"covariates": state.covariates + (event.record(),)}
    elif isinstance(event, MedicationStarted):
        if event.medication_id in state.medications:
            _fail(f"medication_started.medication_id={event.medication_id!r} is already used in twin "
                  f"{state.patient_id!r}", "medication_id")
        med = Medication(
            medication_id=event.medication_id, drug=event.drug, route=event.route, started_at=event.time,
            regimen=(RegimenRecord(time=event.time, dose_mg=event.dose, interval_h=event.interval_h,
                                   route=event.route, reason=event.reason),),
        )
        update = {"medications": _with_medication(state, med)}
    elif isinstance(event, MedicationChanged):
        med = _medication(state, event)
        last = med.regimen[-1] if med.regimen else None
        route = event.route or med.route
        regimen = RegimenRecord(
            time=event.time, route=route, reason=event.reason,
            dose_mg=event.dose if event.dose is not None else (last.dose_mg if last else None),
            interval_h=event.interval_h if event.interval_h is not None else (last.interval_h if last else None),
        )
        update = {"medications": _with_medication(
            state, med.model_copy(update={"route": route, "regimen": med.regimen + (regimen,)}))}
    elif isinstance(event, MedicationStopped):
        med = _medication(state, event)
        if med.stopped_at is not None:
            _fail(f"medication_stopped: {med.drug} ({med.medication_id}) was already stopped at "
                  f"{med.stopped_at.isoformat()}", "medication_id")
        last_dose = max((d.time for d in med.doses if not d.retracted), default=None)
        if last_dose is not None and event.time < last_dose:
            _fail(f"medication_stopped.time={event.time.isoformat()} is before the last recorded dose at "
                  f"{last_dose.isoformat()}", "time")
        update = {"medications": _with_medication(
            state, med.model_copy(update={"stopped_at": event.time, "stop_reason": event.reason}))}
    elif isinstance(event, DoseRecorded):
        med = _medication(state, event)
        if event.dose_id in _ids_in_use(state):
            _fail(f"dose_recorded.dose_id={event.dose_id!r} is already used", "dose_id")
        route = event.route or med.route
        if route == "iv_infusion" and event.duration_h <= 0:
            _fail(f"dose_recorded.duration_h: {med.drug} is given as iv_infusion and needs a duration > 0",
                  "duration_h")
        if route != "iv_infusion" and event.duration_h != 0:
            _fail(f"dose_recorded.duration_h={event.duration_h:g} is only meaningful for iv_infusion", "duration_h")
        dose = DoseRecord(dose_id=event.dose_id, time=event.time, amount_mg=event.amount, route=route,
                          duration_h=event.duration_h)
        update = {"medications": _with_medication(state, med.model_copy(update={"doses": med.doses + (dose,)}))}
    elif isinstance(event, ObservationRecorded):
        obs = event.observation
        if obs.observation_id in _ids_in_use(state):
            _fail(f"observation_recorded.observation.observation_id={obs.observation_id!r} is already used",
                  "observation_id")
        if isinstance(obs, Concentration):
            first = state.first_dose_time(obs.drug)
            if first is None:
                _fail(f"observation_recorded.observation.time: no dose of {obs.drug} is recorded, so a "
                      f"{obs.analyte or obs.drug} concentration cannot be placed (record the doses first)", "time")
            elif obs.time < first:
                _fail(f"observation_recorded.observation.time={obs.time.isoformat()} is before the first dose of "
                      f"{obs.drug} at {first.isoformat()}", "time")
        update = {"observations": state.observations + (obs,)}
    elif isinstance(event, EntryRetracted):
        update = _retract(state, event)
    elif isinstance(event, EstimateRecorded):
        post = event.posterior
        if post.based_on_version is not None and post.based_on_version > state.version:
            _fail(f"estimate_recorded.posterior.based_on_version={post.based_on_version} is later than the "
                  f"twin's version {state.version}", "based_on_version")
        posteriors = dict(state.posteriors)
        posteriors[post.drug] = post
        update = {"posteriors": posteriors}
    else:
        raise InvalidEventError(f"unknown event {type(event).__name__}", field="type")
    update["version"] = state.version + 1
    return state.model_copy(update=update)


def _retract(state: TwinState, event: EntryRetracted) -> dict[str, Any]:
    if event.entry == "observation":
        found = False
        observations = []
        for obs in state.observations:
            if obs.observation_id == event.entry_id:
                if obs.retracted:
                    _fail(f"entry_retracted: observation {event.entry_id!r} is already retracted", "entry_id")
                obs, found = obs.model_copy(update={"retracted": True}), True
            observations.append(obs)
        if not found:
            _fail(f"entry_retracted.entry_id={event.entry_id!r}: no such observation", "entry_id")
        return {"observations": tuple(observations)}
    for med in state.medications.values():
        for i, dose in enumerate(med.doses):
            if dose.dose_id == event.entry_id:
                if dose.retracted:
                    _fail(f"entry_retracted: dose {event.entry_id!r} is already retracted", "entry_id")
                doses = med.doses[:i] + (dose.model_copy(update={"retracted": True}),) + med.doses[i + 1:]
                return {"medications": _with_medication(state, med.model_copy(update={"doses": doses}))}
    _fail(f"entry_retracted.entry_id={event.entry_id!r}: no such dose", "entry_id")
    raise AssertionError  # unreachable


def fold(patient_id: str, events: Iterable[Event]) -> TwinState:
    """The state after applying ``events`` in order to an empty twin."""
    state = TwinState.empty(patient_id)
    for event in events:
        state = apply(state, event)
    return state

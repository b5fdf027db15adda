"""The trial file: a YAML description of an in-silico trial, validated with pydantic.

A trial screens ``population.size`` virtual patients (drawn from the population ``mix``), enrols
those who meet the inclusion criteria, and simulates every enrolled patient in every arm (each
virtual patient is their own control) for ``duration_days``; the whole trial is repeated
``replicates`` times with fresh populations.  Example::

    name: escitalopram-cyp2c19
    seed: 42
    replicates: 1
    duration_days: 28
    population:
      size: 100000
      mix: {european: 0.7, east_asian: 0.3}   # pgxtwin population groups (CPIC's)
      inclusion: {age: [18, 65], phenotypes: {CYP2C19: [Normal Metabolizer, Poor Metabolizer]}}
    arms:
      - {name: label, kind: standard, drug: escitalopram}
      - {name: model-guided, kind: genotype_guided, drug: escitalopram}
      - {name: cpic, kind: cpic, drug: escitalopram, alternative: sertraline}
      - {name: sertraline, kind: alternative, drug: sertraline}
    endpoints: [target_attainment, time_in_window, adverse_reaction]

Errors name the file, the YAML key and the reason (``trial.yaml: arms[1].kind: unknown arm kind
'magic' (expected one of ...)``) and are raised before any work starts.  Checks that need the drug
library (endpoint fields, CPIC coverage) live in :mod:`pgxtwin.population.trial`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import PgxInputError

ArmKind = Literal["standard", "genotype_guided", "cpic", "alternative"]
Endpoint = Literal["target_attainment", "time_in_window", "adverse_reaction", "efficacy_proxy"]
ARM_KINDS: tuple[str, ...] = get_args(ArmKind)
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
# Frequencies of the mix must sum to one up to this (absolute) tolerance.
MIX_TOLERANCE = 1e-6
DEFAULT_CHUNK_SIZE = 262_144

# What a literal-valued key is called in error messages.
_LITERAL_NAMES = {"kind": "arm kind", "endpoints": "endpoint", "sex": "sex"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Bound = float | None


class Inclusion(_Strict):
    """Inclusion criteria; every bound is inclusive, ``null`` leaves that side open.

    ``age`` (years) is passed to the population generator as its age range; the other criteria
    filter the generated patients.
    """

    age: tuple[float, float] | None = None
    sex: list[Literal["F", "M"]] | None = Field(default=None, min_length=1)
    weight_kg: tuple[Bound, Bound] | None = None
    crcl_ml_min: tuple[Bound, Bound] | None = None
    phenotypes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("age")
    @classmethod
    def _age(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (0 <= value[0] <= value[1] <= 120):
            raise ValueError(f"must be [low, high] with 0 <= low <= high <= 120 years, not {list(value)}")
        return value

    @field_validator("weight_kg", "crcl_ml_min")
    @classmethod
    def _range(cls, value: tuple[Bound, Bound] | None) -> tuple[Bound, Bound] | None:
        if value is not None and value[0] is not None and value[1] is not None and value[0] > value[1]:
            raise ValueError(f"low bound {value[0]:g} exceeds high bound {value[1]:g}")
        return value

    @field_validator("phenotypes")
    @classmethod
    def _phenotypes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for gene, names in value.items():
            if not names:
                raise ValueError(f"{gene}: list at least one phenotype")
        return value


class Population(_Strict):
    """Who is screened: ``size`` patients per replicate from the ``mix`` of population groups."""

    size: int = Field(ge=1, description="virtual patients screened per replicate")
    mix: dict[str, float] = Field(min_length=1, description="population group -> frequency (sums to 1)")
    inclusion: Inclusion = Inclusion()
    comedication_prevalence: dict[str, float] = Field(
        default_factory=dict, description="perpetrator drug -> fraction of patients taking it (the trial's own figures)"
    )

    @field_validator("comedication_prevalence")
    @classmethod
    def _prevalence(cls, value: dict[str, float]) -> dict[str, float]:
        for drug, share in value.items():
            if not math.isfinite(share) or not 0.0 <= share <= 1.0:
                raise ValueError(f"{drug}: prevalence must lie in [0, 1], not {share!r}")
        return value

    @field_validator("mix")
    @classmethod
    def _mix(cls, value: dict[str, float]) -> dict[str, float]:
        for group, share in value.items():
            if not math.isfinite(share) or share < 0:
                raise ValueError(f"{group}: frequency must be a finite number >= 0, not {share!r}")
        total = math.fsum(value.values())
        if abs(total - 1.0) > MIX_TOLERANCE:
            raise ValueError(f"frequencies sum to {total:g}, not 1")
        return value


class Arm(_Strict):
    """One arm: what every enrolled patient receives.

    - ``standard``: the drug's label regimen (``dose``/``interval_h`` override it);
    - ``genotype_guided``: the twin's dose optimiser (:func:`pgxtwin.twin.regimen.choose_regimen`)
      under the prior, per patient stratum;
    - ``cpic``: the CPIC recommendation for the patient's phenotypes; where CPIC says to avoid the
      drug, the patient receives ``alternative`` at its label regimen;
    - ``alternative``: every patient receives ``drug`` (a comparator) at its label regimen.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    kind: ArmKind
    drug: str = Field(min_length=1)
    dose: str | None = None
    interval_h: float | None = Field(default=None, gt=0)
    alternative: str | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "Arm":
        if self.kind not in ("standard", "alternative") and (self.dose is not None or self.interval_h is not None):
            raise ValueError(f"dose and interval_h apply to standard and alternative arms, not {self.kind}")
        if self.kind != "cpic" and self.alternative is not None:
            raise ValueError(f"alternative applies to cpic arms, not {self.kind}")
        return self


class TrialSpec(_Strict):
    """A whole trial file."""

    name: str = Field(default="trial", min_length=1)
    seed: int = Field(default=0, ge=0, lt=2**63)
    replicates: int = Field(default=1, ge=1)
    duration_days: float = Field(gt=0, allow_inf_nan=False)
    population: Population
    arms: list[Arm] = Field(min_length=1)
    endpoints: list[Endpoint] = Field(min_length=1)
    stratify_by: list[str] | None = Field(
        default=None, min_length=1, description="genes whose phenotypes define the summary strata"
    )
    chunk_size: int | None = Field(default=None, ge=1, description="patients per task (the CLI overrides)")

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[Arm]) -> list[Arm]:
        seen: set[str] = set()
        for arm in arms:
            if arm.name in seen:
                raise ValueError(f"arm name {arm.name!r} is used twice")
            seen.add(arm.name)
        return arms

    @field_validator("endpoints")
    @classmethod
    def _unique_endpoints(cls, endpoints: list[str]) -> list[str]:
        for name in endpoints:
            if endpoints.count(name) > 1:
                raise ValueError(f"endpoint {name!r} is listed twice")
        return endpoints


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(error: dict) -> tuple[str, str]:
    """(key, reason) for one pydantic error, in the words of the trial file."""
    # validators on a model report at the model's key; drop pydantic's union/branch markers
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in ("function-after",))))
    key = _where(loc) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        field = next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
        what = _LITERAL_NAMES.get(field, field)
        options = ", ".join(part.strip().strip("'") for part in expected.replace(" or ", ", ").split(","))
        return key, f"unknown {what} {value!r} (expected one of {options})"
    if kind == "missing":
        return key, "required key is missing"
    if kind == "extra_forbidden":
        return key, "unknown key"
    if kind == "value_error":
        return key, str(error.get("ctx", {}).get("error", error["msg"]))
    bounds = error.get("ctx", {})
    if kind == "greater_than_equal":
        return key, f"must be at least {bounds['ge']:g} (got {value!r})"
    if kind == "greater_than":
        return key, f"must be greater than {bounds['gt']:g} (got {value!r})"
    if kind == "too_short":
        return key, f"must list at least {bounds['min_length']} item(s)"
    message = error["msg"][0].lower() + error["msg"][1:]
    return key, f"{message} (got {value!r})"


def parse_trial(data: object, source: str) -> TrialSpec:
    """Validate an already-loaded YAML document; errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise PgxInputError("a trial file is a YAML mapping (name, population, arms, endpoints, ...)", source=source)
    try:
        return TrialSpec.model_validate(data)
    except ValidationError as exc:
        key, reason = _describe(exc.errors()[0])
        raise PgxInputError(f"{key}: {reason}", source=source) from None


def load_trial(path: str | Path) -> TrialSpec:
    """Read and validate a trial file (schema only; see :func:`pgxtwin.population.trial.plan_trial`)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PgxInputError("no such file", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PgxInputError(f"cannot read the file: {exc}", source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise PgxInputError(f"invalid YAML: {problem}", source=source, line=mark.line + 1 if mark else None) from None
    return parse_trial(data, source)

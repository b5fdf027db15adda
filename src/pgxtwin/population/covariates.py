"""Covariates of virtual adults: sex, age, height, weight, serum creatinine, creatinine clearance.

Distributions and their sources are in ``knowledge/data/body_measures.yaml`` (NCHS/NHANES
2021-2023 height and BMI percentiles by sex and age band, NHANES III serum creatinine by sex);
read its header for what is modelled and what is a stated assumption.  Everything here is vectorised: covariates are inverse CDFs
(quantile functions) of each patient's own random bits, so they depend on nothing else.

Units: years, cm, kg, mg/dL, mL/min.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import re

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import ndtri

from ..twin.renal import ADULT_AGE_YEARS

BODY_RESOURCE = "body_measures.yaml"
MAX_AGE_YEARS = 120.0
Z_LIMIT = 3.090232306167813  # ndtri(0.999): draws are truncated to the 0.1st-99.9th percentile
SEXES = ("F", "M")  # code 0 = F, 1 = M (as PatientFactors.sex)
N_UNIFORMS = 5  # random 32-bit words per patient: sex, age, height, BMI, creatinine
TABLE_BITS = 16  # quantile tables have 2**16 intervals: 16 random bits pick one, 16 interpolate
TABLE_SIZE = 2**TABLE_BITS
_FRACTION_BITS = 32 - TABLE_BITS
_FRACTION_MASK = np.uint32(2**_FRACTION_BITS - 1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_BAND = re.compile(r"^(?P<low>[0-9]+)(?:-(?P<high>[0-9]+)|\+)$")  # "20-29" or "80+"


def _band_bounds(names: list[str]) -> list[float]:
    """Lower bounds (years) of contiguous age bands "18-19", "20-29", ..., "80+" (in order)."""
    matches = [_BAND.match(name) for name in names]
    for i, (name, match) in enumerate(zip(names, matches)):
        if match is None or (match["high"] is None) != (i == len(names) - 1):
            raise ValueError(f"age band {name!r}: expected LOW-HIGH, the last one LOW+")
        if i and int(match["low"]) != int(matches[i - 1]["high"]) + 1:  # type: ignore[index]
            raise ValueError(f"age band {name!r} does not start where the previous one ends")
    return [float(m["low"]) for m in matches]  # type: ignore[index]


class _Percentiles(_Strict):
    """Percentile values per sex and age band; None where the source shows no value."""

    source: str
    percentiles: list[float]
    F: dict[str, list[float | None]]
    M: dict[str, list[float | None]]

    @model_validator(mode="after")
    def _shape(self) -> "_Percentiles":
        if list(self.percentiles) != sorted(self.percentiles) or not 0 < self.percentiles[0] < self.percentiles[-1] < 100:
            raise ValueError("percentiles must increase within (0, 100)")
        if list(self.F) != list(self.M):
            raise ValueError("F and M must list the same age bands in the same order")
        _band_bounds(list(self.F))
        for sex, bands in (("F", self.F), ("M", self.M)):
            for band, values in bands.items():
                given = [v for v in values if v is not None]
                if len(values) != len(self.percentiles) or len(given) < 2 or given != sorted(given):
                    raise ValueError(f"{sex} {band}: one value per percentile, at least two given, increasing")
        return self


class _Creatinine(_Strict):
    mean: float = Field(gt=0)
    fraction_at_or_above_threshold: float = Field(gt=0, lt=0.5)


class _CreatinineTable(_Strict):
    source: str
    threshold_mg_dl: float = Field(gt=0)
    F: _Creatinine
    M: _Creatinine


class _BodyFile(_Strict):
    sources: dict[str, dict[str, str]]
    height_cm: _Percentiles
    bmi_kg_m2: _Percentiles
    serum_creatinine_mg_dl: _CreatinineTable

    @model_validator(mode="after")
    def _same_bands(self) -> "_BodyFile":
        if list(self.height_cm.F) != list(self.bmi_kg_m2.F):
            raise ValueError("height_cm and bmi_kg_m2 must use the same age bands")
        return self


def _linear_in_z(table: _Percentiles, z: np.ndarray) -> np.ndarray:
    """Quantile functions, one row per (age band, sex) in the order band 0 F, band 0 M, band 1 F
    ...: the published percentiles joined linearly in z, the end segments extended (a
    normal-shaped tail beyond the outermost published percentiles)."""
    all_knots = ndtri(np.asarray(table.percentiles) / 100.0)
    rows = []
    for band in table.F:
        for values in (table.F[band], table.M[band]):
            given = np.array([v is not None for v in values])
            knots, v = all_knots[given], np.asarray([x for x in values if x is not None], dtype=float)
            low = (v[1] - v[0]) / (knots[1] - knots[0])
            high = (v[-1] - v[-2]) / (knots[-1] - knots[-2])
            row = np.interp(z, knots, v)
            row = np.where(z < knots[0], v[0] + (z - knots[0]) * low, row)
            rows.append(np.where(z > knots[-1], v[-1] + (z - knots[-1]) * high, row))
    return np.stack(rows)


def _lognormal_from_mean_and_tail(mean: float, threshold: float, tail: float) -> tuple[float, float]:
    """(mu, sigma) of the log-normal with this mean and P(X >= threshold) = tail.

    mean = exp(mu + sigma²/2) and ln(threshold) = mu + z·sigma with z = Φ⁻¹(1 - tail) give
    sigma²/2 - z·sigma + ln(threshold/mean) = 0; the smaller root is the one that reproduces the
    tail (the larger one puts the mean far in the right tail)."""
    z = float(ndtri(1.0 - tail))
    disc = z * z - 2.0 * np.log(threshold / mean)
    if disc < 0:
        raise ValueError("no log-normal has this mean and tail")
    sigma = z - float(np.sqrt(disc))
    return float(np.log(mean) - sigma * sigma / 2.0), sigma


@dataclass(frozen=True)
class BodyModel:
    """Quantile functions tabulated at TABLE_SIZE + 1 equally spaced probabilities 0 .. 1 (each
    clipped to the 0.1st-99.9th percentile): height (cm) and BMI (kg/m²) with one row per (age
    band, sex) (row 2·band + sex code), serum creatinine (mg/dL) with one row per sex.
    Sampling interpolates linearly between nodes."""

    band_lower_years: np.ndarray  # lower bound of each age band, ascending (the first <= 18)
    band_of_year: np.ndarray  # (MAX_AGE_YEARS + 1,) intp: completed year of age -> age band
    height_cm: np.ndarray  # float32: 1e-5 cm resolution, half the memory traffic of float64
    bmi: np.ndarray
    creatinine_mg_dl: np.ndarray
    creatinine_log_mean: tuple[float, float]  # log-normal parameters (F, M), ln(mg/dL)
    creatinine_log_sd: tuple[float, float]


@lru_cache(maxsize=1)
def body_model() -> BodyModel:
    """The validated covariate model, tabulated (cached)."""
    text = resources.files("pgxtwin.knowledge.data").joinpath(BODY_RESOURCE).read_text(encoding="utf-8")
    data = _BodyFile.model_validate(yaml.safe_load(text))
    for table in (data.height_cm, data.bmi_kg_m2, data.serum_creatinine_mg_dl):
        if table.source not in data.sources:
            raise ValueError(f"{BODY_RESOURCE}: unknown source {table.source!r}")
    lows = np.asarray(_band_bounds(list(data.height_cm.F)))
    if lows[0] > ADULT_AGE_YEARS:
        raise ValueError(f"{BODY_RESOURCE}: the first age band must start at or below {ADULT_AGE_YEARS:g} years")
    z = np.clip(ndtri(np.linspace(0.0, 1.0, TABLE_SIZE + 1)), -Z_LIMIT, Z_LIMIT)
    scr = data.serum_creatinine_mg_dl
    fits = [_lognormal_from_mean_and_tail(s.mean, scr.threshold_mg_dl, s.fraction_at_or_above_threshold) for s in (scr.F, scr.M)]
    years = np.arange(int(MAX_AGE_YEARS) + 1, dtype=float)
    return BodyModel(
        band_lower_years=lows,
        band_of_year=np.maximum(np.searchsorted(lows, years, side="right") - 1, 0).astype(np.intp),
        height_cm=_linear_in_z(data.height_cm, z).astype(np.float32),
        bmi=_linear_in_z(data.bmi_kg_m2, z).astype(np.float32),
        creatinine_mg_dl=np.stack([np.exp(mu + sd * z) for mu, sd in fits]),
        creatinine_log_mean=(fits[0][0], fits[1][0]),
        creatinine_log_sd=(fits[0][1], fits[1][1]),
    )


def check_age_range(age_range: tuple[float, float]) -> tuple[float, float]:
    """A valid adult age range (years), or ``ValueError`` naming the problem."""
    low, high = (float(a) for a in age_range)
    if not (np.isfinite(low) and np.isfinite(high) and ADULT_AGE_YEARS <= low < high <= MAX_AGE_YEARS):
        raise ValueError(f"age range {low:g}-{high:g} must lie within {ADULT_AGE_YEARS:g}-{MAX_AGE_YEARS:g} years, low < high")
    return low, high


def cockcroft_gault(age_years: np.ndarray, weight_kg: np.ndarray, scr_mg_dl: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Creatinine clearance (mL/min), Cockcroft & Gault 1976 (PMID 1244564), total body weight;
    the vectorised form of :func:`pgxtwin.twin.renal.cockcroft_gault_crcl`."""
    crcl = np.maximum(0.0, 140.0 - age_years) * weight_kg / (72.0 * scr_mg_dl)
    return np.where(female, 0.85 * crcl, crcl)


@dataclass(frozen=True)
class Covariates:
    sex_code: np.ndarray  # int8, index into SEXES
    age_years: np.ndarray
    height_cm: np.ndarray
    weight_kg: np.ndarray
    serum_creatinine_mg_dl: np.ndarray
    crcl_ml_min: np.ndarray


def _lookup(table: np.ndarray, row: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Quantile table at each patient's ``row`` and the probability carried by 32 random bits."""
    flat = table.ravel()
    node = (bits >> np.uint32(_FRACTION_BITS)).astype(np.intp) + row * (TABLE_SIZE + 1)
    frac = ((bits & _FRACTION_MASK).astype(np.float64) + 0.5) * 2.0**-_FRACTION_BITS
    low = flat[node].astype(np.float64, copy=False)
    return low + frac * (flat[node + 1] - low)


def sample_covariates(bits: np.ndarray, age_range: tuple[float, float]) -> Covariates:
    """Covariates from uniform random 32-bit integers ``bits`` of shape (n, N_UNIFORMS)."""
    model = body_model()
    low, high = check_age_range(age_range)
    male = bits[:, 0] >= np.uint32(2**31)  # P(M) = P(F) = 1/2: an assumption, see body_measures.yaml
    male_i = male.astype(np.intp)
    age = low + (high - low) * ((bits[:, 1].astype(np.float64) + 0.5) * 2.0**-32)
    # band bounds are whole years, so the completed year of age picks the band
    row = 2 * model.band_of_year[age.astype(np.intp)] + male_i  # the patient's age band and sex
    height = _lookup(model.height_cm, row, bits[:, 2])
    weight = _lookup(model.bmi, row, bits[:, 3]) * (height / 100.0) ** 2
    scr = _lookup(model.creatinine_mg_dl, male_i, bits[:, 4])
    return Covariates(
        sex_code=male.astype(np.int8),
        age_years=age,
        height_cm=height,
        weight_kg=weight,
        serum_creatinine_mg_dl=scr,
        crcl_ml_min=cockcroft_gault(age, weight, scr, ~male),
    )

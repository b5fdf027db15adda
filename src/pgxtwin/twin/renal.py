"""Renal function derived from serum creatinine (pure functions; units kg, years, mg/dL).

* Creatinine clearance by Cockcroft & Gault, Nephron 1976;16:31-41 (PMID 1244564):
  ``CrCL [mL/min] = (140 - age) * weight / (72 * SCr)``, times 0.85 for women; total body weight,
  as in the original publication (adults).
* eGFR by the race-free CKD-EPI 2021 creatinine equation, Inker et al., N Engl J Med
  2021;385:1737-49 (PMID 34554658):
  ``eGFR [mL/min/1.73 m²] = 142 * min(SCr/k, 1)^a * max(SCr/k, 1)^-1.200 * 0.9938^age * (1.012 if female)``
  with k = 0.7 (F) / 0.9 (M) and a = -0.241 (F) / -0.302 (M); derived for adults (age >= 18).
"""

from __future__ import annotations

import math

__all__ = ["ADULT_AGE_YEARS", "ckd_epi_2021_egfr", "cockcroft_gault_crcl"]

ADULT_AGE_YEARS = 18.0


def _check(name: str, value: float, low: float, high: float) -> float:
    v = float(value)
    if not math.isfinite(v) or not (low <= v <= high):
        raise ValueError(f"{name}={value!r} is outside [{low}, {high}]")
    return v


def _check_sex(sex: str) -> str:
    if sex not in ("F", "M"):
        raise ValueError(f"sex must be 'F' or 'M', not {sex!r}")
    return sex


def cockcroft_gault_crcl(age_years: float, weight_kg: float, scr_mg_dl: float, sex: str) -> float:
    """Creatinine clearance (mL/min), Cockcroft–Gault (PMID 1244564), total body weight."""
    age = _check("age_years", age_years, 0.0, 130.0)
    weight = _check("weight_kg", weight_kg, 0.5, 400.0)
    scr = _check("serum_creatinine_mg_dl", scr_mg_dl, 0.01, 30.0)
    crcl = max(0.0, 140.0 - age) * weight / (72.0 * scr)
    return crcl * (0.85 if _check_sex(sex) == "F" else 1.0)


def ckd_epi_2021_egfr(age_years: float, scr_mg_dl: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m²), race-free CKD-EPI 2021 creatinine equation (PMID 34554658)."""
    age = _check("age_years", age_years, 0.0, 130.0)
    scr = _check("serum_creatinine_mg_dl", scr_mg_dl, 0.01, 30.0)
    female = _check_sex(sex) == "F"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = scr / kappa
    egfr = 142.0 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age
    return egfr * (1.012 if female else 1.0)

"""Exposure and endpoints of the virtual patients of one arm.

Pipeline for one drug and a block of patients: individual parameters (the library's typical
values for each genotype, covariates, log-normal between-subject variability drawn from a
counter-based stream), exposure over the **last dosing interval of the trial** (doses at
0, τ, 2τ, … while t < duration; the interval [(n-1)τ, nτ]), then the endpoints.

Exposure, per patient (units mg, L, h, mg/L, mg·h/L):

- linear models given orally or by IV bolus (the fast path): the concentration after the last
  dose is C(s) = D·Σ_j c_j·G_j·e^{-λ_j (s - tlag)} with G_j = (1 - r_j^n)/(1 - r_j), r_j = e^{-λ_j τ}
  (superposition of the n doses; before the lag has elapsed only n-1 doses contribute), where
  c_j, λ_j are the model's impulse response (:meth:`Model.impulse_response`, F included);
  AUC over the interval = D·Σ_j (c_j/λ_j)·(1 - e^{-λ_j (nτ - tlag)}) (→ F·D/CL at steady
  state); the trough is C(τ), the pre-dose level before dose n+1 (the twin's optimiser reads
  the minimum over the interval instead, which differs only while a lag time delays absorption);
  Cmax is exact for two exponentials (one-compartment oral: u* = ln(λ₂a₂/(-λ₁a₁))/(λ₂-λ₁)) and
  otherwise found from the grid's best point by safeguarded Newton steps on C'(u) = 0; the curve
  is evaluated on ``GRID_POINTS`` equally spaced points of the interval (e^{-λs} as powers of
  e^{-λh}: one exponential per patient and exponential term) for the time in window, with linear
  interpolation between them as :func:`pgxtwin.pk.metrics.time_in_window`.  All of it is
  vectorised over patients, in blocks that stay in cache;
- everything else (saturable elimination, infusions, lag ≥ τ): :func:`pgxtwin.pk.engine.simulate`
  over the whole course, read on ``FALLBACK_GRID_POINTS`` points of the last interval.  Its ODE
  solver takes one step size for a whole batch, so patients are solved in batches fixed by their
  population index (``ENGINE_BATCH`` consecutive indices; trials align their chunks to it), which
  keeps every patient's result independent of the chunking.

Endpoints (columns of the results), each from the drug's library file:

- ``target_attained``: the therapeutic window's metric (trough, Css,avg — also for a window given
  as "concentration" —, Cmax or AUCτ) within [low, high] (bounds inclusive up to 1e-9 relative,
  as :func:`pgxtwin.twin.regimen.attainment`); its mean is the probability of target attainment;
- ``time_in_window``: fraction of the last dosing interval with the concentration in the window;
- ``adverse_reaction``: any of the drug's ``toxicity_thresholds`` crossed (a "concentration"
  threshold is compared with Cmax, as :func:`pgxtwin.twin.evaluate.evaluate_prescription`);
- ``efficacy``: prodrugs only (the library's main analyte is the active metabolite): Css,avg of
  the active metabolite at least 80% of a normal metabolizer's on the label regimen, the lower
  bioequivalence bound of :func:`pgxtwin.twin.regimen.reference_target`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtri

from ..knowledge.drugs.schema import Window
from ..pk import metrics
from ..pk.dosing import DosingHistory, Route
from ..pk.drug_model import REFERENCE_WEIGHT_KG, DrugModel, PatientFactors, drug_model
from ..pk.engine import simulate
from ..pk.models.base import LinearPKModel

BLOCK_PATIENTS = 4096  # patients per block of the closed form: a (B, P) curve stays in cache
MAX_LAG_EXPONENT = 300.0  # λ·tlag above which e^{λ tlag} is not formed (overflow margin to e^709)
GRID_POINTS = 25  # time-in-window grid over one dosing interval: hourly for once-daily dosing
FALLBACK_GRID_POINTS = 193  # engine path: 8x finer, its AUC and Cmax come from the curve
ENGINE_BATCH = 256  # engine path: patients [k·256, (k+1)·256) of a population are solved together
ENTRY_NUDGE = 1e-3  # fraction of the peak's bracket skipped after a dose enters (see _refined_peak)
PEAK_STEPS = 8  # safeguarded Newton steps for Cmax: 6 reach 1e-7 relative on the library's drugs
ATTAINMENT_RTOL = 1e-9  # as pgxtwin.twin.regimen.attainment

# Endpoint -> result column
ENDPOINT_COLUMNS = {
    "target_attainment": "target_attained",
    "time_in_window": "time_in_window",
    "adverse_reaction": "adverse_reaction",
    "efficacy_proxy": "efficacy",
}
EXPOSURE_COLUMNS = ("auc_tau_mg_h_l", "css_avg_mg_l", "cmax_mg_l", "trough_mg_l")
_CONCENTRATION_UNITS = ("mg/L",)
_AUC_UNITS = ("mg·h/L", "mg*h/L", "mg h/L", "mg.h/L")
# window metric -> exposure field: PTA reads a "concentration" window as Css,avg (twin.regimen),
# toxicity reads it as Cmax (any time above the threshold, twin.evaluate)
_TARGET_FIELD = {"trough": "trough", "css_avg": "css_avg", "concentration": "css_avg", "cmax": "cmax", "auc_tau": "auc_tau"}
_TOXICITY_FIELD = _TARGET_FIELD | {"concentration": "cmax"}


# ---------------------------------------------------------------------------------------------
# per-patient randomness


def variability_key(seed: int, replicate: int, drug: str) -> np.ndarray:
    """Philox key of the between-subject variability stream for one drug in one replicate.

    Keyed by drug, not by arm: a virtual patient has the same individual parameters for a drug
    in every arm (common random numbers), so differences between arms come from dosing alone."""
    tag = zlib.crc32(drug.encode("utf-8"))
    return np.random.SeedSequence([seed, replicate, tag]).generate_state(2, np.uint64)


def standard_normals(key: np.ndarray, first_patient: int, n_patients: int, k: int) -> np.ndarray:
    """(n_patients, k) standard normals for patients ``first_patient`` ... of a stream.

    Each patient owns ceil(k/4) Philox counter blocks (4 doubles each), so patient i's draws depend
    only on (key, i): the generator is advanced to the patient's first block, uniforms are drawn
    (one 64-bit word per double, a fixed count) and turned into normals by the inverse normal CDF.
    """
    if k == 0:
        return np.empty((n_patients, 0))
    blocks = -(-k // 4)
    bits = np.random.Philox(key=key)
    bits.advance(first_patient * blocks)
    uniform = np.random.Generator(bits).random((n_patients, 4 * blocks))[:, :k]
    # random() gives multiples of 2^-53 in [0, 1): the half-step offset keeps ndtri finite
    return ndtri(uniform + 2.0**-54)


# ---------------------------------------------------------------------------------------------
# individual parameters


@dataclass(frozen=True)
class Covariates:
    """Covariates of a block of patients, (N,) arrays: kg, cm, years, mL/min; ``female`` bool."""

    weight_kg: np.ndarray
    height_cm: np.ndarray
    age_years: np.ndarray
    female: np.ndarray
    crcl_ml_min: np.ndarray

    def take(self, rows: np.ndarray) -> "Covariates":
        return Covariates(*(getattr(self, f)[rows] for f in ("weight_kg", "height_cm", "age_years", "female", "crcl_ml_min")))

    @property
    def bsa_m2(self) -> np.ndarray:
        """Body-surface area by Mosteller (m²), as :attr:`PatientFactors.bsa_m2`."""
        return np.sqrt(self.weight_kg * self.height_cm / 3600.0)


def per_kg(unit: str) -> bool:
    """A per-body-weight parameter unit of the drug library ("L/h/kg", "L/kg")."""
    return unit.endswith("/kg")


def covariate_factors(model: DrugModel, cov: Covariates) -> dict[str, np.ndarray]:
    """Per parameter, the factor covariates apply to its genotype-typical value, (N,).

    The formulas of :class:`pgxtwin.knowledge.drugs.schema.Covariate` (as
    ``DrugModel._apply_covariates``, vectorised over patients), plus weight scaling of per-kg
    parameters (``DrugModel.reference_parameters`` uses 70 kg when the weight is unknown).
    """
    n = cov.weight_kg.shape[0]
    factors: dict[str, np.ndarray] = {}

    def scale(name: str, by: np.ndarray) -> None:
        factors[name] = factors.get(name, np.ones(n)) * by

    for name, param in model.drug.parameters.items():
        if per_kg(param.unit):
            scale(name, cov.weight_kg / REFERENCE_WEIGHT_KG)
    for c in model.drug.covariates:
        if c.kind == "allometric_weight" and c.exponent is not None:
            scale(c.parameter, (cov.weight_kg / (c.reference or REFERENCE_WEIGHT_KG)) ** c.exponent.value)
        elif c.kind == "renal_function" and c.fraction is not None:
            frac = c.fraction.value
            scale(c.parameter, (1.0 - frac) + frac * cov.crcl_ml_min / (c.reference or 100.0))
        elif c.kind == "age" and c.slope is not None:
            scale(c.parameter, np.maximum(0.05, 1.0 + c.slope.value * (cov.age_years - (c.reference or 0.0))))
        elif c.kind == "female" and c.factor is not None:
            scale(c.parameter, np.where(cov.female, c.factor.value, 1.0))
    return factors


@lru_cache(maxsize=None)
def _variability(drug: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Parameters with between-subject variability and the Cholesky factor of their Ω."""
    model = drug_model(drug)
    names, omega = model.omega(dict.fromkeys(model.drug.parameters, 1.0))
    return names, (np.linalg.cholesky(omega) if names else np.zeros((0, 0)))


def variability_size(drug: str) -> int:
    """Normals each patient needs for this drug's between-subject variability."""
    return len(_variability(drug)[0])


def individual_parameters(
    model: DrugModel, typical: Mapping[str, np.ndarray], cov: Covariates, normals: np.ndarray
) -> dict[str, np.ndarray]:
    """Individual parameters (N,) from genotype-typical values, covariates and normals (N, K).

    η = L·z with Ω = L·Lᵀ (:meth:`DrugModel.omega`); P = P_typ·factor·e^η, fractions (f, fm)
    capped at 1 as in :meth:`DrugModel.sample`.  Sums run in a fixed order per patient so a
    patient's values do not depend on the other patients of the block.
    """
    names, chol = _variability(model.drug.name)
    factors = covariate_factors(model, cov)
    out = {}
    for name, value in typical.items():
        out[name] = value * factors[name] if name in factors else np.array(value, dtype=float)
    for k, name in enumerate(names):
        eta = np.zeros(normals.shape[0])
        for m in range(k + 1):
            eta += chol[k, m] * normals[:, m]
        values = out[name] * np.exp(eta)
        out[name] = np.minimum(values, 1.0) if name in ("f", "fm") else values
    return out


# ---------------------------------------------------------------------------------------------
# exposure over the last dosing interval


@dataclass(frozen=True)
class Exposure:
    """One analyte over the last dosing interval, (N,) arrays."""

    auc_tau: np.ndarray  # mg·h/L
    cmax: np.ndarray  # mg/L
    trough: np.ndarray  # mg/L, pre-dose level at the end of the interval
    in_window: np.ndarray | None  # fraction of the interval within the requested window
    tau_h: float

    @property
    def css_avg(self) -> np.ndarray:
        return self.auc_tau / self.tau_h

    def field(self, name: str) -> np.ndarray:
        return {"auc_tau": self.auc_tau, "cmax": self.cmax, "trough": self.trough, "css_avg": self.css_avg}[name]


def doses_in(duration_h: float, tau_h: float) -> int:
    """Doses given at 0, τ, 2τ, ... before the end of the trial (at least one)."""
    return max(1, math.ceil(duration_h / tau_h - 1e-9))


def _route(model: DrugModel) -> Route:
    return Route(model.drug.dosing.standard.route)


def uses_fast_path(model: DrugModel) -> bool:
    """Linear model given orally or by IV bolus: closed-form exposure (lag times checked per block)."""
    return isinstance(model.structure, LinearPKModel) and _route(model) in (Route.ORAL, Route.IV_BOLUS)


def exposure(
    model: DrugModel, params: Mapping[str, np.ndarray], dose_mg: np.ndarray, tau_h: float, n_doses: int,
    outputs: Sequence[str], windows: Mapping[str, tuple[float, float]] | None = None,
    index: np.ndarray | None = None,
) -> dict[str, Exposure]:
    """Exposure of each model output in ``outputs`` over the last of ``n_doses`` doses every ``tau_h`` h;
    ``windows`` (output -> (low, high) mg/L) asks for the fraction of the interval within a window;
    ``index`` (the patients' population indices) fixes the engine path's solver batches."""
    windows = windows or {}
    if uses_fast_path(model):
        p, _ = model.structure.prepare(params, np)
        tlag = p["tlag"] if _route(model) is Route.ORAL else np.zeros(dose_mg.shape[0])
        if np.all(tlag < tau_h):
            return _closed_form_exposure(model, p, tlag, dose_mg, tau_h, n_doses, outputs, windows)
    batch = np.zeros(dose_mg.shape[0], dtype=np.int64) if index is None else np.asarray(index) // ENGINE_BATCH
    parts = []
    for group in np.unique(batch):
        rows = np.flatnonzero(batch == group)
        parts.append((rows, _engine_exposure(model, {k: v[rows] for k, v in params.items()}, dose_mg[rows], tau_h,
                                             n_doses, outputs, windows)))
    return {output: _join([(rows, got[output]) for rows, got in parts], dose_mg.shape[0], tau_h) for output in outputs}


def _join(parts: Sequence[tuple[np.ndarray, Exposure]], n: int, tau: float) -> Exposure:
    """One Exposure of n patients from those of row subsets."""
    fields = {name: np.empty(n) for name in ("auc_tau", "cmax", "trough")}
    within = None if parts[0][1].in_window is None else np.empty(n)
    for rows, got in parts:
        for name, values in fields.items():
            values[rows] = getattr(got, name)
        if within is not None:
            within[rows] = got.in_window
    return Exposure(fields["auc_tau"], fields["cmax"], fields["trough"], within, tau)


def _closed_form_exposure(
    model: DrugModel, p: dict[str, np.ndarray], tlag: np.ndarray, dose_mg: np.ndarray, tau: float, n_doses: int,
    outputs: Sequence[str], windows: Mapping[str, tuple[float, float]],
) -> dict[str, Exposure]:
    responses = model.structure.impulse_response(p, _route(model))
    grid = np.linspace(0.0, tau, GRID_POINTS)
    n = dose_mg.shape[0]
    out = {}
    for output in outputs:
        resp = responses[output]
        auc, cmax, trough = np.empty(n), np.empty(n), np.empty(n)
        window = windows.get(output)
        within = None if window is None else np.empty(n)
        # blocks of patients whose (P, B) curve stays in cache; time-major, so every step of the
        # arithmetic runs along the patients (contiguous)
        for b in range(0, n, BLOCK_PATIENTS):
            rows = slice(b, min(b + BLOCK_PATIENTS, n))
            coef, rate = resp.coef[rows] * dose_mg[rows, None], resp.rate[rows]
            curve, after = _curve(coef, rate, tlag[rows], tau, n_doses, grid)
            auc[rows] = _auc_last_interval(coef, rate, tlag[rows], tau, n_doses)
            cmax[rows] = _peak(curve, grid, tlag[rows], after, rate)
            trough[rows] = curve[-1]
            if within is not None:
                within[rows] = fraction_in_window(curve, window[0], window[1])
        out[output] = Exposure(auc, cmax, trough, within, tau)
    return out


def _curve(coef: np.ndarray, rate: np.ndarray, tlag: np.ndarray, tau: float, n_doses: int, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concentration (P, B) on ``grid`` (hours since the last dose) and the coefficients of the
    curve once the last dose has entered, C(u) = Σ_j after_j·e^{-λ_j u} (B, J)."""
    x = rate * tau
    one_minus_r = -np.expm1(-x)
    after = coef * (-np.expm1(-x * n_doses) / one_minus_r)  # n doses in
    b, j_terms, p = coef.shape[0], coef.shape[1], grid.shape[0]
    step = np.exp(-rate.T * grid[1]) if p > 1 else None  # (J, B): e^{-λh}
    if not tlag.any():
        # (P, J, B): row i holds after_j·e^{-λ_j s_i}; summed over j, then patients first
        return _sum_terms(_scaled_powers(np.ascontiguousarray(after.T), step, p)), after
    # before the lag has elapsed the curve is the n-1 earlier doses', one interval older
    before = coef * (-np.expm1(-x * (n_doses - 1)) / one_minus_r) * np.exp(-x)
    entered = grid[:, None] >= tlag[None, :]  # (P, B)
    shift = rate * tlag[:, None]  # e^{-λ(s - tlag)} = e^{λ tlag}·e^{-λ s}
    curve = np.zeros((p, b))
    if (shift > MAX_LAG_EXPONENT).any():  # e^{λ tlag} would overflow: exponentiate directly
        for j in range(j_terms):
            level = np.where(entered, after[None, :, j], before[None, :, j])
            curve += level * np.exp(-rate[None, :, j] * (grid[:, None] - tlag[None, :]))
    else:
        decay = _scaled_powers(np.ones((j_terms, b)), step, p)  # (P, J, B)
        for j in range(j_terms):
            level = np.where(entered, after[None, :, j], before[None, :, j]) * np.exp(shift[None, :, j])
            curve += level * decay[:, j, :]
    return curve, after


def _scaled_powers(scale: np.ndarray, step: np.ndarray | None, p: int) -> np.ndarray:
    """scale·step^i for i = 0..p-1 as a (p, *scale.shape) array, by doubling: rows [k, 2k) are rows
    [0, k) times step^k, with step^k squared up alongside (relative error ~log₂p ulp).  On an
    equally spaced grid from 0, step = e^{-λh} gives scale·e^{-λ s_i}, one exponential per term."""
    table = np.empty((p, *scale.shape))
    table[0] = scale
    if p == 1:
        return table
    table[1] = scale * step
    power, k = step * step, 2
    while k < p:
        m = min(k, p - k)
        np.multiply(table[:m], power, out=table[k : k + m])
        power = power * power
        k += m
    return table


def _sum_terms(terms: np.ndarray) -> np.ndarray:
    """Σ_j over axis 1 of (P, J, B), term by term in order (the same sum whatever B)."""
    total = terms[:, 0, :].copy()
    for j in range(1, terms.shape[1]):
        total += terms[:, j, :]
    return total


def _auc_last_interval(coef: np.ndarray, rate: np.ndarray, tlag: np.ndarray, tau: float, n_doses: int) -> np.ndarray:
    """∫ over [(n-1)τ, nτ] = D·Σ_j (c_j/λ_j)·(1 - e^{-λ_j (nτ - tlag)}) (telescoped superposition)."""
    auc = np.zeros(coef.shape[0])
    for j in range(coef.shape[1]):
        auc += coef[:, j] / rate[:, j] * -np.expm1(-rate[:, j] * (n_doses * tau - tlag))
    return auc


def _peak(curve: np.ndarray, grid: np.ndarray, tlag: np.ndarray, coef: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cmax over the interval: a closed form for two exponentials (one-compartment oral, two-compartment
    bolus), a safeguarded Newton search otherwise; never below the grid's maximum."""
    peak = curve.max(axis=0)
    if coef.shape[1] == 2:
        return np.maximum(peak, _two_exponential_peak(coef, rate, grid[-1] - tlag))
    return _refined_peak(curve, grid, tlag, coef, rate)


def _two_exponential_peak(coef: np.ndarray, rate: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Interior maximum of a₁e^{-λ₁u} + a₂e^{-λ₂u} on [0, span]: C' = 0 at
    u* = ln(-λ₂a₂ / (λ₁a₁)) / (λ₂ - λ₁), a maximum where C''(u*) < 0; 0 where there is none
    (the grid then holds the maximum: its ends are the interval's)."""
    a1, a2, l1, l2 = coef[:, 0], coef[:, 1], rate[:, 0], rate[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.log(-(l2 * a2) / (l1 * a1)) / (l2 - l1)
        e1, e2 = np.exp(-l1 * u), np.exp(-l2 * u)
        interior = (u >= 0.0) & (u <= span) & (l1 * l1 * a1 * e1 + l2 * l2 * a2 * e2 < 0.0)
        return np.where(interior, a1 * e1 + a2 * e2, 0.0)


def fraction_in_window(curve: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fraction of an equally spaced grid's span with low <= C <= high, C linear between points:
    ``curve`` (P, N) time-major, result (N,).

    The arithmetic of :func:`pgxtwin.pk.metrics.time_in_window` (on a linear segment the share
    below a level is (level - min)/(max - min), clipped to [0, 1]; a flat segment on a bound is
    inside), with the sum over segments taken segment after segment for each patient: ``metrics``
    sums with a matrix product, whose BLAS kernels may add in another order for another number of
    rows, and a patient's result must not depend on the other patients of its block."""
    c0, c1 = curve[:-1], curve[1:]
    lo = np.minimum(c0, c1)
    span = np.abs(c1 - c0)
    span += 1e-300
    with np.errstate(over="ignore"):  # ±inf from flat segments is clipped on purpose
        below = np.clip((low - lo) / span, 0.0, 1.0)
        above = np.clip((lo + span - high) / span, 0.0, 1.0)
    outside = below.sum(axis=0) + above.sum(axis=0)  # along time: in order, per patient
    return 1.0 - outside / (curve.shape[0] - 1)


def _refined_peak(curve: np.ndarray, grid: np.ndarray, tlag: np.ndarray, coef: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cmax: the root of C'(u) = 0 (u = hours since the last dose entered, C = Σ_j coef_j·e^{-rate_j u})
    next to the grid's best point, by Newton steps safeguarded with bisection (the bracket keeps
    C' > 0 on its left end and C' < 0 on its right); the grid's maximum where there is no such
    bracket (a peak on the interval's edge).  A fixed number of steps keeps every patient's
    arithmetic independent of the others'."""
    last = grid.shape[0] - 1
    best = np.argmax(curve, axis=0)
    peak = curve[best, np.arange(curve.shape[1])]
    u_best = np.maximum(grid[best] - tlag, 0.0)
    rising = _slopes(coef, rate, u_best)[0] > 0.0
    lo = np.where(rising, u_best, np.maximum(grid[np.maximum(best - 1, 0)] - tlag, 0.0))
    hi = np.where(rising, np.maximum(grid[np.minimum(best + 1, last)] - tlag, 0.0), u_best)
    # at the dose's entry (u = 0) an absorbed-then-formed analyte (a metabolite) starts with zero
    # slope, so the earlier doses' decay can make C'(0) a hair negative: look just past it
    at_entry = lo == 0.0
    lo = np.where(at_entry & (_slopes(coef, rate, lo)[0] <= 0.0), ENTRY_NUDGE * hi, lo)
    valid = (_slopes(coef, rate, lo)[0] > 0.0) & (_slopes(coef, rate, hi)[0] < 0.0)
    u = 0.5 * (lo + hi)
    for _ in range(PEAK_STEPS):
        d1, d2 = _slopes(coef, rate, u)
        lo = np.where(d1 > 0.0, u, lo)
        hi = np.where(d1 > 0.0, hi, u)
        newton = u - np.divide(d1, d2, out=np.zeros_like(u), where=d2 < 0.0)
        inside = (d2 < 0.0) & (newton >= lo) & (newton <= hi)  # inclusive: a converged u stays
        u = np.where(inside, newton, 0.5 * (lo + hi))
    value = np.zeros_like(u)
    for j in range(coef.shape[1]):
        value += coef[:, j] * np.exp(-rate[:, j] * u)
    return np.where(valid, np.maximum(peak, value), peak)


def _slopes(coef: np.ndarray, rate: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C'(u) and C''(u) of C = Σ_j coef_j·e^{-rate_j u}, (N,) each."""
    d1 = np.zeros_like(u)
    d2 = np.zeros_like(u)
    for j in range(coef.shape[1]):
        term = rate[:, j] * coef[:, j] * np.exp(-rate[:, j] * u)
        d1 -= term
        d2 += rate[:, j] * term
    return d1, d2


def _engine_exposure(
    model: DrugModel, params: Mapping[str, np.ndarray], dose_mg: np.ndarray, tau: float, n_doses: int,
    outputs: Sequence[str], windows: Mapping[str, tuple[float, float]],
) -> dict[str, Exposure]:
    standard = model.drug.dosing.standard
    infusion = min(standard.infusion_h or 0.0, tau)
    dosing = DosingHistory.regular(1.0, tau, n_doses, route=_route(model), duration_h=infusion)
    grid = np.linspace(0.0, tau, FALLBACK_GRID_POINTS)
    times = (n_doses - 1) * tau + grid
    result = simulate(model.structure, dict(params), dosing, times, amount_scale=dose_mg)
    out = {}
    for output in outputs:
        curve = np.asarray(result[output], dtype=float)
        window = windows.get(output)
        within = None if window is None else fraction_in_window(np.ascontiguousarray(curve.T), window[0], window[1])
        out[output] = Exposure(metrics.auc(grid, curve), curve.max(axis=1), curve[:, -1].copy(), within, tau)
    return out


# ---------------------------------------------------------------------------------------------
# endpoints


@dataclass(frozen=True)
class DrugEndpoints:
    """What the endpoints of one drug compare against, from its library file."""

    drug: str
    main_output: str  # model output of the drug's main analyte
    window: Window | None
    window_output: str | None
    thresholds: tuple[tuple[Window, str], ...]  # (threshold, model output)
    efficacy_css_mg_l: float | None  # prodrugs: 80% of a normal metabolizer's active-metabolite Css,avg

    @property
    def outputs(self) -> tuple[str, ...]:
        wanted = [self.main_output, self.window_output, *(o for _, o in self.thresholds)]
        return tuple(dict.fromkeys(o for o in wanted if o is not None))

    def windows(self, endpoints: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Output -> concentration window (mg/L) whose time-in-window ``endpoints`` ask for."""
        if "time_in_window" not in endpoints or self.window is None or self.window_output is None:
            return {}
        high = math.inf if self.window.high is None else self.window.high
        return {self.window_output: (self.window.low or 0.0, high)}


def _output_of(model: DrugModel, analyte: str | None) -> str:
    return model.analytes[analyte or next(iter(model.analytes))]


def _unit_ok(window: Window) -> bool:
    return window.unit in (_AUC_UNITS if window.metric == "auc_tau" else _CONCENTRATION_UNITS)


def endpoint_problem(endpoint: str, drug: str) -> str | None:
    """Why ``drug`` cannot give ``endpoint`` (naming the library key it lacks), or None."""
    d = drug_model(drug).drug
    window = d.therapeutic_window
    if endpoint == "target_attainment":
        if window is None:
            return f"needs the library's therapeutic_window, which {d.name} does not have"
        if not _unit_ok(window):
            return f"{d.name}: therapeutic_window.unit {window.unit!r} is not supported for metric {window.metric}"
    elif endpoint == "time_in_window":
        if window is None:
            return f"needs the library's therapeutic_window, which {d.name} does not have"
        if window.metric == "auc_tau" or window.unit not in _CONCENTRATION_UNITS:
            return f"{d.name}: therapeutic_window is an AUC range ({window.unit}), not a concentration window"
    elif endpoint == "adverse_reaction":
        if not d.toxicity_thresholds:
            return f"needs the library's toxicity_thresholds, which {d.name} does not have"
        for k, threshold in enumerate(d.toxicity_thresholds):
            if not _unit_ok(threshold):
                return f"{d.name}: toxicity_thresholds[{k}].unit {threshold.unit!r} is not supported"
    elif endpoint == "efficacy_proxy":
        if d.model.analytes[0].role != "metabolite":
            return (f"needs a prodrug whose main analyte (model.analytes[0]) is the active metabolite;"
                    f" {d.name}'s is {d.model.analytes[0].name}")
    return None


@lru_cache(maxsize=None)
def drug_endpoints(drug: str) -> DrugEndpoints:
    model = drug_model(drug)
    d = model.drug
    window = d.therapeutic_window if d.therapeutic_window is not None and _unit_ok(d.therapeutic_window) else None
    thresholds = tuple((t, _output_of(model, t.analyte)) for t in d.toxicity_thresholds if _unit_ok(t))
    efficacy = None
    if d.model.analytes[0].role == "metabolite":
        from ..twin.regimen import reference_target

        efficacy = reference_target(model, PatientFactors()).low
    return DrugEndpoints(
        d.name, _output_of(model, None), window, None if window is None else _output_of(model, window.analyte),
        thresholds, efficacy,
    )


def _within(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    lo = (low or 0.0) * (1 - ATTAINMENT_RTOL)
    hi = math.inf if high is None else high * (1 + ATTAINMENT_RTOL)
    return (values >= lo) & (values <= hi)


def endpoint_values(ends: DrugEndpoints, exposures: Mapping[str, Exposure], endpoints: Sequence[str]) -> dict[str, np.ndarray]:
    """Per requested endpoint, its result column (N,) for one drug's patients."""
    out: dict[str, np.ndarray] = {}
    for endpoint in endpoints:
        column = ENDPOINT_COLUMNS[endpoint]
        if endpoint == "target_attainment":
            exp = exposures[ends.window_output]  # type: ignore[index]
            out[column] = _within(exp.field(_TARGET_FIELD[ends.window.metric]), ends.window.low, ends.window.high)  # type: ignore[union-attr]
        elif endpoint == "time_in_window":
            out[column] = exposures[ends.window_output].in_window  # type: ignore[index]
        elif endpoint == "adverse_reaction":
            hit = np.zeros(exposures[ends.main_output].trough.shape[0], dtype=bool)
            for threshold, output in ends.thresholds:
                value = exposures[output].field(_TOXICITY_FIELD[threshold.metric])
                if threshold.high is not None:
                    hit |= value > threshold.high
                if threshold.low is not None:
                    hit |= value < threshold.low
            out[column] = hit
        elif endpoint == "efficacy_proxy":
            out[column] = exposures[ends.main_output].css_avg >= ends.efficacy_css_mg_l  # type: ignore[operator]
    return out

"""Model-based dose selection: the regimen that maximises the probability of target attainment.

Candidates come from the drug library (available strengths, usual intervals, labelled maxima);
each is simulated at steady state for parameter draws of the patient (the individual posterior
when levels are known, else the prior around the individual's typical values).  Units: mg, h,
mg/L, mg·h/L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..knowledge.drugs.schema import Window
from ..pk import metrics
from ..pk.dosing import DosingHistory, Route
from ..pk.drug_model import DrugModel, GeneInput, PatientFactors, drug_model
from ..pk.engine import simulate
from ..pk.scenarios import resolve_dose_mg

TargetMetric = Literal["trough", "css_avg", "cmax", "auc_tau"]
# Bioequivalence bounds: exposure within 80-125% of the reference counts as matching it
# (FDA Guidance for Industry, Statistical Approaches to Establishing Bioequivalence, 2001).
REFERENCE_BOUNDS = (0.80, 1.25)
SATURATED_HORIZON_H = 14 * 24.0


@dataclass(frozen=True)
class Target:
    metric: TargetMetric
    low: float
    high: float
    analyte: str
    description: str


@dataclass(frozen=True)
class RegimenOutcome:
    dose_mg: float
    interval_h: float
    pta: float  # probability of target attainment
    metric_median: float
    metric_p05: float
    metric_p95: float


@dataclass(frozen=True)
class RegimenChoice:
    best: RegimenOutcome
    target: Target
    candidates: tuple[RegimenOutcome, ...]
    times_h: np.ndarray  # one steady-state interval of the chosen regimen
    median: np.ndarray
    p05: np.ndarray
    p95: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {
            "dose_mg": self.best.dose_mg,
            "interval_h": self.best.interval_h,
            "probability_of_target_attainment": self.best.pta,
            "target": self.target.__dict__,
            "predicted": {"metric_median": self.best.metric_median, "p05": self.best.metric_p05, "p95": self.best.metric_p95},
            "curve": {"time_h": self.times_h.tolist(), "median": self.median.tolist(), "p05": self.p05.tolist(), "p95": self.p95.tolist()},
            "candidates": [c.__dict__ for c in self.candidates],
        }


_WINDOW_METRIC: dict[str, TargetMetric] = {"trough": "trough", "css_avg": "css_avg", "cmax": "cmax", "auc_tau": "auc_tau", "concentration": "css_avg"}


def _from_window(window: Window, analyte: str) -> Target:
    return Target(
        _WINDOW_METRIC[window.metric], window.low or 0.0, window.high if window.high is not None else float("inf"),
        window.analyte or analyte, f"therapeutic window ({window.metric}, {window.source})",
    )


def default_target(model: DrugModel, patient: PatientFactors) -> Target:
    """The library's therapeutic window, else the normal-metabolizer reference exposure."""
    analyte = next(iter(model.analytes))
    window = model.drug.therapeutic_window
    if window is not None and window.unit == "mg/L":
        return _from_window(window, analyte)
    return reference_target(model, patient)


def reference_target(model: DrugModel, patient: PatientFactors) -> Target:
    """Css,avg of a normal metabolizer (same covariates, no co-medication) on the standard regimen."""
    genes = {
        gene: GeneInput(phenotype=_normal_phenotype(gene), activity_score=_normal_score(model, gene))
        for gene in model.genes
    }
    reference = PatientFactors(
        weight_kg=patient.weight_kg, height_cm=patient.height_cm, age_years=patient.age_years, sex=patient.sex,
        crcl_ml_min=patient.crcl_ml_min, genes=genes,
    )
    standard = model.drug.dosing.standard
    amount = resolve_dose_mg(model, standard.dose, _with_body_size(patient))
    params = {k: np.array([v]) for k, v in model.individualise(reference).parameters.items()}
    analyte = _main_analyte(model)
    css = _steady_state_metric(model, params, amount, standard.interval_h, "css_avg", analyte)[0][0]
    low, high = REFERENCE_BOUNDS
    return Target("css_avg", low * css, high * css, analyte, "normal-metabolizer reference exposure (80-125%)")


def _main_analyte(model: DrugModel) -> str:
    """The drug's main analyte (listed first in its library file; the active one)."""
    return next(iter(model.analytes))


def _normal_phenotype(gene: str) -> str:
    from ..knowledge.phenotypes import phenotype_names

    names = phenotype_names(gene)
    return "Normal Metabolizer" if "Normal Metabolizer" in names else "Normal Function"


def _normal_score(model: DrugModel, gene: str) -> float | None:
    from ..knowledge.drugs import enzyme_activity

    table = enzyme_activity(gene)
    return table.activity_score_reference.value if table and table.activity_score_reference else None


def _with_body_size(patient: PatientFactors) -> PatientFactors:
    """Per-kg / per-m² label doses need a body size; a 70 kg, 170 cm adult stands in if unknown."""
    if patient.weight_kg is not None and patient.height_cm is not None:
        return patient
    return PatientFactors(weight_kg=patient.weight_kg or 70.0, height_cm=patient.height_cm or 170.0)


def _steady_state_metric(
    model: DrugModel, params: dict[str, np.ndarray], amount: float, tau: float, metric: TargetMetric, analyte: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    route = Route(model.drug.dosing.standard.route)
    infusion = model.drug.dosing.standard.infusion_h or 0.0
    output = model.analytes[analyte]
    dosing = DosingHistory.regular(amount, tau, 1, route=route, duration_h=min(infusion, tau), steady_state=True)
    times = np.linspace(0.0, tau, 97)
    try:
        conc = np.asarray(simulate(model.structure, params, dosing, times)[output])
    except RuntimeError:
        # saturable elimination slower than the dosing rate in some draws: no steady state
        # exists, so take the last interval of a two-week course (exposure still climbing)
        n_doses = int(np.ceil(SATURATED_HORIZON_H / tau))
        course = DosingHistory.regular(amount, tau, n_doses, route=route, duration_h=min(infusion, tau))
        start = (n_doses - 1) * tau
        conc = np.asarray(simulate(model.structure, params, course, start + times)[output])
    exp = metrics.exposure(times, conc, tau, 0.0)
    values = {"trough": exp.cmin, "css_avg": exp.css_avg, "cmax": exp.cmax, "auc_tau": exp.auc_tau}[metric]
    return np.asarray(values), times, conc


def attainment(values: np.ndarray, target: Target) -> float:
    """Fraction of draws inside the target (bounds compared with a relative tolerance of 1e-9, so
    an exposure exactly on a bound is inside)."""
    low, high = target.low * (1 - 1e-9), target.high * (1 + 1e-9)
    return float(np.mean((values >= low) & (values <= high)))


def _log_distance(value: float, target: Target) -> float:
    if value <= 0:
        return float("inf")
    if target.low <= value <= target.high:
        return 0.0
    bound = target.low if value < target.low else target.high
    return abs(np.log(value) - np.log(bound)) if bound > 0 else float("inf")


def candidate_regimens(model: DrugModel, weight_kg: float | None = None) -> list[tuple[float, float]]:
    """(dose mg, interval h) pairs from the library's strengths, within the labelled maxima (a
    per-kg maximum needs ``weight_kg``; without it only the strengths bound the doses)."""
    dosing = model.drug.dosing
    doses = sorted({s * k for s in dosing.strengths_mg for k in (1, 2)})
    limit = dosing.max_single_mg(weight_kg)
    max_single = float("inf") if limit is None else limit[0]
    max_daily = dosing.max_daily_dose_mg.value if dosing.max_daily_dose_mg else float("inf")
    out = []
    for dose in doses:
        for tau in sorted(set(dosing.intervals_h)):
            if dose <= max_single and dose * 24.0 / tau <= max_daily + 1e-9:
                out.append((dose, tau))
    return out


def choose_regimen(
    drug: str,
    patient: PatientFactors,
    *,
    target: Target | None = None,
    parameter_draws: dict[str, np.ndarray] | None = None,
    n: int = 300,
    seed: int = 1,
) -> RegimenChoice:
    """The candidate regimen with the highest probability of target attainment.

    ``parameter_draws`` (from the individual posterior) replace prior draws when given.  Ties
    (within 1 percentage point) go to the regimen closest to the labelled daily dose.
    """
    model = drug_model(drug)
    target = target or default_target(model, patient)
    if parameter_draws is None:
        individual = model.individualise(patient)
        parameter_draws = model.sample(individual.parameters, n, np.random.default_rng(seed))
    standard = model.drug.dosing.standard
    standard_daily = resolve_dose_mg(model, standard.dose, _with_body_size(patient)) * 24.0 / standard.interval_h
    outcomes = []
    curves = {}
    for dose, tau in candidate_regimens(model, patient.weight_kg):
        values, times, conc = _steady_state_metric(model, parameter_draws, dose, tau, target.metric, target.analyte)
        pta = attainment(values, target)
        q = np.quantile(values, [0.05, 0.5, 0.95])
        outcomes.append(RegimenOutcome(dose, tau, pta, float(q[1]), float(q[0]), float(q[2])))
        curves[(dose, tau)] = (times, conc)
    if not outcomes:
        raise ValueError(f"{model.drug.name}: no candidate regimen within the labelled maxima")
    top = max(o.pta for o in outcomes)
    if top > 0:
        best = min(
            (o for o in outcomes if o.pta >= top - 0.01),
            key=lambda o: (abs(o.dose_mg * 24.0 / o.interval_h - standard_daily), -o.interval_h),
        )
    else:
        # nothing reaches the target: the regimen whose median lands nearest to it (log scale), never
        # "closest to the label dose", which could move a patient the wrong way
        best = min(outcomes, key=lambda o: (_log_distance(o.metric_median, target), -o.interval_h))
    times, conc = curves[(best.dose_mg, best.interval_h)]
    q = np.quantile(conc, [0.05, 0.5, 0.95], axis=0)
    return RegimenChoice(best, target, tuple(outcomes), times, q[1], q[0], q[2])

"""Drug-level simulations: a regimen for a typical patient or a population, and the predicted
exposure ratio between two genotype groups (how the library is checked against the literature).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import PgxInputError
from . import metrics
from .dosing import DosingHistory, Route
from .drug_model import DrugModel, GeneInput, Individualised, PatientFactors, drug_model
from .engine import simulate
from .units import DoseBasis, parse_dose, parse_duration

Metric = Literal["auc", "cl", "css", "cmax", "cmin"]
Design = Literal["single_dose", "steady_state"]
IMPLAUSIBLE_FACTOR = 10.0  # a dose above 10x the labelled maximum single dose is an error


class RegimenError(PgxInputError):
    """A regimen value that cannot be used.  The message names the value by its field (``dose``,
    ``every``, ``days``, ``n``, ``times``) and the patient data it needs (``weight``, ``height``),
    as every caller can read them (a REST body, a trial file); :meth:`naming` renders them as a
    caller's own names, e.g. the CLI's ``--dose`` and ``--weight``."""

    def __init__(self, field: str, reason: str, *, needs: tuple[str, ...] = ()) -> None:
        self.field, self.reason, self.needs = field, reason, needs
        super().__init__(self.naming())

    def naming(self, option: Callable[[str], str] | None = None) -> str:
        """The message with the field and the needed patient data named by ``option`` (default:
        the field as is, "the patient's weight")."""
        if option is None:
            needed = f": the patient's {' and '.join(self.needs)} {'is' if len(self.needs) == 1 else 'are'} needed"
            return f"{self.field}{self.reason}" + (needed if self.needs else "")
        needed = f": give {' and '.join(option(n) for n in self.needs)}"
        return f"{option(self.field)}{self.reason}" + (needed if self.needs else "")


def resolve_dose_mg(model: DrugModel, text: str, patient: PatientFactors) -> float:
    """Dose string -> mg for this patient; rejects implausible doses (e.g. 75 g clopidogrel)."""
    try:
        dose = parse_dose(text)
    except ValueError as exc:
        raise RegimenError("dose", f": {exc}") from None
    if dose.basis is DoseBasis.PER_KG and patient.weight_kg is None:
        raise RegimenError("dose", f" {text!r} is per kg", needs=("weight",))
    if dose.basis is DoseBasis.PER_M2 and patient.bsa_m2 is None:
        raise RegimenError("dose", f" {text!r} is per m²", needs=("weight", "height"))
    mg = dose.to_mg(weight_kg=patient.weight_kg, bsa_m2=patient.bsa_m2)
    limit = model.drug.dosing.max_single_mg(patient.weight_kg)
    if limit is not None and mg > IMPLAUSIBLE_FACTOR * limit[0]:
        raise RegimenError(
            "dose", f" {text!r} ({mg:g} mg) is implausible for {model.drug.name}: the maximum single dose is"
            f" {limit[0]:g} mg ({limit[1]})"
        )
    return mg


def _route(model: DrugModel) -> Route:
    return Route(model.drug.dosing.standard.route)


@dataclass(frozen=True)
class Simulation:
    drug: str
    times_h: np.ndarray
    curves: dict[str, np.ndarray]  # drug analyte -> (N, T) mg/L
    metrics: dict[str, dict[str, dict[str, float]]]  # analyte -> metric -> {median, p05, p95}
    individual: Individualised
    n: int

    def summary(self) -> dict[str, object]:
        analytes = {}
        for name, curve in self.curves.items():
            q = np.quantile(curve, [0.05, 0.5, 0.95], axis=0)
            analytes[name] = {
                "unit": "mg/L",
                "time_h": self.times_h.tolist(),
                "median": q[1].tolist(),
                "p05": q[0].tolist(),
                "p95": q[2].tolist(),
            }
        return {
            "drug": self.drug,
            "analytes": analytes,
            "metrics": self.metrics,
            "phenotypes": {g: s.as_dict() for g, s in self.individual.genes.items()},
            "parameters": self.individual.parameters,
            "n": self.n,
            "notes": list(self.individual.notes),
        }


def simulate_regimen(
    drug: str,
    patient: PatientFactors,
    *,
    dose: str,
    every_h: float,
    days: float,
    n: int = 1,
    seed: int = 1,
    times_h: np.ndarray | None = None,
) -> Simulation:
    """Typical patient (n = 1) or ``n`` patients with between-subject variability."""
    model = drug_model(drug)
    if every_h <= 0:
        raise RegimenError("every", " must be a positive duration")
    if days <= 0:
        raise RegimenError("days", " must be positive")
    if n < 1:
        raise RegimenError("n", " must be at least 1")
    amount = resolve_dose_mg(model, dose, patient)
    n_doses = max(1, math.ceil(days * 24.0 / every_h - 1e-9))
    horizon = days * 24.0
    if times_h is None:
        step = 0.25 if horizon <= 72 else 1.0
        times_h = np.arange(0.0, horizon + step / 2, step)
    times_h = np.asarray(times_h, dtype=float)
    if (times_h < 0).any():
        raise RegimenError("times", " must not be negative")
    if (np.diff(times_h) <= 0).any():
        raise RegimenError("times", " must be strictly increasing")
    individual = model.individualise(patient)
    params = (
        {k: np.array([v]) for k, v in individual.parameters.items()}
        if n == 1
        else model.sample(individual.parameters, n, np.random.default_rng(seed))
    )
    infusion = model.drug.dosing.standard.infusion_h or 0.0
    dosing = DosingHistory.regular(amount, every_h, n_doses, route=_route(model), duration_h=infusion)
    result = simulate(model.structure, params, dosing, times_h)
    curves = {name: np.asarray(result[out]) for name, out in model.analytes.items()}
    window = model.drug.therapeutic_window
    last = (n_doses - 1) * every_h
    summary: dict[str, dict[str, dict[str, float]]] = {}
    if last + every_h <= times_h[-1] + 1e-9 and times_h[0] <= last:
        for name, curve in curves.items():
            bounds = None
            if window is not None and (window.analyte in (None, name)) and name == next(iter(curves)) and window.unit == "mg/L":
                bounds = (window.low or 0.0, window.high or math.inf)
            exp = metrics.exposure(times_h, curve, every_h, last, bounds)
            values = {"auc_tau_mg_h_per_l": exp.auc_tau, "cmax_mg_per_l": exp.cmax, "cmin_mg_per_l": exp.cmin, "css_avg_mg_per_l": exp.css_avg}
            if exp.window is not None:
                values |= {
                    "fraction_in_window": exp.window.fraction_within,
                    "fraction_below_window": exp.window.fraction_below,
                    "fraction_above_window": exp.window.fraction_above,
                }
            summary[name] = {k: _quantiles(v) for k, v in values.items()}
    return Simulation(model.drug.name, times_h, curves, summary, individual, n)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(np.asarray(values, dtype=float), [0.05, 0.5, 0.95])
    return {"median": float(q[1]), "p05": float(q[0]), "p95": float(q[2])}


@dataclass(frozen=True)
class ExposureRatio:
    drug: str
    gene: str
    test: str
    reference: str
    metric: str
    analyte: str
    design: str
    ratio: float
    test_value: float
    reference_value: float
    regimen: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def exposure_ratio(
    drug: str,
    gene: str,
    test: str,
    reference: str,
    *,
    metric: Metric = "auc",
    analyte: str | None = None,
    design: Design = "single_dose",
    with_drugs: tuple[str, ...] = (),
) -> ExposureRatio:
    """Typical-patient exposure of group ``test`` relative to ``reference`` (both: a phenotype or a
    diplotype of ``gene``).  Co-medications in ``with_drugs`` apply to the test group."""
    model = drug_model(drug)
    if gene not in model.genes and not with_drugs:
        raise PgxInputError(f"{model.drug.name}: the library has no {gene} effect")
    analyte = analyte or next(iter(model.analytes))
    if analyte not in model.analytes:
        raise PgxInputError(f"{model.drug.name}: unknown analyte {analyte!r} (known: {', '.join(model.analytes)})")
    groups = {
        "test": PatientFactors(genes={gene: GeneInput.from_text(gene, test)}, comedications=with_drugs),
        "reference": PatientFactors(genes={gene: GeneInput.from_text(gene, reference)}),
    }
    standard = model.drug.dosing.standard
    amount = resolve_dose_mg(model, standard.dose, PatientFactors(weight_kg=70.0, height_cm=170.0))
    values = {}
    for label, patient in groups.items():
        params = {k: np.array([v]) for k, v in model.individualise(patient).parameters.items()}
        values[label] = _exposure(model, params, amount, standard.interval_h, metric, analyte, design)
    ratio = values["test"] / values["reference"]
    return ExposureRatio(
        model.drug.name, gene, test, reference, metric, analyte, design, float(ratio),
        float(values["test"]), float(values["reference"]), f"{standard.dose} every {standard.interval_h:g} h",
    )


def _exposure(
    model: DrugModel, params: dict[str, np.ndarray], amount: float, tau: float, metric: Metric, analyte: str, design: Design
) -> float:
    """One exposure figure for one typical patient (mg/L, h·mg/L or L/h)."""
    out = model.analytes[analyte]
    route = _route(model)
    if design == "steady_state":
        dosing = DosingHistory.regular(amount, tau, 1, route=route, steady_state=True)
        times = np.linspace(0.0, tau, 481)
        conc = np.asarray(simulate(model.structure, params, dosing, times)[out])
        exp = metrics.exposure(times, conc, tau, 0.0)
        auc_tau = float(exp.auc_tau[0])
        figures = {"auc": lambda: auc_tau, "css": lambda: auc_tau / tau, "cmax": lambda: float(exp.cmax[0]),
                   "cmin": lambda: float(exp.cmin[0]), "cl": lambda: _apparent_clearance(amount, auc_tau)}
        return figures[metric]()
    horizon = _single_dose_horizon(model, params)
    times = np.concatenate([np.linspace(0.0, 24.0, 481), np.geomspace(24.05, horizon, 600)])
    dosing = DosingHistory.regular(amount, horizon * 2, 1, route=route)
    conc = np.asarray(simulate(model.structure, params, dosing, times)[out])[0]
    auc = float(np.trapezoid(conc, times))
    # tail beyond the horizon by the terminal log-linear slope
    tail_k = math.log(max(conc[-2], 1e-300) / max(conc[-1], 1e-300)) / (times[-1] - times[-2])
    if tail_k > 0:
        auc += conc[-1] / tail_k
    figures = {"auc": lambda: auc, "cmax": lambda: float(conc.max()), "cl": lambda: _apparent_clearance(amount, auc),
               "css": lambda: auc / tau, "cmin": lambda: float(conc[-1])}
    return figures[metric]()


def _apparent_clearance(amount: float, auc: float) -> float:
    """Dose / AUC (L/h): the clearance a study reports for this analyte."""
    return amount / auc if auc > 0 else math.inf


def _single_dose_horizon(model: DrugModel, params: dict[str, np.ndarray]) -> float:
    """Long enough to see >99% of a single dose's AUC: 12 of the slowest half-lives in the model."""
    p = {k: float(v[0]) for k, v in params.items()}
    rates = []
    for cl, v in (("cl", "v"), ("cl", "v1"), ("q", "v2"), ("cl_m", "v_m")):
        if cl in p and v in p and p[v] > 0:
            rates.append(p[cl] / p[v])
    if "vmax" in p and "km" in p and "v" in p:
        rates.append(p["vmax"] / (p["km"] * p["v"]) / 4.0)  # slower than the linear limit at high C
    k = min(rates) if rates else 0.05
    return float(min(24.0 * 90, max(48.0, 12.0 * math.log(2) / k)))


def parse_every(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise RegimenError("every", f": {exc}") from None

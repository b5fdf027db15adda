"""Bayesian individualisation of a drug model from a patient's measured drug levels (TDM).

The drug file's population model is the prior: typical parameters for this patient (after genotype,
co-medications and covariates, :meth:`DrugModel.individualise`) and log-normal between-subject
variability, θ_k = θ_typ,k · exp(η_k) with η ~ N(0, Ω), Ω from ``variability.cv`` (ω² = ln(1 + CV²))
and ``variability.correlations``.  Observations follow the file's residual model,
y ~ N(c, σ²) with σ² = (prop · c)² + add² (combined proportional + additive); a value below the
limit of quantification (BLQ) contributes Φ((LLOQ − c)/σ) (Beal's M3).

* **MAP**: η̂ minimises −log p(η | y) = ½ ηᵀΩ⁻¹η + ½ ln|2πΩ| − Σ log p(y_j | η).  Sparse levels can
  leave the posterior with two modes, so Newton runs from the prior mode and from ±1.5 prior SD along
  each η axis (all starts in the same batch) and the lowest objective wins.  Damped Newton with
  the exact gradient from the differentiable torch path of :func:`pgxtwin.pk.simulate` (autograd),
  and a Hessian from central finite differences of that exact gradient (all 1 + 2d gradient
  evaluations run as one batched ``simulate`` call, so one Newton iteration costs one simulation).
  An ODE model whose right-hand side runs in numpy (Michaelis–Menten) takes its gradient and Hessian
  from central differences of the objective instead (:func:`_by_differences`): a forward solve of all
  1 + 2d + d(d−1) points on the numpy path (the compiled solver loop where the model has a kernel)
  costs a fraction of one differentiated torch solve, and the rows of one batch share the solver's
  steps, so the differences are smooth.  Its solver tolerance (rtol 1e-5)
  moves the mode by < 2e-6 in η against rtol 1e-7 (phenytoin, measured).
  For a linear model the dosing history is simulated as its regular runs plus the remaining doses
  (:func:`dose_pieces`), so a long EHR history costs about as much as its irregularities, not its doses.
* **Laplace**: posterior ≈ N(η̂, H⁻¹), H the Hessian at the mode.  Parameter intervals are the
  exact 5th/95th percentiles of θ under this approximation; predictive intervals sample η from it
  and add residual error (reported with and without).

Pure computation: no I/O except the two CSV readers.  Units mg, L, h, mg/L.

Limitation: the PK engine takes one value per parameter and patient (no time-varying parameters).
A covariate table (time_h, weight_kg, crcl_ml_min) is therefore applied piecewise-constant *as a
single value*: the row in force at the mean observation time for the estimation, the row in force
at the predicted time for the prediction (same η); the result's notes say so.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import PgxInputError
from ..pk._ode import OdeOptions
from ..pk.dosing import DosingHistory, Route
from ..pk.drug_model import DrugModel, PatientFactors, drug_model
from ..pk.engine import simulate
from ..pk.models.base import Array, LinearPKModel, Model

__all__ = [
    "EstimationResult",
    "ParameterEstimate",
    "dose_pieces",
    "estimate",
    "estimate_many",
    "parameter_values",
    "population_prior",
    "read_doses_csv",
    "read_observations_csv",
]

FRACTIONS = ("f", "fm")  # parameters that stay ≤ 1 (as in DrugModel.sample)
SD_FLOOR = 1e-6  # mg/L: keeps σ > 0 for a purely proportional model at c = 0 (e.g. before tlag)
MIN_RUN = 4  # doses: shorter regular runs are simulated dose by dose
FD_STEP = 1e-4  # η step of the central differences of the gradient (Hessian)
ODE_FD_STEP = 1e-3  # η step of the central differences of the objective (ODE models, see _by_differences)
MAX_NEWTON = 60
MAX_STEP = 1.0  # largest change of any η component in one Newton step
START_SD = 1.5  # Newton starts besides the prior mode: ±1.5 prior SD along each η axis
ODE_ESTIMATION = OdeOptions(rtol=1e-5, atol=1e-9)
Z90 = 1.6448536269514722

Dose = tuple[float, float]
Obs = tuple[float, float, bool]
CovRow = tuple[float, float | None, float | None]


# --------------------------------------------------------------------------------------------- prior
@dataclass(frozen=True)
class Prior:
    """The population model of one drug for one patient: what the estimation starts from."""

    drug: str
    model: DrugModel
    output: str  # model output of the observed analyte
    analyte: str
    typical: dict[str, float]
    names: tuple[str, ...]  # parameters with between-subject variability (η order)
    omega: np.ndarray  # (d, d)
    proportional: float
    additive: float
    notes: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return len(self.names)


def population_prior(drug: str, patient: PatientFactors, analyte: str | None = None) -> Prior:
    """Typical values for ``patient``, Ω and the residual model of ``drug`` (fails if it has none)."""
    model = drug_model(drug)
    name = model.drug.name
    residual = model.drug.residual
    if residual.proportional is None and residual.additive is None:
        raise PgxInputError(
            f"{name}: the drug file gives no residual error model (residual.proportional / residual.additive),"
            " so measured levels cannot be weighed against the prior"
        )
    analyte = analyte or next(iter(model.analytes))
    if analyte not in model.analytes:
        raise PgxInputError(f"{name}: unknown analyte {analyte!r} (known: {', '.join(model.analytes)})")
    individual = model.individualise(patient)
    typical = dict(individual.parameters)
    names, omega = model.omega(typical)
    notes = list(individual.notes)
    if not names:
        notes.append(f"{name}: no between-subject variability in the drug file: nothing to individualise")
    return Prior(
        name, model, model.analytes[analyte], analyte, typical, names, omega,
        residual.proportional.value if residual.proportional else 0.0,
        residual.additive.value if residual.additive else 0.0, tuple(notes),
    )


# ------------------------------------------------------------------------------------- dosing pieces
def dose_pieces(model: Model, history: DosingHistory) -> list[DosingHistory]:
    """``history`` as a sum of regular regimens plus the remaining doses, for a model linear in dose.

    Concentrations of a linear PK model superpose over doses, and the closed form sums a regular
    regimen as a geometric series (cost independent of its length) but an irregular history dose by
    dose.  An EHR history is mostly regular runs broken by a late, missed or changed dose: splitting it
    into maximal runs (same amount, route and duration at one spacing, ≥ MIN_RUN doses) makes its
    cost grow with the number of irregularities instead of the number of doses.  Zero-amount records
    add nothing and are dropped.  Other models, and histories already tagged regular, stay whole.
    """
    if not isinstance(model, LinearPKModel) or history.regimen is not None:
        return [history]
    events = [e for e in history.events if e.amount_mg > 0]
    pieces, rest, i = [], [], 0
    while i < len(events):
        first, j = events[i], i + 1
        kind = (first.amount_mg, first.route, first.duration_h)
        if j < len(events) and (events[j].amount_mg, events[j].route, events[j].duration_h) == kind and events[j].time_h > first.time_h:
            interval = events[j].time_h - first.time_h
            while (
                j + 1 < len(events)
                and (events[j + 1].amount_mg, events[j + 1].route, events[j + 1].duration_h) == kind
                and abs(events[j + 1].time_h - first.time_h - (j + 1 - i) * interval) <= 1e-9 * max(1.0, events[j + 1].time_h)
            ):
                j += 1
            if j - i + 1 >= MIN_RUN:
                pieces.append(DosingHistory.regular(first.amount_mg, interval, j - i + 1, first.time_h, first.route, first.duration_h))
                i = j + 1
                continue
        rest.append(first)
        i += 1
    if not pieces:
        return [history]
    return pieces + ([DosingHistory.from_events(rest)] if rest else [])


def _simulate(prior: Prior, params: dict[str, Array], pieces: Sequence[DosingHistory | list[DosingHistory]], times: np.ndarray) -> Array:
    """Observed output (N, T) for ``params`` under the sum of the dosing ``pieces`` (see :func:`dose_pieces`);
    several pieces need a linear model, a list of per-patient histories is one piece."""
    out = None
    for piece in pieces:
        c = simulate(prior.model.structure, params, piece, times, ode=ODE_ESTIMATION)[prior.output]
        out = c if out is None else out + c
    return out


# ---------------------------------------------------------------------------------- batched posterior
class _Posterior:
    """−log posterior of P patients sharing one drug (typical values may differ per patient).

    ``evaluate(eta, rows)`` takes η of shape (p, R, d) for the patients ``rows`` and returns the
    objective (p, R) and its exact gradient (p, R, d) from one batched ``simulate`` call per dosing piece.
    """

    def __init__(
        self, prior: Prior, typical: Sequence[dict[str, float]], histories: Sequence[DosingHistory],
        observations: Sequence[Sequence[Obs]],
    ) -> None:
        self.prior = prior
        self.histories = list(histories)
        self.n = len(self.histories)
        # one history object for all: the engine takes it once, as regular pieces where it can
        shared = self.histories[0] if all(h is self.histories[0] for h in self.histories) else None
        self.pieces = dose_pieces(prior.model.structure, shared) if shared is not None else None
        self.typical = {k: torch.tensor([t[k] for t in typical], dtype=torch.float64) for k in prior.typical}
        self.grid = np.unique(np.concatenate([[o[0] for o in obs] for obs in observations] + [np.zeros(0)]))
        k = max((len(o) for o in observations), default=0)
        self.idx = torch.zeros((self.n, k), dtype=torch.long)
        self.y = torch.zeros((self.n, k), dtype=torch.float64)
        self.blq = torch.zeros((self.n, k), dtype=torch.bool)
        self.mask = torch.zeros((self.n, k), dtype=torch.float64)
        for i, obs in enumerate(observations):
            for j, (t, c, b) in enumerate(obs):
                self.idx[i, j] = int(np.searchsorted(self.grid, t))
                self.y[i, j], self.blq[i, j], self.mask[i, j] = c, bool(b), 1.0
        self.omega_inv = torch.as_tensor(np.linalg.inv(prior.omega), dtype=torch.float64)
        self.prior_const = 0.5 * float(np.linalg.slogdet(2 * math.pi * prior.omega)[1])

    def _objective(self, eta: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        p, r, _ = eta.shape
        params = individual_parameters(self.prior, {k: v[rows] for k, v in self.typical.items()}, eta)
        flat = {k: v.reshape(-1) for k, v in params.items()}
        pieces = self.pieces if self.pieces is not None else [[self.histories[i] for i in rows for _ in range(r)]]
        pred = _simulate(self.prior, flat, pieces, self.grid)
        pred = pred.reshape(p, r, -1).gather(2, self.idx[rows][:, None, :].expand(p, r, -1))
        return self.nll(pred, rows) + 0.5 * ((eta @ self.omega_inv) * eta).sum(-1) + self.prior_const

    def evaluate(self, eta: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        eta = eta.detach().clone().requires_grad_(True)
        f = self._objective(eta, rows)
        (g,) = torch.autograd.grad(f.sum(), eta)
        return f.detach(), g.detach()

    def values(self, eta: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """The objective (p, R) alone: no gradient, so an ODE model runs on the numpy path."""
        with torch.no_grad():
            return self._objective(eta, rows)

    @property
    def by_differences(self) -> bool:
        """Derivatives by finite differences of :meth:`values` rather than autograd: for ODE models that
        can run in numpy, where one batched forward solve costs a fraction of a differentiated one."""
        structure = self.prior.model.structure
        return not isinstance(structure, LinearPKModel) and structure.numpy_rhs

    def nll(self, pred: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """−Σ log p(y | c) per (patient, row); pred (p, R, K)."""
        y, blq, mask = self.y[rows][:, None], self.blq[rows][:, None], self.mask[rows][:, None]
        sd = torch.sqrt((self.prior.proportional * pred) ** 2 + self.prior.additive**2 + SD_FLOOR**2)
        z = (y - pred) / sd
        normal = 0.5 * math.log(2 * math.pi) + torch.log(sd) + 0.5 * z**2
        censored = -torch.special.log_ndtr(z)
        return (torch.where(blq, censored, normal) * mask).sum(-1)


def individual_parameters(prior: Prior, typical: dict[str, torch.Tensor], eta: torch.Tensor) -> dict[str, torch.Tensor]:
    """θ = θ_typ · exp(η) for the parameters with variability; typical (p,) tensors, η (p, R, d)."""
    p, r, _ = eta.shape
    out = {k: v[:, None].expand(p, r) for k, v in typical.items()}
    for k, name in enumerate(prior.names):
        value = out[name] * torch.exp(eta[..., k])
        out[name] = torch.clamp(value, max=1.0) if name in FRACTIONS else value
    return out


def _starts(prior: Prior) -> np.ndarray:
    """Newton starts (S, d): the prior mode, and ±START_SD prior SDs along each η axis.  Sparse levels can
    leave two modes (e.g. absorption vs elimination, flip-flop); one start may settle in the lesser."""
    sd = np.sqrt(np.diag(prior.omega))
    axes = np.diag(START_SD * sd)
    return np.concatenate([np.zeros((1, prior.dim)), axes, -axes])


def _newton(post: _Posterior) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched damped Newton from every start of every patient: per patient the lowest objective found,
    as mode (P, d), Hessian at the mode (P, d, d), objective (P,), iterations and converged flags.
    Rows (patient × start) are independent; each has its own step and backtracking.  A row that enters
    the basin of a mode another start of its patient has reached stops there (:func:`_joined`)."""
    n = post.n
    starts = _starts(post.prior)
    patient = np.repeat(np.arange(n), len(starts))
    fgh = _by_differences(post, patient) if post.by_differences else _by_autograd(post, patient)
    m = patient.size
    eta = torch.as_tensor(np.tile(starts, (n, 1)))
    f, g, h = fgh(eta, np.arange(m))
    step = _newton_step(g, h)
    scale = torch.ones(m, dtype=torch.float64)
    iterations = np.zeros(m, dtype=int)
    done = np.zeros(m, dtype=bool)
    converged = np.zeros(m, dtype=bool)
    pruned = np.zeros(m, dtype=bool)  # stopped on the way to a mode another start reached (see _joined)
    for _ in range(MAX_NEWTON):
        rows = np.flatnonzero(~done)
        if rows.size == 0:
            break
        iterations[rows] += 1
        trial = eta[rows] + scale[rows, None] * step[rows]
        ft, gt, ht = fgh(trial, rows)
        decrease = (g[rows] * step[rows]).sum(-1) * scale[rows]  # directional derivative (< 0)
        ok = (torch.isfinite(ft) & (ft <= f[rows] + 1e-4 * decrease)).numpy()
        tiny = ((-decrease < 1e-12) | (scale[rows] < 1e-6)).numpy() & ~ok
        accepted, stuck, shorter = rows[ok], rows[tiny], rows[~ok & ~tiny]
        eta[accepted], f[accepted], g[accepted], h[accepted] = trial[ok], ft[ok], gt[ok], ht[ok]
        step[accepted] = _newton_step(gt[ok], ht[ok])
        done[accepted] = converged[accepted] = (-(gt[ok] * step[accepted]).sum(-1) < 1e-10).numpy()  # Newton decrement
        scale[accepted] = 1.0
        done[stuck] = True  # no further decrease possible at this resolution
        converged[stuck] = (-decrease[tiny] < 1e-9).numpy()
        scale[shorter] *= 0.3
        joined = _joined(eta, f, h, converged, done, len(starts))
        done[joined] = pruned[joined] = True
    objective = np.where(pruned, np.inf, f.numpy()).reshape(n, -1)
    best = np.arange(n) * len(starts) + objective.argmin(1)
    return eta[best].numpy(), h[best].numpy(), f[best].numpy(), iterations[best], converged[best]


def _by_autograd(post: _Posterior, patient: np.ndarray):
    """f, exact gradient and Hessian (central differences of the gradient) at η (m, d) of rows ``rows``:
    1 + 2d gradient evaluations in one batched call."""
    d = post.prior.dim
    offsets = torch.zeros(1 + 2 * d, d, dtype=torch.float64)
    for k in range(d):
        offsets[1 + 2 * k, k], offsets[2 + 2 * k, k] = FD_STEP, -FD_STEP

    def fgh(eta: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f, g = post.evaluate(eta[:, None, :] + offsets, patient[rows])
        hess = torch.stack([(g[:, 1 + 2 * k] - g[:, 2 + 2 * k]) / (2 * FD_STEP) for k in range(d)], dim=1)
        return f[:, 0], g[:, 0], 0.5 * (hess + hess.transpose(1, 2))

    return fgh


def _by_differences(post: _Posterior, patient: np.ndarray):
    """f, gradient and Hessian at η (m, d) from central differences of the objective alone: the centre,
    ±h along each axis and ±h along each pair of axes (1 + 2d + d(d−1) points), all in one batched call.
    Rows solved in one batch share the solver's steps, so the differences are those of one smooth
    discretisation, not of step-size noise (error O(h²) ≈ 1e-6 at h = ODE_FD_STEP)."""
    d, h = post.prior.dim, ODE_FD_STEP
    eye = torch.eye(d, dtype=torch.float64)
    pairs = [(k, j) for k in range(d) for j in range(k + 1, d)]
    offsets = torch.cat([torch.zeros(1, d, dtype=torch.float64), h * eye, -h * eye]
                        + [torch.stack([h * (eye[k] + eye[j]), -h * (eye[k] + eye[j])]) for k, j in pairs])

    def fgh(eta: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = post.values(eta[:, None, :] + offsets, patient[rows])
        f0, plus, minus = v[:, 0], v[:, 1:1 + d], v[:, 1 + d:1 + 2 * d]
        g = (plus - minus) / (2 * h)
        hess = torch.diag_embed((plus - 2 * f0[:, None] + minus) / h**2)
        for i, (k, j) in enumerate(pairs):
            both = v[:, 1 + 2 * d + 2 * i] + v[:, 2 + 2 * d + 2 * i]
            hess[:, k, j] = hess[:, j, k] = (both - plus[:, k] - minus[:, k] - plus[:, j] - minus[:, j] + 2 * f0) / (2 * h**2)
        return f0, g, hess

    return fgh


def _joined(eta: torch.Tensor, f: torch.Tensor, h: torch.Tensor, converged: np.ndarray, done: np.ndarray, n_starts: int) -> np.ndarray:
    """Running rows already in the quadratic basin of a mode another start of the same patient reached:
    within 2 posterior SDs of it (q = ΔηᵀHΔη < 4, H its Hessian) where the objective matches that mode's
    quadratic model, f ≈ f_mode + q/2, to 10%.  Newton from there ends at that mode, so they stop."""
    d = eta.shape[1]
    e, fr = eta.reshape(-1, n_starts, d), f.reshape(-1, n_starts)
    diff = e[:, :, None, :] - e[:, None, :, :]  # (P, running a, converged b, d)
    q = (diff[..., None, :] @ h.reshape(-1, 1, n_starts, d, d) @ diff[..., :, None])[..., 0, 0]
    excess = fr[:, :, None] - fr[:, None, :]
    quadratic = ((excess - 0.5 * q).abs() <= 0.05 * q + 1e-3) & (q < 4.0)
    near = quadratic.numpy() & converged.reshape(-1, 1, n_starts) & ~done.reshape(-1, n_starts, 1)
    return np.flatnonzero(near.any(-1).reshape(-1))


def _newton_step(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """−H⁻¹g with H made positive definite (eigenvalues floored), each component capped at MAX_STEP."""
    w, v = torch.linalg.eigh(h)
    w = torch.clamp(w, min=1e-3 * torch.clamp(w.abs().amax(-1, keepdim=True), min=1.0))
    step = -(v @ ((v.transpose(1, 2) @ g[..., None]) / w[..., None]))[..., 0]
    biggest = step.abs().amax(-1, keepdim=True)
    return step * torch.clamp(MAX_STEP / torch.clamp(biggest, min=1e-300), max=1.0)


def _laplace_covariance(h: np.ndarray, omega: np.ndarray) -> tuple[np.ndarray, bool]:
    """H⁻¹, with H's eigenvalues floored if it is not positive definite at the mode (flagged)."""
    w, v = np.linalg.eigh(0.5 * (h + h.T))
    floor = 1e-6 / max(np.max(np.diag(omega)), 1e-12)
    ok = bool((w > floor).all())
    w = np.maximum(w, floor)
    return (v / w) @ v.T, ok


# ----------------------------------------------------------------------------------------- prediction
def parameter_values(names: Sequence[str], typical: dict[str, float], eta: np.ndarray) -> dict[str, np.ndarray]:
    """θ = θ_typ · exp(η) for the η rows (R, d) over ``names`` (fractions capped at 1); the other
    parameters at their typical values.  The numpy twin of :func:`individual_parameters`."""
    params = {k: np.full(len(eta), v) for k, v in typical.items()}
    for k, name in enumerate(names):
        params[name] = params[name] * np.exp(eta[:, k])
        if name in FRACTIONS:
            params[name] = np.minimum(params[name], 1.0)
    return params


def _concentrations(prior: Prior, typical: dict[str, float], eta: np.ndarray, history: DosingHistory, times: np.ndarray) -> np.ndarray:
    """Concentrations (R, T) of the observed output for the η rows (R, d) (numpy path of simulate)."""
    params = parameter_values(prior.names, typical, eta)
    return np.asarray(_simulate(prior, params, dose_pieces(prior.model.structure, history), times))


def add_residual(conc: np.ndarray, prior: Prior, rng: np.random.Generator) -> np.ndarray:
    """Concentrations plus residual error drawn from the drug's combined error model."""
    sd = np.sqrt((prior.proportional * conc) ** 2 + prior.additive**2)
    return conc + sd * rng.standard_normal(conc.shape)


# ------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ParameterEstimate:
    estimate: float  # MAP
    p05: float  # Laplace posterior percentiles
    p95: float
    prior: float  # typical value for this patient (prior median)

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "p05": self.p05, "p95": self.p95, "prior": self.prior}


@dataclass(frozen=True)
class EstimationResult:
    """MAP and Laplace posterior of one patient's η, and the predicted next trough."""

    drug: str
    analyte: str
    parameter_names: tuple[str, ...]
    eta: np.ndarray  # MAP of η (d,)
    covariance: np.ndarray  # Laplace covariance of η (d, d)
    parameters: dict[str, ParameterEstimate]
    prediction: dict[str, float]
    objective: float  # −log posterior (unnormalised) at the mode
    n_observations: int
    converged: bool
    iterations: int
    notes: tuple[str, ...]
    _prior: Prior = field(repr=False)
    _typical_next: dict[str, float] = field(repr=False)
    _history: DosingHistory = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "parameters": {k: v.as_dict() for k, v in self.parameters.items()},
            "prediction": dict(self.prediction),
            "notes": list(self.notes),
            "objective": self.objective,
            "n_observations": self.n_observations,
        }

    def parameter_draws(self, n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` individual parameter sets from the Laplace posterior (for dose selection)."""
        rng = np.random.default_rng(seed)
        eta = rng.multivariate_normal(self.eta, self.covariance, size=n, method="cholesky") if len(self.eta) else np.zeros((n, 0))
        return parameter_values(self.parameter_names, self._typical_next, eta)

    def predict(
        self, times_h: Sequence[float], *, n_draws: int = 2000, seed: int = 0, history: DosingHistory | None = None
    ) -> dict[str, np.ndarray]:
        """Concentrations at ``times_h`` under the dosing history (default: the one estimated from):
        the MAP curve, and 5th/95th percentiles with and without residual error."""
        times = np.asarray(times_h, dtype=float)
        hist = history or self._history
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(self.eta, self.covariance, size=n_draws, method="eigh") if len(self.eta) else np.zeros((n_draws, 0))
        # the MAP curve rides along as row 0: one simulation for both
        conc = _concentrations(self._prior, self._typical_next, np.vstack([self.eta[None], draws]), hist, times)
        point, draws = conc[0], conc[1:]
        noisy = add_residual(draws, self._prior, rng)
        q, qn = np.quantile(draws, [0.05, 0.95], axis=0), np.quantile(noisy, [0.05, 0.95], axis=0)
        return {
            "map": point,
            "p05": qn[0], "p95": qn[1], "p05_without_residual_error": q[0], "p95_without_residual_error": q[1],
        }


# ------------------------------------------------------------------------------------------ validation
def _history(prior: Prior, doses: Sequence[Dose], route: str | None) -> DosingHistory:
    if not doses:
        raise PgxInputError(f"{prior.drug}: no doses given: a concentration needs a dosing history")
    standard = prior.model.drug.dosing.standard
    route = route or standard.route
    duration = (standard.infusion_h or 0.0) if route == Route.IV_INFUSION.value else 0.0
    try:
        return DosingHistory.from_records([float(t) for t, _ in doses], [float(a) for _, a in doses], route, duration)
    except (TypeError, ValueError) as exc:
        raise PgxInputError(f"doses: {exc}") from None


def _check_observations(observations: Sequence[Obs], first_dose_h: float) -> list[Obs]:
    out = []
    for i, row in enumerate(observations):
        if len(row) != 3:
            raise PgxInputError(f"observation {i}: expected (time_h, concentration_mg_per_l, blq), got {row!r}")
        t, c, b = float(row[0]), float(row[1]), bool(row[2])
        if not (math.isfinite(t) and math.isfinite(c)):
            raise PgxInputError(f"observation {i} (t={row[0]} h): time and concentration must be finite numbers")
        if c < 0:
            raise PgxInputError(f"observation {i} (t={t:g} h): negative concentration {c:g} mg/L")
        if b and c <= 0:
            raise PgxInputError(f"observation {i} (t={t:g} h): a BLQ observation carries the LLOQ (> 0), got {c:g}")
        if t < first_dose_h:
            raise PgxInputError(f"observation {i} (t={t:g} h) is before the first dose ({first_dose_h:g} h)")
        out.append((t, c, b))
    times = [o[0] for o in out]
    if len(set(times)) != len(times):
        raise PgxInputError("two observations at the same time: give one value per time (e.g. their mean)")
    return sorted(out)


def _patient_at(patient: PatientFactors, covariates: Sequence[CovRow] | None, t: float) -> PatientFactors:
    if not covariates:
        return patient
    rows = sorted(covariates, key=lambda r: r[0])
    row = next((r for r in reversed(rows) if r[0] <= t), rows[0])
    changes = {}
    if row[1] is not None:
        changes["weight_kg"] = float(row[1])
    if len(row) > 2 and row[2] is not None:
        changes["crcl_ml_min"] = float(row[2])
    return replace(patient, **changes)


def _next_trough_time(prior: Prior, doses: Sequence[Dose], notes: list[str]) -> float:
    times = sorted(float(t) for t, _ in doses)
    if len(times) >= 2 and times[-1] - times[-2] > 0:
        return times[-1] + (times[-1] - times[-2])
    tau = prior.model.drug.dosing.standard.interval_h
    notes.append(f"next trough: one dose time in the history, the standard interval ({tau:g} h) is assumed")
    return times[-1] + tau


# ------------------------------------------------------------------------------------------ estimate
def estimate(
    drug: str,
    patient: PatientFactors,
    doses: Sequence[Dose],
    observations: Sequence[Obs],
    analyte: str | None = None,
    *,
    covariates: Sequence[CovRow] | None = None,
    route: str | None = None,
    n_draws: int = 2000,
    seed: int = 0,
) -> EstimationResult:
    """MAP individual parameters, Laplace posterior and predicted next trough for one patient.

    Args:
        drug: library name or synonym.
        patient: covariates, genotypes and co-medications (the prior's typical values).
        doses: (time_h, amount_mg) records, any order, irregular allowed (route: the drug's standard).
        observations: (time_h, concentration_mg_per_l, blq); for a BLQ row the concentration is the LLOQ.
        analyte: observed analyte (default: the drug's main analyte).
        covariates: optional (time_h, weight_kg, crcl_ml_min) rows, piecewise constant (see module notes).
        n_draws: posterior draws for the predictive interval.
    """
    doses = list(doses)
    if not doses:
        raise PgxInputError(f"{drug}: no doses given: a concentration needs a dosing history")
    first = min(float(t) for t, _ in doses)
    obs = _check_observations(observations, first)
    notes: list[str] = []
    t_fit = float(np.mean([o[0] for o in obs])) if obs else first
    fit_patient = _patient_at(patient, covariates, t_fit)
    prior = population_prior(drug, fit_patient, analyte)
    notes += prior.notes
    history = _history(prior, doses, route)
    t_next = _next_trough_time(prior, doses, notes)
    next_patient = _patient_at(patient, covariates, t_next)
    typical_next = population_prior(drug, next_patient, analyte).typical if covariates else prior.typical
    if covariates:
        notes.append(
            "time-varying covariates: the PK engine holds parameters constant in time, so the estimation used"
            f" the covariates in force at the mean observation time ({t_fit:g} h: weight {fit_patient.weight_kg}"
            f" kg, CrCL {fit_patient.crcl_ml_min} mL/min) and the prediction those in force at {t_next:g} h"
            f" (weight {next_patient.weight_kg} kg, CrCL {next_patient.crcl_ml_min} mL/min), with the same η"
        )
    d = prior.dim
    if obs and d:
        post = _Posterior(prior, [prior.typical], [history], [obs])
        mode, hess, f, iters, conv = _newton(post)
        eta, objective, iterations, converged = mode[0], float(f[0]), int(iters[0]), bool(conv[0])
        cov, pd = _laplace_covariance(hess[0], prior.omega)
        if not pd:
            notes.append("the Hessian at the mode was not positive definite: its small eigenvalues were floored")
        if not converged:
            notes.append(f"the optimiser stopped after {iterations} Newton iterations without meeting its tolerance")
    else:
        eta, cov, iterations, converged = np.zeros(d), prior.omega.copy(), 0, True
        objective = float(0.5 * np.linalg.slogdet(2 * math.pi * prior.omega)[1]) if d else 0.0
        if not obs:
            notes.append("no observations: the result is the prior (population) prediction for this patient")
    return _result(prior, eta, cov, objective, len(obs), converged, iterations, notes, history, typical_next, t_next, n_draws, seed)


def _result(
    prior: Prior, eta: np.ndarray, cov: np.ndarray, objective: float, n_obs: int, converged: bool, iterations: int,
    notes: list[str], history: DosingHistory, typical_next: dict[str, float], t_next: float, n_draws: int, seed: int,
) -> EstimationResult:
    parameters = {}
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    for k, name in enumerate(prior.names):
        typ = prior.typical[name]
        cap = (lambda x: min(x, 1.0)) if name in FRACTIONS else (lambda x: x)
        parameters[name] = ParameterEstimate(
            cap(typ * math.exp(eta[k])), cap(typ * math.exp(eta[k] - Z90 * sd[k])),
            cap(typ * math.exp(eta[k] + Z90 * sd[k])), typ,
        )
    result = EstimationResult(
        prior.drug, prior.analyte, prior.names, eta, cov, parameters, {}, objective, n_obs, converged, iterations,
        tuple(notes), prior, typical_next, history,
    )
    pred = result.predict([t_next], n_draws=n_draws, seed=seed)
    result.prediction.update({
        "next_trough_mg_per_l": float(pred["map"][0]),
        "p05": float(pred["p05"][0]),
        "p95": float(pred["p95"][0]),
        "p05_without_residual_error": float(pred["p05_without_residual_error"][0]),
        "p95_without_residual_error": float(pred["p95_without_residual_error"][0]),
        "time_h": t_next,
    })
    return result


def estimate_many(
    drug: str, patient: PatientFactors, histories: Sequence[DosingHistory], observations: Sequence[Sequence[Obs]],
    analyte: str | None = None,
) -> tuple[Prior, np.ndarray, np.ndarray, np.ndarray]:
    """MAP and Laplace covariance for many patients sharing ``patient``'s prior, in one batched Newton
    (the same objective and optimiser as :func:`estimate`; used by the validation benchmark).

    Returns the prior, modes (P, d), covariances (P, d, d) and converged flags (P,).
    """
    prior = population_prior(drug, patient, analyte)
    obs = [_check_observations(o, min(e.time_h for e in h.events)) for o, h in zip(observations, histories, strict=True)]
    post = _Posterior(prior, [prior.typical] * len(histories), histories, obs)
    mode, hess, _, _, conv = _newton(post)
    covs = np.stack([_laplace_covariance(h, prior.omega)[0] for h in hess])
    return prior, mode, covs, conv


# ------------------------------------------------------------------------------------------------ CSV
_TRUE = {"1", "true", "yes", "y", "t", "blq"}
_FALSE = {"", "0", "false", "no", "n", "f"}


def _read_rows(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PgxInputError(f"cannot read the file ({exc.strerror})", source=source) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise PgxInputError("the file is empty", source=source, line=1)
    reader = csv.reader(lines)
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise PgxInputError(
            f"header must name the columns {', '.join(required + optional)}; missing {', '.join(missing)}",
            source=source, line=1,
        )
    rows = []
    for lineno, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise PgxInputError(f"{len(cells)} cells for {len(header)} columns", source=source, line=lineno)
        cells = cells + [""] * (len(header) - len(cells))
        rows.append((lineno, {h: c.strip() for h, c in zip(header, cells, strict=True) if h in required + optional}))
    if not rows:
        raise PgxInputError("no data rows after the header", source=source, line=1)
    return rows


def _number(cells: dict[str, str], column: str, source: str, line: int) -> float:
    text = cells[column]
    try:
        value = float(text)
    except ValueError:
        raise PgxInputError(f"{column}={text!r} is not a number", source=source, line=line) from None
    if not math.isfinite(value):
        raise PgxInputError(f"{column}={text!r} is not a finite number", source=source, line=line)
    return value


def read_doses_csv(path: str | Path) -> list[Dose]:
    """``time_h,amount_mg`` rows (one per administration) -> [(time_h, amount_mg)]."""
    source = str(path)
    out = []
    for line, cells in _read_rows(path, ("time_h", "amount_mg")):
        t, a = _number(cells, "time_h", source, line), _number(cells, "amount_mg", source, line)
        if t < 0:
            raise PgxInputError(f"negative time_h {t:g}", source=source, line=line)
        if a < 0:
            raise PgxInputError(f"negative amount_mg {a:g}", source=source, line=line)
        out.append((t, a))
    return out


def read_observations_csv(path: str | Path, doses: Sequence[Dose] | None = None) -> list[Obs]:
    """``time_h,concentration_mg_per_l[,blq]`` rows -> [(time_h, mg/L, blq)].

    In a BLQ row (blq = 1/true/yes) the concentration is the assay's LLOQ.  With ``doses`` given,
    observations before the first dose are rejected.
    """
    source = str(path)
    first = min((float(t) for t, _ in doses), default=None) if doses else None
    out = []
    for line, cells in _read_rows(path, ("time_h", "concentration_mg_per_l"), ("blq",)):
        t = _number(cells, "time_h", source, line)
        c = _number(cells, "concentration_mg_per_l", source, line)
        flag = cells.get("blq", "").lower()
        if flag not in _TRUE | _FALSE:
            raise PgxInputError(f"blq={cells['blq']!r}: expected 1/0, true/false or yes/no", source=source, line=line)
        blq = flag in _TRUE
        if c < 0:
            raise PgxInputError(f"negative concentration {c:g} mg/L", source=source, line=line)
        if blq and c <= 0:
            raise PgxInputError("a BLQ row must give the LLOQ (> 0) as its concentration", source=source, line=line)
        if first is not None and t < first:
            raise PgxInputError(f"observation at {t:g} h is before the first dose ({first:g} h)", source=source, line=line)
        out.append((t, c, blq))
    return out

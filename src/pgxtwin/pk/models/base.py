"""Abstract bases of the model families and the sum-of-exponentials algebra behind the closed forms.

Every model is a small immutable description of structure; numbers arrive separately as a mapping of
parameter name -> array of shape (N,) (or scalar, broadcast), so one call simulates N patients.

Families:
  * :class:`LinearPKModel`  linear PK: closed form by superposition of exponentials, plus an ODE form.
  * :class:`NonlinearPKModel`  PK with saturable elimination: ODE only.
  * :class:`PDModel`  pharmacodynamics driven by a wrapped PK model's concentration.

All share the ODE interface used by the batched solver: states are amounts (mg) for PK compartments,
``rhs`` gives d(state)/dt per hour, oral doses go to an analytic depot that feeds ``input_state``.
Code is written against an array namespace ``xp`` (numpy or torch) so the closed forms serve both the
fast numpy path and the differentiable torch path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, TypeAlias

import numpy as np
import torch

from pgxtwin.pk.dosing import Route

Array: TypeAlias = Any  # np.ndarray or torch.Tensor; kept loose so one code path serves both
ParamValues: TypeAlias = Mapping[str, Array | float]
Params: TypeAlias = dict[str, Array]

__all__ = [
    "LinearPKModel",
    "Model",
    "NonlinearPKModel",
    "ParamSpec",
    "PDModel",
    "SumExp",
    "namespace",
]

# Relative gap below which two rate constants are treated as equal (ka == k flip-flop, etc.): the
# degenerate closed form (t·e^{-kt}) is the limit; nudging one rate by this much keeps the error near
# max(eps·k·t, 1e-16/eps) ~ 1e-7 while avoiding 0/0.
_DEGENERATE_RTOL = 1e-7


def namespace(*arrays: Array) -> ModuleType:
    """``torch`` if any argument is a tensor, else ``numpy``."""
    return torch if any(isinstance(a, torch.Tensor) for a in arrays) else np


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One model parameter: name, unit, meaning, optional default and admissible range."""

    name: str
    unit: str
    doc: str
    default: float | None = None
    lower: float = 0.0
    lower_inclusive: bool = False
    upper: float | None = None

    def check(self, values: np.ndarray) -> None:
        bad = ~np.isfinite(values)
        bad |= (values < self.lower) if self.lower_inclusive else (values <= self.lower)
        if self.upper is not None:
            bad |= values > self.upper
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rng = f"{'[' if self.lower_inclusive else '('}{self.lower}, {self.upper if self.upper is not None else 'inf'}]"
            raise ValueError(f"parameter {self.name} ({self.unit}) must lie in {rng}; patient {i} has {values[i]!r}")


@dataclass(frozen=True, slots=True)
class SumExp:
    """Σ_j coef_j · exp(-rate_j · s) for s ≥ 0 (0 before), batched: coef, rate of shape (N, J).

    The unit impulse response of every linear compartmental system has this form; convolution with
    another such response (a chained first-order process) stays in the family.
    """

    coef: Array
    rate: Array

    @property
    def xp(self) -> ModuleType:
        return namespace(self.coef, self.rate)

    @staticmethod
    def single(coef: Array, rate: Array) -> SumExp:
        """One exponential coef·e^{-rate s} from (N,) arrays."""
        return SumExp(coef[:, None], rate[:, None])

    def scale(self, factor: Array) -> SumExp:
        """Multiply by a per-patient factor of shape (N,)."""
        return SumExp(self.coef * factor[:, None], self.rate)

    def convolve(self, other: SumExp) -> SumExp:
        """(self ⊛ other)(s) = ∫_0^s self(u)·other(s-u) du, in closed form.

        e^{-p s} ⊛ e^{-q s} = (e^{-q s} - e^{-p s}) / (p - q); equal rates are nudged apart (see
        ``_DEGENERATE_RTOL``) rather than special-cased, which keeps the code branch-free and differentiable.
        """
        xp = self.xp
        p, q = self.rate, other.rate
        # Nudge p where it (nearly) equals some q; do it on the rates so exponent and denominator agree.
        close = xp.abs(p[:, :, None] - q[:, None, :]) <= _DEGENERATE_RTOL * q[:, None, :]
        p = xp.where(close.any(axis=2), p * (1 + 4 * _DEGENERATE_RTOL), p)
        ab_over_diff = self.coef[:, :, None] * other.coef[:, None, :] / (p[:, :, None] - q[:, None, :])
        coef = xp.concatenate([-ab_over_diff.sum(axis=2), ab_over_diff.sum(axis=1)], axis=1)
        return SumExp(coef, xp.concatenate([p, q], axis=1))

    def integral(self) -> Array:
        """∫_0^∞ of the response, (N,) (e.g. AUC per unit dose in h·mg/L per mg)."""
        return (self.coef / self.rate).sum(axis=1)

    def __call__(self, s: Array) -> Array:
        """Evaluate at lags ``s`` of shape (N, T) (h); zero for s < 0."""
        xp = self.xp
        sp = xp.clip(s, 0, None)
        out = 0.0
        for j in range(self.coef.shape[1]):
            out = out + self.coef[:, j : j + 1] * xp.exp(-self.rate[:, j : j + 1] * sp)
        return xp.where(s >= 0, out, 0.0)


class Model(ABC):
    """Common interface: parameters, analytes, and the ODE form used by the batched solver."""

    #: concentration-like outputs, in the order results list them
    analytes: tuple[str, ...]
    #: names of the ODE states (amounts in mg for PK compartments)
    state_names: tuple[str, ...]
    #: ``rhs`` uses only operators valid on numpy arrays too: the solver may then run it in numpy
    #: (lower per-call overhead) when no gradient is needed
    numpy_rhs: ClassVar[bool] = False
    #: the id of the same right-hand side compiled with numba in ``pk/_ode_compiled.py``, whose compiled
    #: solver loop then runs the numpy path; None: the Python loop
    kernel_id: ClassVar[int | None] = None

    @property
    @abstractmethod
    def parameters(self) -> tuple[ParamSpec, ...]:
        """Specification of every parameter this model reads."""

    @property
    def routes(self) -> frozenset[Route]:
        """Supported routes (oral needs ka, f, tlag parameters)."""
        return frozenset(Route)

    @property
    def has_closed_form(self) -> bool:
        return False

    # -- parameters -----------------------------------------------------------------------------------
    def prepare(self, values: ParamValues, xp: ModuleType | None = None) -> tuple[Params, int]:
        """Validate parameters, fill defaults and broadcast to (N,) float64 arrays of namespace ``xp``.

        Returns the arrays and N. Unknown names are rejected so a typo cannot silently fall back to a default.
        """
        specs = {s.name: s for s in self.parameters}
        unknown = set(values) - set(specs)
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {sorted(unknown)}; expected {sorted(specs)}")
        xp = xp or namespace(*values.values())
        raw: dict[str, Array] = {}
        for name, spec in specs.items():
            if name in values:
                raw[name] = values[name]
            elif spec.default is not None:
                raw[name] = spec.default
            else:
                raise ValueError(f"{type(self).__name__} needs parameter {name} ({spec.unit}): {spec.doc}")
        sizes = {int(np.size(v)) if not isinstance(v, torch.Tensor) else v.numel() for v in raw.values()} - {1}
        if len(sizes) > 1:
            raise ValueError(f"parameter arrays disagree on the number of patients: sizes {sorted(sizes)}")
        n = sizes.pop() if sizes else 1
        out: Params = {}
        for name, v in raw.items():
            if xp is torch:
                t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64))
                t = t.to(torch.float64).reshape(-1).expand(n) if t.numel() == 1 else t.to(torch.float64).reshape(n)
                specs[name].check(t.detach().cpu().numpy())
                out[name] = t
            else:
                a = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
                a = np.broadcast_to(a.reshape(-1), (n,)) if a.size == 1 else a.reshape(n)
                specs[name].check(a)
                out[name] = a
        return out, n

    # -- ODE form (torch tensors of shape (N, S)) ----------------------------------------------------------
    @abstractmethod
    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        """d(state)/dt (per h) without dose inputs; x is (N, S)."""

    @abstractmethod
    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        """Analytes from states x of shape (..., N, S) (leading axes e.g. time); outputs are (..., N)."""

    @abstractmethod
    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        """Amount leaving the system per hour (mg/h), (N,): for mass balance bookkeeping."""

    @property
    def input_state(self) -> int:
        """Index of the state that receives IV doses and absorbed oral drug."""
        return 0

    def initial_state(self, p: Params, n: int) -> torch.Tensor:
        """State before any drug (zeros for PK; baselines for PD)."""
        return torch.zeros(n, len(self.state_names), dtype=torch.float64, device=_device(p))

    def oral(self, p: Params) -> tuple[Array, Array, Array]:
        """Absorption rate ka (1/h), bioavailability F and lag time tlag (h) for oral doses."""
        return p["ka"], p["f"], p["tlag"]

    # -- closed form (only where has_closed_form) ------------------------------------------------------
    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]:
        """Per analyte, concentration (mg/L) after 1 mg given at s = 0 by ``route`` (F included, tlag not)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed form")

    def transform(self, conc: dict[str, Array], p: Params) -> dict[str, Array]:
        """Nonlinear outputs computed from linear ones (e.g. an Emax effect from Ce); identity by default."""
        return conc


def _device(p: Params) -> torch.device:
    for v in p.values():
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


# Parameter specs shared by the PK models (one definition so names and units stay consistent).
KA = ParamSpec("ka", "1/h", "first-order absorption rate constant (oral)", default=1.0)
F = ParamSpec("f", "-", "oral bioavailability", default=1.0, lower_inclusive=True)
TLAG = ParamSpec("tlag", "h", "oral absorption lag time", default=0.0, lower_inclusive=True)
ABSORPTION = (KA, F, TLAG)


class LinearPKModel(Model):
    """Linear PK: concentrations are superpositions of dose × sum-of-exponential impulse responses."""

    @property
    def has_closed_form(self) -> bool:
        return True

    @abstractmethod
    def clearance(self, p: Params) -> Array:
        """Total clearance of the parent drug (L/h), (N,): AUC∞ = F·Dose/CL."""

    @abstractmethod
    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]: ...

    def central_response(self, p: Params, route: Route) -> SumExp:
        """Parent concentration (mg/L per mg dosed) — the building block for chained models."""
        return self.impulse_response(p, route)[self.analytes[0]]


class NonlinearPKModel(Model):
    """PK with nonlinear (e.g. saturable) kinetics: simulated by the batched ODE solver only."""


class PDModel(Model):
    """PD driven by the concentration ``driver`` of a wrapped PK model; states are PK states + PD states."""

    def __init__(self, pk: Model, driver: str | None = None) -> None:
        self.pk = pk
        self.driver = driver or pk.analytes[0]
        if self.driver not in pk.analytes:
            raise ValueError(f"driver {self.driver!r} is not an analyte of {type(pk).__name__} ({pk.analytes})")
        clash = {s.name for s in pk.parameters} & {s.name for s in self.pd_parameters}
        if clash:
            raise ValueError(f"PD parameter names {sorted(clash)} clash with the PK model's")
        self.analytes = pk.analytes + self.pd_analytes
        self.state_names = pk.state_names + self.pd_state_names

    pd_analytes: tuple[str, ...]
    pd_state_names: tuple[str, ...]

    @property
    @abstractmethod
    def pd_parameters(self) -> tuple[ParamSpec, ...]: ...

    @abstractmethod
    def pd_rhs(self, y: torch.Tensor, conc: torch.Tensor, p: Params) -> torch.Tensor:
        """d(PD state)/dt given PD states y (N, S_pd) and the driving concentration (N,) mg/L."""

    @abstractmethod
    def pd_observe(self, y: Array, conc: Array, p: Params) -> dict[str, Array]:
        """PD outputs from PD states y (..., N, S_pd) and the driving concentration (..., N)."""

    def pd_initial_state(self, p: Params, n: int) -> torch.Tensor:
        return torch.zeros(n, len(self.pd_state_names), dtype=torch.float64, device=_device(p))

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        return self.pk.parameters + self.pd_parameters

    @property
    def routes(self) -> frozenset[Route]:
        return self.pk.routes

    @property
    def input_state(self) -> int:
        return self.pk.input_state

    def oral(self, p: Params) -> tuple[Array, Array, Array]:
        return self.pk.oral(p)

    def initial_state(self, p: Params, n: int) -> torch.Tensor:
        return torch.cat([self.pk.initial_state(p, n), self.pd_initial_state(p, n)], dim=1)

    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        k = len(self.pk.state_names)
        conc = self.pk.observe(x[:, :k], p)[self.driver]
        return torch.cat([self.pk.rhs(x[:, :k], p), self.pd_rhs(x[:, k:], conc, p)], dim=1)

    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        k = len(self.pk.state_names)
        out = self.pk.observe(x[..., :k], p)
        return out | self.pd_observe(x[..., k:], out[self.driver], p)

    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        return self.pk.elimination_rate(x[:, : len(self.pk.state_names)], p)


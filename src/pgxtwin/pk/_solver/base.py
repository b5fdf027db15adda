"""Batched adaptive explicit Runge–Kutta: the step loop, error control and dense output.

``AbstractERK`` integrates dy/dt = f(t, y) for a whole batch of patients at once (y of shape (S, N) or
any shape: the solver only sees arrays). A subclass is an embedded Runge–Kutta pair given by a
:class:`ButcherTableau` plus a dense-output rule, and the concrete solvers (``dopri5.py``, ``tsit5.py``)
only supply coefficients.

Design (measured on the PK problems: a few states × 10³–10⁵ patients, where the cost is the number of
array operations per step, not flops):

* One step size shared by the batch, error test on the max norm over every patient and state (one
  patient's error cannot hide among many). The step size and all step decisions are Python floats:
  no per-patient bookkeeping, one host sync per step (free on CPU).
* Two array backends with the same loop and the same arithmetic (``_TorchStages``, ``_NumpyStages``),
  chosen by the type of y0:

  - torch tensors: the differentiable path. Stage sums are chains of ``torch.add(acc, k, alpha=h·a_ij)``
    over the non-zero tableau entries (one fused multiply-add per term); everything on the solution
    path is an ordinary torch op, so gradients flow to the parameters captured by the right-hand side
    (discretise-then-differentiate, step sizes held fixed). The error estimate runs under ``no_grad``.
  - numpy arrays: no gradients. The stage derivatives live in one preallocated (s, ...) array, so each
    stage sum, the error estimate and each dense output is one matrix–vector product plus one add;
    with numpy's lower cost per call this cuts the time per step ~2.4x at 10³ patients.
* ``pk/_ode_compiled.py`` runs the same loop compiled with numba (arrays from :func:`tableau_arrays`) for
  models with a compiled right-hand side: at small batches the numpy backend's cost is per-call overhead.
* FSAL: the last stage is the derivative at the new point and starts the next step.
* Output times are served by the method's dense output (4th-order interpolant) inside accepted steps,
  so they never shorten a step; ``stops`` are times a step must end at (kinks or jumps of the forcing):
  the step ending at one sees the forcing's left limit there, and the derivative is re-evaluated after it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import ClassVar, TypeAlias

import numpy as np
import torch

__all__ = ["AbstractERK", "AbstractSolver", "ButcherTableau", "Rhs", "Solution", "tableau_arrays"]

State: TypeAlias = torch.Tensor | np.ndarray
#: f(t, y) -> dy/dt, same type and shape as y (a fresh array: the solver keeps it)
Rhs = Callable[[float, State], State]


@dataclass(frozen=True, slots=True)
class ButcherTableau:
    """Explicit RK pair: c (s,), lower-triangular rows a[i] (len i, i = 1..s-1), b (s,), b_err = b - b̂ (s,).

    With ``fsal`` the last row of ``a`` equals ``b`` (so the last stage is f at the new point).
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_err: tuple[float, ...]
    fsal: bool = True

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError("a must have s lower-triangular rows")
        if len(self.b) != s or len(self.b_err) != s:
            raise ValueError("b and b_err need one weight per stage")
        if self.fsal and not np.allclose(self.a[-1] + (0.0,), self.b, rtol=0, atol=1e-15):
            raise ValueError("FSAL tableau: last row of a must equal b")


@dataclass(frozen=True, slots=True)
class Solution:
    """Solver output: ``ys`` at the requested output times (T, *y0.shape), state ``y1`` at t1 and stats.

    Arrays are of y0's type (torch tensor or numpy array)."""

    ys: State
    y1: State
    h_next: float
    n_steps: int
    n_rejected: int
    n_rhs: int


class AbstractSolver(ABC):
    """Integrates dy/dt = f(t, y) for a batch y (N, ...) from t0 to t1 with relative/absolute tolerances."""

    #: order of the propagated solution
    order: ClassVar[int]

    @abstractmethod
    def solve(
        self, f: Rhs, y0: State, t0: float, t1: float, t_out: Sequence[float] | np.ndarray, *,
        rtol: float, atol: float, stops: Sequence[float] = (), h0: float | None = None, max_steps: int = 1_000_000,
    ) -> Solution:
        """States at ``t_out`` (sorted, inside (t0, t1]) and at t1. ``stops``: times a step must end at."""


def _max_ratio(x: State, scale: State) -> float:
    return float((abs(x) / scale).max()) if math.prod(x.shape) else 0.0


class _TorchStages:
    """Stage derivatives of one step as a list of tensors (differentiable)."""

    def __init__(self, tab: ButcherTableau, f: Rhs, k1: torch.Tensor, rtol: float, atol: float) -> None:
        self.tab, self.f, self.rtol, self.atol = tab, f, rtol, atol
        self.ks = [k1]

    @staticmethod
    def combine(y: torch.Tensor | None, ks: Sequence[torch.Tensor], weights: Sequence[float], h: float) -> torch.Tensor:
        """y + h Σ w_j k_j (y None: 0): one fused multiply-add per non-zero weight, accumulated in place
        into a fresh tensor (differentiable: add's backward saves no inputs)."""
        out = None
        for k, w in zip(ks, weights):
            if w == 0.0:
                continue
            if out is None:
                out = torch.add(y, k, alpha=h * w) if y is not None else k * (h * w)
            else:
                out.add_(k, alpha=h * w)
        return (y if y is not None else torch.zeros_like(ks[0])) if out is None else out

    def attempt(self, t: float, y: torch.Tensor, h: float, t_last: float) -> tuple[torch.Tensor, float]:
        """Stages of a step of size h from (t, y), stage times capped at t_last: the new state and its error
        ratio (≤ 1: accept)."""
        tab = self.tab
        ks = [self.ks[0]]
        y_new = y
        for i in range(1, len(tab.c)):
            yi = self.combine(y, ks, tab.a[i], h)
            if tab.fsal and i == len(tab.c) - 1:
                y_new = yi
            ks.append(self.f(min(t + tab.c[i] * h, t_last), yi))
        if not tab.fsal:
            y_new = self.combine(y, ks, tab.b, h)
        self.ks = ks
        with torch.no_grad():
            err = self.combine(None, ks, tab.b_err, h).abs_()
            scale = torch.maximum(y.abs(), y_new.abs()).mul_(self.rtol).add_(self.atol)
            ratio = float(err.div_(scale).max()) if err.numel() else 0.0
        return y_new, ratio

    def dense(self, y: torch.Tensor, h: float, weights: Sequence[float]) -> torch.Tensor:
        """y + h Σ w_j k_j over the stages of the last attempted step."""
        return self.combine(y, self.ks, weights, h)

    def last(self) -> torch.Tensor:
        return self.ks[-1]

    def restart(self, k1: torch.Tensor) -> None:
        self.ks = [k1]


class _NumpyStages:
    """Stage derivatives of one step in one preallocated (s, ...) array: every weighted sum of stages is
    one matrix–vector product."""

    def __init__(self, tab: ButcherTableau, f: Rhs, k1: np.ndarray, rtol: float, atol: float) -> None:
        s = len(tab.c)
        self.tab, self.f, self.rtol, self.atol = tab, f, rtol, atol
        self.rows = [np.asarray(row) for row in tab.a]  # stage i sums the i stages before it
        self.b, self.e = np.asarray(tab.b), np.asarray(tab.b_err)
        self.k = np.empty((s, *k1.shape))
        self.flat = self.k.reshape(s, -1)  # a view: stage j is row j
        self.k[0] = k1

    def _sum(self, y: np.ndarray, weights: np.ndarray, h: float) -> np.ndarray:
        """y + h Σ_j w_j k_j over the first len(weights) stages."""
        out = (h * weights) @ self.flat[: len(weights)]
        out += y.reshape(-1)
        return out.reshape(y.shape)

    def attempt(self, t: float, y: np.ndarray, h: float, t_last: float) -> tuple[np.ndarray, float]:
        """Stages of a step of size h from (t, y), stage times capped at t_last: the new state and its error
        ratio (≤ 1: accept)."""
        tab = self.tab
        yi = y
        for i in range(1, len(tab.c)):
            yi = self._sum(y, self.rows[i], h)
            self.k[i] = self.f(min(t + tab.c[i] * h, t_last), yi)
        y_new = yi if tab.fsal else self._sum(y, self.b, h)
        err = (h * self.e) @ self.flat
        np.abs(err, out=err)
        scale = np.maximum(np.abs(y), np.abs(y_new)).reshape(-1)
        scale *= self.rtol
        scale += self.atol
        err /= scale
        return y_new, float(err.max()) if err.size else 0.0

    def dense(self, y: np.ndarray, h: float, weights: Sequence[float]) -> np.ndarray:
        """y + h Σ w_j k_j over the stages of the last attempted step."""
        return self._sum(y, np.asarray(weights), h)

    def last(self) -> np.ndarray:
        return self.k[-1]

    def restart(self, k1: np.ndarray) -> None:
        self.k[0] = k1


class AbstractERK(AbstractSolver):
    """Adaptive explicit Runge–Kutta loop with a shared step size and dense output."""

    tableau: ClassVar[ButcherTableau]
    #: PI step-size controller (Hairer's DOPRI5): after an accepted step
    #: h ← h · clamp(safety · ratio^(-alpha) · ratio_prev^beta, dfactor, ifactor), after a rejection
    #: h ← h · clamp(safety · ratio^(-1/order), dfactor, 1). The beta term damps the step-size
    #: oscillation an I-controller shows where accuracy no longer limits the step (decayed states
    #: under atol: h·λ drifts to the stability boundary and the solution rings at the atol level).
    safety: ClassVar[float] = 0.9
    ifactor: ClassVar[float] = 10.0
    dfactor: ClassVar[float] = 0.2
    beta: ClassVar[float] = 0.04

    @abstractmethod
    def dense_weights(self, theta: float) -> tuple[float, ...]:
        """Weights w_j(θ) of the interpolant y(t0 + θh) = y0 + h Σ_j w_j k_j, for θ in [0, 1]."""

    def initial_step(self, f: Rhs, t0: float, y0: State, f0: State, rtol: float, atol: float) -> float:
        """Hairer–Nørsett–Wanner starting step (max norm); costs one evaluation of f."""
        with torch.no_grad():
            scale = atol + rtol * abs(y0)
            d0, d1 = _max_ratio(y0, scale), _max_ratio(f0, scale)
            h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            f1 = f(t0 + h0, y0 + h0 * f0)
            d2 = _max_ratio(f1 - f0, scale) / h0
            dmax = max(d1, d2)
            h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / self.order)
        return min(100.0 * h0, h1)

    # -- the loop -------------------------------------------------------------------------------------
    def solve(
        self, f: Rhs, y0: State, t0: float, t1: float, t_out: Sequence[float] | np.ndarray, *,
        rtol: float, atol: float, stops: Sequence[float] = (), h0: float | None = None, max_steps: int = 1_000_000,
    ) -> Solution:
        t_out = [float(t) for t in t_out]
        if t_out and not (t0 < t_out[0] and t_out[-1] <= t1):
            raise ValueError("output times must lie in (t0, t1]")
        ends = sorted({float(s) for s in stops if t0 < s < t1} | {float(t1)})
        span = t1 - t0
        eps = 1e-12 * max(abs(t0), abs(t1), 1.0)  # a step ending this close to a stop ends on it
        exponent = -1.0 / self.order
        alpha = 1.0 / self.order - 0.75 * self.beta
        ratio_prev = 1e-4

        t, y = float(t0), y0
        k1 = f(t, y)
        n_rhs = 1
        h = h0 if h0 is not None else self.initial_step(f, t, y, k1, rtol, atol)
        if h0 is None:
            n_rhs += 1
        h = min(max(h, 1e-12 * max(span, 1.0)), span)
        stages_of = _NumpyStages if isinstance(y0, np.ndarray) else _TorchStages
        st = stages_of(self.tableau, f, k1, rtol, atol)
        ys: list[State] = []
        i_out, i_end = 0, 0
        n_steps = n_rejected = 0
        while t < t1:
            if n_steps + n_rejected >= max_steps:
                raise RuntimeError(f"ODE solver: more than {max_steps} steps between t={t0} and t={t1} h")
            t_end = ends[i_end]
            hit = t + h >= t_end - eps
            h_used = (t_end - t) if hit else h
            # a step ending at a stop sees the forcing's left limit there (the stop may be a jump of the
            # forcing, e.g. a lagged oral dose entering): its stages at c = 1 are taken just before it
            y_new, ratio = st.attempt(t, y, h_used, math.nextafter(t_end, -math.inf) if hit else math.inf)
            n_rhs += len(self.tableau.c) - 1
            if not math.isfinite(ratio):
                n_rejected += 1
                h = h_used * self.dfactor
                continue
            if ratio <= 1.0:
                t_new = t_end if hit else t + h_used
                while i_out < len(t_out) and t_out[i_out] <= t_new + eps:
                    if abs(t_out[i_out] - t_new) <= eps:
                        ys.append(y_new)
                    else:
                        ys.append(st.dense(y, h_used, self.dense_weights((t_out[i_out] - t) / h_used)))
                    i_out += 1
                t, y = t_new, y_new
                n_steps += 1
                if hit:
                    i_end += 1
                if t < t1 and (hit or not self.tableau.fsal):
                    st.restart(f(t, y))  # the right-hand side may change at a stop
                    n_rhs += 1
                else:
                    st.restart(st.last())
                ratio = max(ratio, 1e-10)
                factor = min(self.ifactor, max(self.dfactor, self.safety * ratio**-alpha * ratio_prev**self.beta))
                ratio_prev = max(ratio, 1e-4)
                # a step shortened to land on a stop says nothing against the step size before it
                h = max(h, h_used * factor) if hit else h_used * factor
            else:
                n_rejected += 1
                h = h_used * min(1.0, max(self.dfactor, self.safety * ratio**exponent))
            if t < t1 and h < 1e-14 * max(abs(t), 1.0) and t1 - t > eps:
                raise RuntimeError(f"ODE solver: step size underflow at t={t} h")
        if isinstance(y0, np.ndarray):
            stacked = np.stack(ys) if ys else np.zeros((0, *y0.shape))
        else:
            stacked = torch.stack(ys) if ys else y0.new_zeros((0, *y0.shape))
        return Solution(stacked, y, h, n_steps, n_rejected, n_rhs)


@cache
def tableau_arrays(solver: type[AbstractERK]) -> tuple[np.ndarray, ...]:
    """Tableau of ``solver`` as arrays, and its dense output as polynomial coefficients:
    w_j(θ) = Σ_q dense[j, q]·θ^(q+1), fitted exactly (degree ≤ 6) from its ``dense_weights``."""
    tab = solver.tableau
    s = len(tab.c)
    if not tab.fsal:
        raise ValueError(f"{solver.__name__}: the compiled loop needs an FSAL tableau")
    a = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        a[i, : len(row)] = row
    thetas = np.linspace(0.1, 1.0, 6)
    weights = np.array([solver().dense_weights(float(th)) for th in thetas])  # (6, s)
    powers = thetas[:, None] ** np.arange(1, 7)[None, :]
    dense = np.linalg.solve(powers, weights).T  # (s, 6)
    check = np.array(solver().dense_weights(0.37))
    if not np.allclose(dense @ 0.37 ** np.arange(1, 7), check, rtol=0, atol=1e-12):
        raise ValueError(f"{solver.__name__}: dense output is not a polynomial of degree ≤ 6 without constant term")
    return np.asarray(tab.c, dtype=float), a, np.asarray(tab.b_err, dtype=float), dense

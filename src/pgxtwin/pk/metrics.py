"""Exposure metrics from simulated curves (numpy or torch, (N, T) in mg/L) or, for linear models, analytically.

Curve metrics treat the concentration as linear between output times (linear trapezoid, linear
crossing times), so their accuracy follows the output grid. Windows ``[start, end]`` must be output times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pgxtwin.pk.dosing import Route
from pgxtwin.pk.models.base import Array, LinearPKModel, Model, ParamValues, namespace

__all__ = [
    "ExposureMetrics",
    "WindowTimes",
    "auc",
    "auc_inf",
    "cmax",
    "cmin",
    "css_avg",
    "exposure",
    "time_in_window",
]


def _window(times: Array, conc: Array, start: float | None, end: float | None) -> tuple[Array, Array]:
    """Columns of ``conc`` for start ≤ t ≤ end; both bounds must be output times."""
    t_np = np.asarray(times.detach().cpu() if isinstance(times, torch.Tensor) else times, dtype=float)
    lo = 0 if start is None else _index(t_np, start, "start")
    hi = t_np.shape[0] - 1 if end is None else _index(t_np, end, "end")
    if hi <= lo:
        raise ValueError(f"empty window [{start}, {end}] h")
    return times[lo : hi + 1], conc[:, lo : hi + 1]


def _index(times: np.ndarray, t: float, name: str) -> int:
    hits = np.flatnonzero(np.abs(times - t) <= 1e-9 * max(1.0, abs(t)))
    if hits.size == 0:
        raise ValueError(f"{name}={t} h is not one of the output times")
    return int(hits[0])


def auc(times: Array, conc: Array, start: float | None = None, end: float | None = None) -> Array:
    """Area under the curve over [start, end] (h·mg/L), linear trapezoid, (N,)."""
    t, c = _window(times, conc, start, end)
    dt = t[1:] - t[:-1]
    return ((c[:, 1:] + c[:, :-1]) * (0.5 * dt)[None, :]).sum(axis=1)


def cmax(times: Array, conc: Array, start: float | None = None, end: float | None = None) -> Array:
    """Peak concentration over [start, end] (mg/L), (N,)."""
    return _window(times, conc, start, end)[1].max(axis=1)


def cmin(times: Array, conc: Array, start: float | None = None, end: float | None = None) -> Array:
    """Lowest concentration over [start, end] (mg/L), (N,): the trough when the window is a dosing interval."""
    return _window(times, conc, start, end)[1].min(axis=1)


def css_avg(auc_tau: Array, tau_h: float) -> Array:
    """Average steady-state concentration AUCτ/τ (mg/L)."""
    return auc_tau / tau_h


@dataclass(frozen=True, slots=True)
class WindowTimes:
    """Hours spent below, within and above a concentration window, each (N,)."""

    below_h: Array
    within_h: Array
    above_h: Array
    duration_h: float

    @property
    def fraction_below(self) -> Array:
        return self.below_h / self.duration_h

    @property
    def fraction_within(self) -> Array:
        return self.within_h / self.duration_h

    @property
    def fraction_above(self) -> Array:
        return self.above_h / self.duration_h


def _time_beyond(c: Array, dt: Array, low: float, high: float) -> tuple[Array, Array]:
    """Hours below ``low`` and above ``high`` with c linear between output times; c (N, T), dt (T-1,).

    On a linear segment the time below a level is (level - min)/(max - min), clipped to [0, 1],
    whichever way it runs. The 1e-300 keeps flat segments exact without a branch: ±huge clips to 1/0
    and a flat segment sitting on the level gives 0 (the window is closed). Temporaries are reused:
    this runs over every (patient, time) cell of large populations.
    """
    xp = namespace(c)
    c0, c1 = c[:, :-1], c[:, 1:]
    lo = xp.minimum(c0, c1)
    span = c1 - c0
    span = xp.abs(span, out=span) if xp is np else span.abs_()
    span += 1e-300
    tmp = low - lo
    tmp /= span
    below = xp.clip(tmp, 0.0, 1.0, out=tmp) if xp is np else tmp.clamp_(0.0, 1.0)
    below_h = below @ dt
    lo += span  # now the segment maximum
    lo -= high
    lo /= span
    above = xp.clip(lo, 0.0, 1.0, out=lo) if xp is np else lo.clamp_(0.0, 1.0)
    return below_h, above @ dt


def time_in_window(
    times: Array, conc: Array, low: float, high: float, start: float | None = None, end: float | None = None
) -> WindowTimes:
    """Time below ``low``, within [low, high] and above ``high`` (mg/L) over [start, end] (h)."""
    if not low <= high:
        raise ValueError(f"window low={low} must not exceed high={high}")
    t, c = _window(times, conc, start, end)
    with np.errstate(over="ignore"):  # ±inf from flat segments is clipped on purpose
        below, above = _time_beyond(c, t[1:] - t[:-1], low, high)
    total = float(t[-1] - t[0])
    return WindowTimes(below, total - below - above, above, total)


@dataclass(frozen=True, slots=True)
class ExposureMetrics:
    """Metrics over one dosing interval [start, start + τ] (typically the last, at steady state)."""

    auc_tau: Array  # h·mg/L
    cmax: Array  # mg/L
    cmin: Array  # mg/L (trough)
    css_avg: Array  # mg/L
    window: WindowTimes | None  # time below / within / above the therapeutic window


def exposure(
    times: Array, conc: Array, tau_h: float, start: float, window: tuple[float, float] | None = None
) -> ExposureMetrics:
    """AUCτ, Cmax, Cmin, Css,avg and (optionally) time in ``window`` = (low, high) over [start, start + τ]."""
    end = start + tau_h
    a = auc(times, conc, start, end)
    return ExposureMetrics(
        auc_tau=a,
        cmax=cmax(times, conc, start, end),
        cmin=cmin(times, conc, start, end),
        css_avg=css_avg(a, tau_h),
        window=None if window is None else time_in_window(times, conc, window[0], window[1], start, end),
    )


def auc_inf(
    model: Model, params: ParamValues, dose_mg: float | Array, route: Route | str = Route.ORAL, analyte: str | None = None
) -> Array:
    """AUC from 0 to ∞ after a single dose (h·mg/L), analytic for linear models: dose × ∫ impulse response.

    For the parent this equals F·Dose/CL (IV: Dose/CL); at steady state it is also AUCτ, so
    Css,avg = auc_inf / τ. Infusions have the same AUC∞ as a bolus of the same amount.
    """
    if not isinstance(model, LinearPKModel):
        raise ValueError(f"analytic AUC needs a linear PK model, not {type(model).__name__}")
    route = Route(route)
    p, _ = model.prepare(params)
    resp = model.impulse_response(p, Route.IV_BOLUS if route is Route.IV_INFUSION else route)
    return dose_mg * resp[analyte or model.analytes[0]].integral()

"""A whole dosing history on the compiled solver loop: ``pk/_ode.py``'s segment walk, compiled with numba.

For a model with a compiled ``kernel`` on the numpy path. The events are those of ``_ode.py`` and are
treated the same way: segments end at the kinks of the forcing (``bounds``); at each bound IV boluses
are added to the input state and the oral depot is set to its closed form (decayed from the previous
bound, plus the doses that entered since); inside a segment the depot rides along as the last state,
infusions covering the segment are a constant rate, and oral doses whose per-patient entry falls inside
it are analytic forcing terms whose entry times the steps end at. Walking the segments in Python costs
~0.1 ms each, more than solving a small batch across them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pgxtwin.pk._solver import AbstractERK
from pgxtwin.pk._solver.compiled import OK, Kernel, check_status, coefficients, erk_loop

__all__ = ["integrate_history"]

MAX_STEPS = 1_000_000  # per segment, as AbstractERK.solve


@numba.njit(cache=True)
def _walk(kernel, p, x0, dep0, t_init, bounds, times, oral, ka, entry, amount, bolus_t, bolus_amount,
          inf_start, inf_end, inf_rate, inp, c, a, e, dense, order, safety, ifactor, dfactor, beta,
          rtol, atol, max_jumps):  # pragma: no cover - compiled
    n_core, n = x0.shape
    n_out = times.size
    out = np.empty((n_out, n_core, n))
    x = x0.copy()
    dep = dep0.copy()
    extra = 1 if oral else 0
    y0 = np.empty((n_core + extra, n))
    rate = np.empty(n)
    t_prev = t_init
    i_out = 0
    for i in range(bounds.size):
        t0 = bounds[i]
        # depot in closed form: decayed since the last bound, plus doses entering in (t_prev, t0]
        # ([t_init, t0] at the first bound: depot0 is the depot just before t_init)
        for j in range(n):
            d = dep[j] * math.exp(-min(ka[j] * (t0 - t_prev), 700.0)) if t0 != t_prev else dep[j]
            for k in range(entry.shape[1]):
                en = entry[j, k]
                if (en > t_prev or (i == 0 and en >= t_prev)) and en <= t0:
                    d += amount[j, k] * math.exp(-min(ka[j] * (t0 - en), 700.0))
            dep[j] = d
        t_prev = t0
        for k in range(bolus_t.size):  # right-continuous: a bolus at t0 counts from t0 on
            if bolus_t[k] == t0:
                for j in range(n):
                    x[inp, j] += bolus_amount[j, k]
        if i_out < n_out and times[i_out] == t0:
            out[i_out] = x
            i_out += 1
        if i == bounds.size - 1:
            break
        t1 = bounds[i + 1]
        first = i_out
        while i_out < n_out and times[i_out] < t1:
            i_out += 1
        t_out = times[first:i_out]
        rate[:] = 0.0
        for k in range(inf_start.size):
            if inf_start[k] <= t0 and inf_end[k] >= t1:
                for j in range(n):
                    rate[j] += inf_rate[j, k]
        # oral doses entering strictly inside (t0, t1) for some patient: forcing terms, and stops
        inside = np.zeros(entry.shape[1], dtype=np.bool_)
        for k in range(entry.shape[1]):
            for j in range(n):
                if t0 < entry[j, k] < t1:
                    inside[k] = True
                    break
        lagged = np.flatnonzero(inside)
        entry_in = np.ascontiguousarray(entry[:, lagged])
        amount_in = np.ascontiguousarray(amount[:, lagged])
        stops = np.unique(entry_in.ravel())
        stops = stops[(stops > t0) & (stops < t1)]
        if stops.size > max_jumps:  # more kinks than steps worth stopping at: error control resolves them
            stops = stops[:0]
        ends = np.append(stops, t1)
        y0[:n_core] = x
        if oral:
            y0[n_core] = dep
        ys, y1, _, _, _, _, status, t = erk_loop(
            kernel, y0, t0, t1, t_out, ends, p, oral, ka, entry_in, amount_in, rate, inp,
            c, a, e, dense, order, safety, ifactor, dfactor, beta, rtol, atol, MAX_STEPS,
        )
        if status != OK:
            return out, status, t, t0, t1
        for q in range(t_out.size):
            out[first + q] = ys[q, :n_core]
        x[:, :] = y1[:n_core]
    return out, OK, 0.0, 0.0, 0.0


def integrate_history(
    solver: type[AbstractERK], kernel: Kernel, p: np.ndarray, x0: np.ndarray, depot0: np.ndarray, t_init: float,
    bounds: np.ndarray, times: np.ndarray, *, ka: np.ndarray, entry: np.ndarray, amount: np.ndarray,
    bolus_t: np.ndarray, bolus_amount: np.ndarray, infusions: tuple[np.ndarray, np.ndarray, np.ndarray],
    input_state: int, oral: bool, rtol: float, atol: float, max_jumps: int,
) -> np.ndarray:
    """Core states (T, S, N) at the sorted ``times`` (each ≥ t_init, the last = the last bound).

    p: model parameters (P, N) in ``parameters`` order; x0 (S, N) and depot0 (N,) at ``t_init``; ka (N,);
    oral doses as per-patient entry times and amounts after bioavailability (N, E), boluses as times (B,)
    and amounts (N, B), infusions as (start (I,), end (I,), rate (N, I) mg/h).
    """
    c, a, e, dense = coefficients(solver)
    start, end, inf_rate = infusions
    out, status, t, t0, t1 = _walk(
        kernel, _c(p), _c(x0), _c(depot0), float(t_init), _c(bounds), _c(times), oral, _c(ka), _c(entry), _c(amount),
        _c(bolus_t), _c(bolus_amount), _c(start), _c(end), _c(inf_rate), input_state,
        c, a, e, dense, float(solver.order), solver.safety, solver.ifactor, solver.dfactor, solver.beta,
        float(rtol), float(atol), max_jumps,
    )
    if status != OK:
        check_status(status, t, t0, t1, MAX_STEPS)
    return out


def _c(x: np.ndarray) -> np.ndarray:
    """C-contiguous, writeable float64 (a copy only if needed): one array type, so one compiled version."""
    return np.require(x, np.float64, ("C", "W"))

"""Dosing histories on a compiled copy of the solver loop, for models with a compiled right-hand side.

The Python loop of ``_solver/base.py`` pays ~25 µs of array-call overhead per stage whatever the batch
size (a Michaelis–Menten update of 91 rows, 7 days of three doses a day: ~250 steps, 15–20 ms a solve),
and walking ``pk/_ode.py``'s segments in Python costs ~0.1 ms each. Here both run compiled (numba), for a
model whose ``kernel_id`` names a kernel below.

* The Runge–Kutta loop (:func:`_erk_loop`) is :meth:`AbstractERK.solve`'s algorithm on state-major
  (S, N) arrays: the solver's own (FSAL) tableau and dense output (:func:`tableau_arrays`), one step
  size shared by the batch, the max-norm error test, the PI controller, ``stops`` a step must end at
  (its stages there see the forcing's left limit), a fresh derivative after a stop.
* The right-hand side of a segment is the model's kernel on the core states plus the dose inputs of
  ``_ode.py``: the oral depot riding along as the last state (dz/dt = −ka·z, ka·z into the input
  state), lagged oral doses whose per-patient entry falls inside the segment (analytic decay from
  their entry, the entries being stops) and a constant infusion rate.
* The segment walk (:func:`_walk`): segments end at the kinks of the forcing (``bounds``); at each
  bound IV boluses are added to the input state and the oral depot is set to its closed form (decayed
  from the previous bound, plus the doses that entered since).
* The models' compiled right-hand sides (kernels) live here too, dispatched by the ``kernel_id`` their
  model class declares (:func:`kernel_rhs`). A kernel writes d(core state)/dt without inputs into
  out[:S] for the state-major states x (≥ S, N) and parameters p (P, N) in its model's ``parameters``
  order, computing what the model's ``rhs`` does. Why here, and why an id: numba caches compiled code
  per function and argument types and invalidates it only when the function's own file changes. A
  kernel passed as a function value is typed by its identity, which changes from process to process
  (the loop was compiled anew, ~14 s, in every process); a kernel in another file could change without
  the cached loop noticing. A new kernel: a function here, an id on its model, a branch in
  :func:`kernel_rhs`. This module is imported on the first compiled solve, so numba is loaded only by
  a process that runs one.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from pgxtwin.pk._solver import AbstractERK
from pgxtwin.pk._solver.base import tableau_arrays
from pgxtwin.pk.models.michaelis_menten import MichaelisMenten

__all__ = ["integrate_history", "kernel_rhs"]

MAX_STEPS = 1_000_000  # per segment, as AbstractERK.solve
OK, TOO_MANY_STEPS, UNDERFLOW = 0, 1, 2  # status of _erk_loop


@numba.njit(cache=True)
def _michaelis_menten(x, p, out):  # pragma: no cover - compiled; p: vmax, km, v, ka, f, tlag
    amount, vmax, km, v, rate = x[0], p[0], p[1], p[2], out[0]
    for j in range(amount.size):
        rate[j] = -vmax[j] * amount[j] / (km[j] * v[j] + amount[j])  # Vmax·C/(Km + C), one division


_MICHAELIS_MENTEN = MichaelisMenten.kernel_id


@numba.njit(cache=True)
def kernel_rhs(kernel_id, x, p, out):  # pragma: no cover - compiled
    """The kernel of the model with ``kernel_id``: d(core state)/dt without inputs, into out."""
    if kernel_id == _MICHAELIS_MENTEN:
        _michaelis_menten(x, p, out)
    else:
        raise ValueError("no compiled kernel with this id")


@numba.njit(cache=True)
def _rhs(kernel_id, t, y, p, out, oral, ka, entry, amount, rate, inp):  # pragma: no cover - compiled
    kernel_rhs(kernel_id, y, p, out)
    n = y.shape[1]
    last = y.shape[0] - 1
    if oral:
        for j in range(n):
            absorbed = ka[j] * y[last, j]
            out[last, j] = -absorbed
            out[inp, j] += absorbed + rate[j]
        if entry.shape[1]:
            for j in range(n):
                for k in range(entry.shape[1]):
                    lag = t - entry[j, k]
                    if lag >= 0.0:
                        out[inp, j] += ka[j] * amount[j, k] * math.exp(-min(ka[j] * lag, 700.0))
    else:
        for j in range(n):
            out[inp, j] += rate[j]


@numba.njit(cache=True)
def _max_ratio(x, y, rtol, atol):  # pragma: no cover - compiled
    m = 0.0
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            m = max(m, abs(x[r, j]) / (atol + rtol * abs(y[r, j])))
    return m


@numba.njit(cache=True)
def _erk_loop(kernel_id, y0, t0, t1, t_out, ends, p, oral, ka, entry, amount, rate, inp,
              c, a, e, dense, order, safety, ifactor, dfactor, beta, rtol, atol, max_steps):  # pragma: no cover - compiled
    """One segment [t0, t1] from y0 (S, N): states at t_out (T, S, N), the state at t1, the next step size,
    steps, rejections, right-hand-side calls, status (OK or the failure) and the time reached."""
    s = c.size
    n_states, n = y0.shape
    size = n_states * n
    k = np.empty((s, n_states, n))
    y = y0.copy()
    yi = np.empty((n_states, n))
    ys = np.empty((t_out.size, n_states, n))
    kf, yf, yif, errf = k.reshape(s, size), y.reshape(size), yi.reshape(size), np.empty(size)  # flat views
    span = t1 - t0
    eps = 1e-12 * max(abs(t0), abs(t1), 1.0)
    exponent = -1.0 / order
    alpha = 1.0 / order - 0.75 * beta
    ratio_prev = 1e-4
    t = t0
    _rhs(kernel_id, t, y, p, k[0], oral, ka, entry, amount, rate, inp)
    n_rhs = 1
    # Hairer–Nørsett–Wanner starting step (as AbstractERK.initial_step)
    d0, d1 = _max_ratio(y, y, rtol, atol), _max_ratio(k[0], y, rtol, atol)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    for r in range(n_states):
        for j in range(n):
            yi[r, j] = y[r, j] + h0 * k[0, r, j]
    _rhs(kernel_id, t + h0, yi, p, k[1], oral, ka, entry, amount, rate, inp)
    n_rhs += 1
    d2 = _max_ratio(k[1] - k[0], y, rtol, atol) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / order)
    h = min(100.0 * h0, h1)
    h = min(max(h, 1e-12 * max(span, 1.0)), span)
    i_out = 0
    i_end = 0
    n_steps = 0
    n_rejected = 0
    while t < t1:
        if n_steps + n_rejected >= max_steps:
            return ys, y, h, n_steps, n_rejected, n_rhs, TOO_MANY_STEPS, t
        t_end = ends[i_end]
        hit = t + h >= t_end - eps
        h_used = (t_end - t) if hit else h
        t_last = np.nextafter(t_end, -np.inf) if hit else np.inf  # left limit at a stop (see base.py)
        # stage sums as axpy passes over the flat (S·N) rows of k: contiguous, vectorised
        for i in range(1, s):
            yif[:] = yf
            for m in range(i):
                wm = h_used * a[i, m]
                if wm != 0.0:
                    km = kf[m]
                    for q in range(size):
                        yif[q] += wm * km[q]
            _rhs(kernel_id, min(t + c[i] * h_used, t_last), yi, p, k[i], oral, ka, entry, amount, rate, inp)
        n_rhs += s - 1  # FSAL: yi now holds the new state
        errf[:] = 0.0
        for m in range(s):
            wm = h_used * e[m]
            if wm != 0.0:
                km = kf[m]
                for q in range(size):
                    errf[q] += wm * km[q]
        ratio = 0.0
        total = 0.0  # NaN or inf anywhere shows in the sum (max() would drop a NaN)
        for q in range(size):
            err = abs(errf[q])
            scale = atol + rtol * max(abs(yf[q]), abs(yif[q]))
            total += err + scale
            if err > ratio * scale:  # divide only for a new maximum
                ratio = err / scale
        if not math.isfinite(total):
            n_rejected += 1
            h = h_used * dfactor
            continue
        if ratio <= 1.0:
            t_new = t_end if hit else t + h_used
            while i_out < t_out.size and t_out[i_out] <= t_new + eps:
                if abs(t_out[i_out] - t_new) <= eps:
                    ys[i_out] = yi
                else:
                    theta = (t_out[i_out] - t) / h_used
                    out = ys[i_out].reshape(size)
                    out[:] = yf
                    for m in range(s):
                        wm = 0.0
                        power = theta
                        for d in range(dense.shape[1]):
                            wm += dense[m, d] * power
                            power *= theta
                        wm *= h_used
                        if wm != 0.0:
                            km = kf[m]
                            for q in range(size):
                                out[q] += wm * km[q]
                i_out += 1
            t = t_new
            yf[:] = yif
            n_steps += 1
            if hit:
                i_end += 1
            if t < t1 and hit:
                _rhs(kernel_id, t, y, p, k[0], oral, ka, entry, amount, rate, inp)  # the forcing may change at a stop
                n_rhs += 1
            else:
                k[0] = k[s - 1]
            ratio = max(ratio, 1e-10)
            factor = min(ifactor, max(dfactor, safety * ratio**-alpha * ratio_prev**beta))
            ratio_prev = max(ratio, 1e-4)
            h = max(h, h_used * factor) if hit else h_used * factor
        else:
            n_rejected += 1
            h = h_used * min(1.0, max(dfactor, safety * ratio**exponent))
        if t < t1 and h < 1e-14 * max(abs(t), 1.0) and t1 - t > eps:
            return ys, y, h, n_steps, n_rejected, n_rhs, UNDERFLOW, t
    return ys, y, h, n_steps, n_rejected, n_rhs, OK, t


@numba.njit(cache=True)
def _walk(kernel_id, p, x0, dep0, t_init, bounds, times, oral, ka, entry, amount, bolus_t, bolus_amount,
          inf_start, inf_end, inf_rate, inp, c, a, e, dense, order, safety, ifactor, dfactor, beta,
          rtol, atol, max_jumps):  # pragma: no cover - compiled
    """Core states at ``times`` (T, S, N), status, and on failure the time reached and the segment."""
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
        ys, y1, _, _, _, _, status, t = _erk_loop(
            kernel_id, y0, t0, t1, t_out, ends, p, oral, ka, entry_in, amount_in, rate, inp,
            c, a, e, dense, order, safety, ifactor, dfactor, beta, rtol, atol, MAX_STEPS,
        )
        if status != OK:
            return out, status, t, t0, t1
        for q in range(t_out.size):
            out[first + q] = ys[q, :n_core]
        x[:, :] = y1[:n_core]
    return out, OK, 0.0, 0.0, 0.0


def integrate_history(
    solver: type[AbstractERK], kernel_id: int, p: np.ndarray, x0: np.ndarray, depot0: np.ndarray, t_init: float,
    bounds: np.ndarray, times: np.ndarray, *, ka: np.ndarray, entry: np.ndarray, amount: np.ndarray,
    bolus_t: np.ndarray, bolus_amount: np.ndarray, infusions: tuple[np.ndarray, np.ndarray, np.ndarray],
    input_state: int, oral: bool, rtol: float, atol: float, max_jumps: int,
) -> np.ndarray:
    """Core states (T, S, N) at the sorted ``times`` (each ≥ t_init, the last = the last bound).

    p: model parameters (P, N) in ``parameters`` order; x0 (S, N) and depot0 (N,) at ``t_init``; ka (N,);
    oral doses as per-patient entry times and amounts after bioavailability (N, E), boluses as times (B,)
    and amounts (N, B), infusions as (start (I,), end (I,), rate (N, I) mg/h).
    """
    c, a, e, dense = tableau_arrays(solver)
    start, end, inf_rate = infusions
    out, status, t, t0, t1 = _walk(
        kernel_id, _c(p), _c(x0), _c(depot0), float(t_init), _c(bounds), _c(times), oral, _c(ka), _c(entry), _c(amount),
        _c(bolus_t), _c(bolus_amount), _c(start), _c(end), _c(inf_rate), input_state,
        c, a, e, dense, float(solver.order), solver.safety, solver.ifactor, solver.dfactor, solver.beta,
        float(rtol), float(atol), max_jumps,
    )
    if status != OK:
        _check_status(status, t, t0, t1, MAX_STEPS)
    return out


def _check_status(status: int, t: float, t0: float, t1: float, max_steps: int) -> None:
    """Raise the error :meth:`AbstractERK.solve` raises for a failed compiled loop (status ≠ 0)."""
    if status == TOO_MANY_STEPS:
        raise RuntimeError(f"ODE solver: more than {max_steps} steps between t={t0} and t={t1} h")
    if status == UNDERFLOW:
        raise RuntimeError(f"ODE solver: step size underflow at t={t} h")


def _c(x: np.ndarray) -> np.ndarray:
    """C-contiguous, writeable float64 (a copy only if needed): one array type, so one compiled version."""
    return np.require(x, np.float64, ("C", "W"))

"""The batched adaptive Runge–Kutta loop of ``base.py``, compiled with numba, for models with a compiled
right-hand side.

Same algorithm as :meth:`AbstractERK.solve` on numpy arrays: the solver's own (FSAL) tableau and dense
output, one step size shared by the batch, the max-norm error test, the PI controller, ``stops`` a step
must end at, a fresh derivative after a stop. What changes is where the time goes. The Python loop pays ~25 µs of
array-call overhead per stage whatever the batch size (a Michaelis–Menten update of 91 rows, 7 days of
three doses a day: ~250 steps, 15–20 ms a solve); compiled, a stage costs its arithmetic.

The right-hand side of a segment between dose events is the model's ``kernel`` on the core states plus
the dose inputs of ``pk/_ode.py``: the oral depot riding along as the last state (dz/dt = −ka·z, ka·z
into the input state), lagged oral doses entering inside the segment (analytic decay from their entry
time) and a constant infusion rate. ``pk/_ode_compiled.py`` drives it over a dosing history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numba
import numpy as np

from pgxtwin.pk._solver.base import AbstractERK

__all__ = ["Kernel", "check_status", "coefficients", "erk_loop"]

#: numba-compiled kernel(x, p, out): d(core state)/dt without inputs into out[:S_core] (state-major
#: arrays (S, N); x may carry extra rows after the core states, p holds the model's parameters (P, N))
Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]

OK, TOO_MANY_STEPS, UNDERFLOW = 0, 1, 2  # status of erk_loop


@numba.njit(cache=True)
def _rhs(kernel, t, y, p, out, oral, ka, entry, amount, rate, inp):  # pragma: no cover - compiled
    kernel(y, p, out)
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
def erk_loop(kernel, y0, t0, t1, t_out, ends, p, oral, ka, entry, amount, rate, inp,
          c, a, e, dense, order, safety, ifactor, dfactor, beta, rtol, atol, max_steps):  # pragma: no cover - compiled
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
    _rhs(kernel, t, y, p, k[0], oral, ka, entry, amount, rate, inp)
    n_rhs = 1
    # Hairer–Nørsett–Wanner starting step (as AbstractERK.initial_step)
    d0, d1 = _max_ratio(y, y, rtol, atol), _max_ratio(k[0], y, rtol, atol)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    for r in range(n_states):
        for j in range(n):
            yi[r, j] = y[r, j] + h0 * k[0, r, j]
    _rhs(kernel, t + h0, yi, p, k[1], oral, ka, entry, amount, rate, inp)
    n_rhs += 1
    d2 = 0.0
    for r in range(n_states):
        for j in range(n):
            d2 = max(d2, abs(k[1, r, j] - k[0, r, j]) / (atol + rtol * abs(y[r, j])))
    d2 /= h0
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
            _rhs(kernel, min(t + c[i] * h_used, t_last), yi, p, k[i], oral, ka, entry, amount, rate, inp)
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
                _rhs(kernel, t, y, p, k[0], oral, ka, entry, amount, rate, inp)  # the forcing may change at a stop
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


@cache
def coefficients(solver: type[AbstractERK]) -> tuple[np.ndarray, ...]:
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


def check_status(status: int, t: float, t0: float, t1: float, max_steps: int) -> None:
    """Raise the error :meth:`AbstractERK.solve` raises for a failed compiled loop (status ≠ 0)."""
    if status == TOO_MANY_STEPS:
        raise RuntimeError(f"ODE solver: more than {max_steps} steps between t={t0} and t={t1} h")
    if status == UNDERFLOW:
        raise RuntimeError(f"ODE solver: step size underflow at t={t} h")

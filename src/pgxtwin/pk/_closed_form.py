"""Closed-form superposition for models with sum-of-exponential impulse responses.

Concentration = Σ_doses amount × response(t - t_dose - tlag). Two evaluators:

* event loop — any history, per-patient amounts; works in numpy or torch (differentiable);
* regular regimen — the sum over n doses every τ (or infinitely many, at steady state) collapses to a
  geometric series, so the cost does not grow with the number of doses. In numpy the exponentials are
  tabulated per patient over the distinct within-interval offsets and completed-dose counts, and the
  (N, T) result is assembled by broadcasting products — no transcendental function is evaluated per
  (patient, time) cell on a regular grid; torch uses the direct elementwise form.

Infusions use the integrated response: for rate R over D hours,
R·Σ_j (c_j/λ_j)·(e^{-λ_j (s-D)^+} - e^{-λ_j s^+}), which is right for s < 0, during and after the infusion.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pgxtwin.pk.dosing import DoseTable, RegularRegimen, Route
from pgxtwin.pk.models.base import Array, Model, Params, SumExp

__all__ = ["closed_form"]

# Rows per batched matmul in the tabulated path: keeps each block's output (~10 MB for a 28-day
# hourly grid) in cache.
_BLOCK_ROWS = 2048


def closed_form(
    model: Model,
    p: Params,
    n: int,
    table: DoseTable,
    regimen: RegularRegimen | None,
    times: Array,
    scale: Array | None,
    xp: ModuleType,
) -> dict[str, Array]:
    """Concentrations (N, T) per analyte. ``regimen`` (shared regular regimen) enables the geometric path."""
    responses = {route: model.impulse_response(p, route) for route in set(table.routes)}
    linear = next(iter(responses.values())).keys() if responses else model.analytes
    conc = {a: _zeros(xp, n, times) for a in linear}
    tlag = model.oral(p)[2] if Route.ORAL in responses else None
    if regimen is not None:
        amount = regimen.amount_mg * (scale if scale is not None else 1.0)
        for a, resp in responses[regimen.route].items():
            conc[a] = conc[a] + _regular(resp, amount, regimen, tlag, times, xp, n)
    else:
        amounts = table.amounts if xp is np else xp.as_tensor(table.amounts, dtype=xp.float64)
        if scale is not None:
            amounts = amounts * scale[:, None]
        for e, (t_e, route, dur) in enumerate(zip(table.times, table.routes, table.durations, strict=True)):
            if xp is np and not amounts[:, e].any():
                continue
            shift = t_e + (tlag if route is Route.ORAL else 0.0)
            s = times[None, :] - (shift[:, None] if _is_array(shift) else shift)
            for a, resp in responses[route].items():
                conc[a] = conc[a] + amounts[:, e : e + 1] * _dose_response(resp, s, route, dur, xp)
    return model.transform(conc, p)


def _zeros(xp: ModuleType, n: int, times: Array) -> Array:
    return np.zeros((n, times.shape[0])) if xp is np else times.new_zeros((n, times.shape[0]))


def _is_array(x: object) -> bool:
    return hasattr(x, "shape") and len(x.shape) > 0


def _dose_response(resp: SumExp, s: Array, route: Route, duration: float, xp: ModuleType) -> Array:
    """Response (N, T) to 1 mg given at lag s = 0 (s: (N, T) or (1, T) hours since the dose)."""
    if route is not Route.IV_INFUSION:
        return resp(s)
    out = 0.0
    sp, sdp = xp.clip(s, 0, None), xp.clip(s - duration, 0, None)
    for j in range(resp.coef.shape[1]):
        c, lam = resp.coef[:, j : j + 1], resp.rate[:, j : j + 1]
        out = out + (c / lam) * (xp.exp(-lam * sdp) - xp.exp(-lam * sp))
    return out / duration


# ---------------------------------------------------------------------------------------------------
# Regular regimen: n doses at t0 + kτ (k = 0..n-1), or k ≤ n-1 unbounded below at steady state.


def _regular(resp: SumExp, amount: Array, reg: RegularRegimen, tlag: Array | None, times: Array, xp: ModuleType, n: int) -> Array:
    amount = amount if _is_array(amount) else xp.full((n,), float(amount), dtype=xp.float64)
    if reg.route is Route.IV_INFUSION:
        # R·Σ_j (c_j/λ_j)·[S_j(w - D) - S_j(w) + (#infusions running)], S = geometric sum of started doses
        rate = amount / reg.duration_h
        c_over = resp.coef / resp.rate * rate[:, None]
        zero = xp.zeros((n,), dtype=xp.float64)
        out = _geometric(SumExp(c_over, resp.rate), zero + reg.duration_h, reg, times, xp)
        out = out - _geometric(SumExp(c_over, resp.rate), zero, reg, times, xp)
        running = _running_infusions(reg, times, xp)
        return out + c_over.sum(axis=1)[:, None] * running[None, :]
    shift = tlag if (reg.route is Route.ORAL and tlag is not None) else xp.zeros((n,), dtype=xp.float64)
    return _geometric(resp.scale(amount), shift, reg, times, xp)


def _split_periods(w: Array, tau: float, xp: ModuleType) -> tuple[Array, Array]:
    """w = k·τ + o with integer k and 0 ≤ o < τ, robust to floor() round-off at multiples of τ."""
    k = xp.floor(w / tau)
    o = w - k * tau
    k = xp.where(o < 0, k - 1, xp.where(o >= tau, k + 1, k))
    return k, w - k * tau


def _running_infusions(reg: RegularRegimen, times: Array, xp: ModuleType) -> Array:
    """Number of infusions in progress at each time: #{k ∈ doses : t - D < t0 + kτ ≤ t}, shape (T,)."""
    w = times - reg.start_h
    hi = xp.clip(xp.floor(w / reg.interval_h), None, reg.n_doses - 1)
    lo = xp.floor((w - reg.duration_h) / reg.interval_h)  # highest k that already ended
    if not reg.steady_state:
        lo = xp.clip(lo, -1, None)
    return xp.clip(hi - lo, 0, None)


def _geometric(resp: SumExp, shift: Array, reg: RegularRegimen, times: Array, xp: ModuleType) -> Array:
    """Σ_k Σ_j c_j·e^{-λ_j (t - t0 - shift - kτ)} over started doses k, shape (N, T)."""
    if xp is not np:
        return _geometric_direct(resp, shift, reg, times, xp)
    w = times - reg.start_h
    k, o = _split_periods(w, reg.interval_h, np)
    n_rect, period = _rectangular_prefix(k, o)
    if n_rect == 0:
        return _geometric_direct(resp, shift, reg, times, np)
    out = np.empty((resp.coef.shape[0], times.shape[0]))
    out[:, :n_rect] = _geometric_tabulated(resp, shift, reg, k[:n_rect:period], o[:period])
    if n_rect < times.shape[0]:
        out[:, n_rect:] = _geometric_direct(resp, shift, reg, times[n_rect:], np)
    return out


def _counts_table(lam: Array, q: Array, reg: RegularRegimen, xp: ModuleType) -> Array:
    """Q(q) such that Σ_started e^{-λ(u - kτ)} = e^{-λ u_last}·Q(q), with q = doses started (unclipped).

    u_last is the time since the q-th dose. Not at steady state: 0 for q ≤ 0, (1-r^q)/(1-r) up to n,
    then G(n)·r^{q-n} once dosing stopped (r = e^{-λτ}). At steady state the prior doses make it 1/(1-r)
    up to n. expm1 keeps (1-r^q)/(1-r) accurate when λτ is small.
    """
    tau, n = reg.interval_h, reg.n_doses
    one_minus_r = -xp.expm1(-lam * tau)
    after = xp.exp(-lam * tau * xp.clip(q - n, 0, None))
    if reg.steady_state:
        return after / one_minus_r
    started = xp.clip(q, 0, n)
    return -xp.expm1(-lam * tau * started) / one_minus_r * after


def _geometric_direct(resp: SumExp, shift: Array, reg: RegularRegimen, times: Array, xp: ModuleType) -> Array:
    tau = reg.interval_h
    u = times[None, :] - (reg.start_h + shift)[:, None]
    k, u_last = _split_periods(u, tau, xp)  # latest dose index whose (shifted) time has passed, time since it
    q = k + 1  # u_last ∈ [0, τ) is the time since dose q-1; _counts_table handles q ≤ 0 and q > n
    out = 0.0
    for j in range(resp.coef.shape[1]):
        lam = resp.rate[:, j : j + 1]
        out = out + resp.coef[:, j : j + 1] * xp.exp(-lam * u_last) * _counts_table(lam, q, reg, xp)
    return out


def _rectangular_prefix(k: np.ndarray, o: np.ndarray) -> tuple[int, int]:
    """Length L and period P of the longest prefix of times laid out as whole periods with identical offsets.

    Times t_i = t0 + k_i·τ + o_i with (k_i, o_i) = (k_0 + i // P, o_(i mod P)) for i < L let the (N, L)
    block be built as an (N, L/P, P) outer product. Returns (0, 0) if there is no such block.
    """
    period = int(np.searchsorted(k, k[0], side="right"))
    if period == 0 or k.shape[0] < 2 * period:
        return 0, 0
    n_periods = k.shape[0] // period
    kk = k[: n_periods * period].reshape(n_periods, period)
    oo = o[: n_periods * period].reshape(n_periods, period)
    good = (kk == kk[:, :1]).all(axis=1) & (kk[:, 0] == k[0] + np.arange(n_periods))
    good &= np.isclose(oo, oo[:1], rtol=0, atol=1e-9).all(axis=1)
    n_good = n_periods if good.all() else int(np.argmin(good))
    return n_good * period, period


def _geometric_tabulated(resp: SumExp, shift: np.ndarray, reg: RegularRegimen, k: np.ndarray, o: np.ndarray) -> np.ndarray:
    """_geometric on a rectangular block: k (K,) period indices, o (P,) offsets; returns (N, K·P).

    The shift (tlag) splits as a·τ + b: an offset is past its period's shifted dose iff o ≥ b, which
    adds one to the started-dose count. Per patient the block is then a rank-2J matrix product,
    Σ_j [cnt_j(q) ⊗ φ_j·(1-S) + cnt_j(q+1) ⊗ φ_j·S], with only (N, K) + (N, P) exponentials;
    batched matmul in row blocks that stay in cache is the fastest way numpy offers to expand it.
    """
    tau = reg.interval_h
    a, b = _split_periods(shift, tau, np)
    started = o[None, :] >= b[:, None]  # (N, P)
    u_last = o[None, :] - b[:, None] + np.where(started, 0.0, tau)  # (N, P), in [0, τ)
    q = k[None, :] - a[:, None]  # (N, K): doses started before the period's own (shifted) dose enters
    lam = resp.rate[:, :, None]  # (N, J, 1)
    phi = resp.coef[:, :, None] * np.exp(-lam * u_last[:, None, :])  # (N, J, P)
    right = np.concatenate([phi * ~started[:, None, :], phi * started[:, None, :]], axis=1)  # (N, 2J, P)
    qq = q[:, None, :]
    left = np.concatenate([_counts_table(lam, qq, reg, np), _counts_table(lam, qq + 1, reg, np)], axis=1)
    left = np.ascontiguousarray(left.transpose(0, 2, 1))  # (N, K, 2J)
    n = shift.shape[0]
    out = np.empty((n, k.shape[0], o.shape[0]))
    for r in range(0, n, _BLOCK_ROWS):
        np.matmul(left[r : r + _BLOCK_ROWS], right[r : r + _BLOCK_ROWS], out=out[r : r + _BLOCK_ROWS])
    return out.reshape(n, -1)


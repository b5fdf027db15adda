"""Batched ODE path: adaptive Runge–Kutta over patient chunks, piecewise between dose events.

The solver is pgxtwin's own batched explicit RK (``_solver``: dopri5 by default, or tsit5; other
torchdiffeq method names fall back to torchdiffeq). Patients are integrated in chunks of ``_CHUNK``;
each chunk shares one adaptive step whose error test takes the maximum over its patients and states
(an RMS norm would let one patient's error hide among many). Chunks keep arrays cache-sized and the
shared step close to what each patient needs; output times come from the dense output, so the hourly
grid never shortens a step.
Doses enter as events: IV boluses are added to the state at their time, infusions are a constant rate
on the segments they cover, and oral doses feed an analytic first-order depot — depot(t) is a sum of
decaying exponentials, so the absorbed flux ka·depot(t) is an exact forcing term and the per-patient
lag time needs no per-patient event. Segment boundaries are the times where the forcing has a kink:
IV dose times, infusion ends and the lagged oral entry times when tlag is shared (an oral dose time
itself is no kink when tlag > 0: nothing enters the body then).

Two array backends run the same code and take the same steps: torch (differentiable; used whenever a
gradient is needed) and numpy, used when none is and the model declares ``numpy_rhs`` (its right-hand
side is plain arithmetic, valid on numpy arrays too). At 10³ patients the cost is the number of array
operations per step, not flops, and numpy's lower cost per call (with one matrix–vector product per
Runge–Kutta stage, see ``_solver/base.py``) cuts the CPU time of 10³ Michaelis–Menten patients on
28 daily oral doses from 0.40 to 0.17 s on 2 cores (benchmarks/bench_simulate.py, part c).
A model with a numba-compiled right-hand side (``kernel_id``, see ``_ode_compiled.py``) runs the numpy
path compiled, segment walk and solver loop (``_ode_compiled.py``; not with ``return_amounts``, whose
elimination column the kernel does not give): the same algorithm without the per-stage array-call
overhead, which is nearly all a small batch (one patient's TDM update) costs. The 10³ Michaelis–Menten
patients above take 0.040 s compiled (bench_simulate.py part c, 73x libRoadRunner's throughput).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torchdiffeq import odeint

from pgxtwin.pk._solver import SOLVERS
from pgxtwin.pk.dosing import DoseTable, RegularRegimen, Route
from pgxtwin.pk.models.base import Model, Params

__all__ = ["OdeOptions", "integrate", "steady_state"]

Arr = Any  # torch.Tensor or np.ndarray, all of one backend within a solve


@dataclass(frozen=True, slots=True)
class OdeOptions:
    """Solver settings: method ("dopri5", "tsit5", or another torchdiffeq method) and tolerances
    (states in mg), steady-state Newton settings.

    The steady state is accepted when the Newton update is below max(ss_rtol, 10·rtol) relative (+ atol).
    """

    method: str = "dopri5"
    rtol: float = 1e-8
    atol: float = 1e-10
    ss_rtol: float = 1e-8
    ss_max_iter: int = 50


# torchdiffeq's adaptive solvers (they accept the norm and jump_t options)
_ADAPTIVE = frozenset({"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"})
# Beyond this many distinct per-patient entry times in a segment, stopping at each costs more than
# letting error control resolve the kinks.
_MAX_JUMPS = 4096
# Up to this many distinct lagged entry times per oral dose are made segment boundaries.
_LAGS_AS_CUTS = 8
# Patients per solver call. Measured on Michaelis–Menten oral (rtol 1e-6, 100k patients, 2 cores):
# larger chunks need more shared steps (the step is the smallest any patient needs) and leave the
# cache; smaller ones pay Python overhead per step. See benchmarks/bench_simulate.py.
_CHUNK = 8192


def _max_norm(x: torch.Tensor) -> torch.Tensor:
    return x.abs().max()


def _cat(xp: ModuleType, arrays: list[Arr], axis: int = 0) -> Arr:
    return torch.cat(arrays, dim=axis) if xp is torch else np.concatenate(arrays, axis=axis)


def _zeros(xp: ModuleType, *shape: int) -> Arr:
    return torch.zeros(*shape, dtype=torch.float64) if xp is torch else np.zeros(shape)


@dataclass(frozen=True, slots=True)
class _Events:
    """Dose events: times (E,) h, amounts (B, E) mg (B = 1 or N; a torch tensor, or numpy on the numpy path)."""

    times: np.ndarray
    amounts: Arr
    routes: tuple[Route, ...]
    durations: np.ndarray

    @classmethod
    def from_table(cls, table: DoseTable, scale: torch.Tensor | None) -> _Events:
        amounts = torch.as_tensor(table.amounts, dtype=torch.float64)
        if scale is not None:
            amounts = amounts * scale[:, None]
        return cls(table.times, amounts, table.routes, table.durations)

    def select(self, route: Route) -> list[int]:
        return [e for e, r in enumerate(self.routes) if r is route]


def _depot(
    xp: ModuleType, t: float, ev: _Events, oral: list[int], entry: Arr, span: tuple[np.ndarray, np.ndarray], f: Arr,
    ka: Arr, depot0: Arr, t0: float, include_t0: bool = False,
) -> Arr:
    """Depot amount (mg) at scalar time t ≥ t0: depot0 decayed to t plus the oral doses entering in
    (t0, t] — in [t0, t] with ``include_t0`` (depot0 is then the depot just before t0). ``span``: each
    oral dose's earliest and latest entry time over the patients (E_oral,). Called from one segment
    start to the next, this is O(1) per segment."""
    out = depot0 * xp.exp(-_decay(xp, ka * (t - t0))) if t != t0 else depot0
    lo, hi = span
    # doses some patient takes in the window (not in depot0 already, not still to come for all)
    entering = np.flatnonzero(((hi >= t0) if include_t0 else (hi > t0)) & (lo <= t))
    for i in entering.tolist():
        col = entry[:, i]
        lag = t - col
        term = xp.where(lag >= 0, f * ev.amounts[:, oral[i]] * xp.exp(-_decay(xp, ka * lag)), 0.0)
        if include_t0 and lo[i] < t0 or not include_t0 and lo[i] <= t0:
            term = xp.where(col >= t0 if include_t0 else col > t0, term, 0.0)
        out = out + term
    return out


def _decay(xp: ModuleType, x: Arr) -> Arr:
    """Exponent for exp(-x), x ≥ 0, capped at 700: long-past doses give e^-700 instead of underflowing
    through subnormals (exp of arguments below about -708 is ~100x slower on x86)."""
    return xp.clip(x, 0.0, 700.0)


def _numpy_path(model: Model, opts: OdeOptions, tensors: list[object]) -> bool:
    """Whether to integrate in numpy: no gradient needed, a native solver, a numpy-capable model, CPU data."""
    if not model.numpy_rhs or opts.method not in SOLVERS:
        return False
    ts = [v for v in tensors if isinstance(v, torch.Tensor)]
    return not any(v.requires_grad for v in ts) and all(v.device.type == "cpu" for v in ts)


def _to_numpy(v: Arr | None) -> np.ndarray | None:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v


def integrate(
    model: Model,
    p: Params,
    n: int,
    ev: _Events,
    times: np.ndarray,
    opts: OdeOptions,
    x0: torch.Tensor | None = None,
    depot0: torch.Tensor | None = None,
    t_init: float | None = None,
    track_elimination: bool = False,
    block: int = 1,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """States at ``times`` (T, N, S); with ``track_elimination`` also an eliminated-amount column and the depot (T, N).

    ``x0``/``depot0`` are the state and oral-depot amount at ``t_init`` (default: model baseline, empty
    depot, at the earliest of the first time and first dose). Values at a dose time include that dose.
    Patients are solved in chunks of ``chunk`` (default ``_CHUNK``) rounded to a multiple of ``block``:
    each run of ``block`` consecutive patients is guaranteed the same solver steps.
    """
    if t_init is None:
        t_init = float(min(times[0], ev.times[0])) if len(ev.times) else float(times[0])
    inputs = [*p.values(), ev.amounts, x0, depot0]
    if _numpy_path(model, opts, inputs):
        arrays = {k: _to_numpy(v) for k, v in p.items()}
        sub = dataclasses.replace(ev, amounts=_to_numpy(ev.amounts))
        out, dep = _integrate_chunks(
            _Run(np, model, times, opts, t_init, track_elimination), arrays, n, sub, _to_numpy(x0), _to_numpy(depot0),
            block, chunk,
        )
        return torch.from_numpy(out), None if dep is None else torch.from_numpy(dep)
    run = _Run(torch, model, times, opts, t_init, track_elimination)
    if torch.is_grad_enabled() and not any(isinstance(v, torch.Tensor) and v.requires_grad for v in inputs):
        with torch.no_grad():  # nothing to differentiate: skip autograd's per-op bookkeeping (~25% of a step at 10^3 patients)
            return _integrate_chunks(run, p, n, ev, x0, depot0, block, chunk)
    return _integrate_chunks(run, p, n, ev, x0, depot0, block, chunk)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every chunk of one integration shares: array namespace, model, output grid, options."""

    xp: ModuleType
    model: Model
    times: np.ndarray
    opts: OdeOptions
    t_init: float
    track_elimination: bool


def _integrate_chunks(
    run: _Run, p: Params, n: int, ev: _Events, x0: Arr | None, depot0: Arr | None, block: int, chunk: int | None
) -> tuple[Arr, Arr | None]:
    xp, model, track_elimination = run.xp, run.model, run.track_elimination
    size = max(block, (chunk or _CHUNK) // block * block)
    if n <= size:
        return _integrate_chunk(run, p, n, ev, x0, depot0)
    # Group patients with similar absorption rates: a chunk's shared step follows its fastest patient,
    # so sorting by ka (the fastest rate of most oral PK) saves ~15% of the steps at 10^5 patients.
    order = None
    if block == 1 and Route.ORAL in ev.routes:
        ka = model.oral(p)[0]
        order = torch.argsort(ka.detach()) if xp is torch else np.argsort(ka, kind="stable")
    states: list[Arr] = []
    depots: list[Arr] = []
    for start in range(0, n, size):
        idx: slice | Arr = slice(start, min(start + size, n))
        if order is not None:
            idx = order[idx]
        m = min(start + size, n) - start
        sub = _Events(ev.times, ev.amounts if ev.amounts.shape[0] == 1 else ev.amounts[idx], ev.routes, ev.durations)
        s, d = _integrate_chunk(
            run, {k: v[idx] for k, v in p.items()}, m, sub,
            None if x0 is None else x0[idx], None if depot0 is None else depot0[idx],
        )
        states.append(s)
        if d is not None:
            depots.append(d)
    out = _cat(xp, states, axis=1)
    dep = _cat(xp, depots, axis=1) if track_elimination else None
    if order is not None:
        inv = xp.argsort(order)
        out = out[:, inv]
        dep = None if dep is None else dep[:, inv]
    return out, dep


def _solve(
    rhs, y0: Arr, a: float, b: float, inner: np.ndarray, jumps: np.ndarray | None, opts: OdeOptions
) -> tuple[Arr, Arr]:
    """States at ``inner`` (inside (a, b)) and at b; ``jumps``: kinks of the forcing the steps must end at."""
    solver = SOLVERS.get(opts.method)
    if solver is not None:
        sol = solver().solve(rhs, y0, a, b, inner, rtol=opts.rtol, atol=opts.atol, stops=() if jumps is None else jumps)
        return sol.ys, sol.y1
    grid = torch.as_tensor(np.concatenate([[a], inner, [b]]), dtype=y0.dtype)
    options: dict[str, object] = {"norm": _max_norm}
    if jumps is not None and opts.method in _ADAPTIVE:
        options["jump_t"] = torch.as_tensor(jumps, dtype=y0.dtype)
    sol = odeint(rhs, y0, grid, method=opts.method, rtol=opts.rtol, atol=opts.atol, options=options)
    return sol[1:-1], sol[-1]


def _integrate_chunk(
    run: _Run, p: Params, n: int, ev: _Events, x0: Arr | None, depot0: Arr | None
) -> tuple[Arr, Arr | None]:
    xp, model, times, opts, t_init, track_elimination = (
        run.xp, run.model, run.times, run.opts, run.t_init, run.track_elimination
    )
    oral = ev.select(Route.ORAL)
    if oral:
        ka, f, tlag = model.oral(p)
        dose_times = torch.as_tensor(ev.times[oral], dtype=torch.float64) if xp is torch else ev.times[oral]
        entry = dose_times[None, :] + tlag[:, None]  # (N, E_oral)
    else:
        ka = f = _zeros(xp, n)
        entry = _zeros(xp, n, 0)
    x = x0
    if x is None:
        x = model.initial_state(p, n)  # a tensor by the Model contract
        x = x if xp is torch else x.numpy()
    if track_elimination:
        x = _cat(xp, [x, _zeros(xp, n, 1)], axis=1)
    depot0 = _zeros(xp, n) if depot0 is None else depot0

    # segment boundaries: the kinks of the forcing (see the module docstring)
    infusions = ev.select(Route.IV_INFUSION)
    cuts = {float(t) for t, r in zip(ev.times, ev.routes) if r is not Route.ORAL}
    cuts |= {float(ev.times[e] + ev.durations[e]) for e in infusions}
    entry_np = _to_numpy(entry)
    span = (entry_np.min(axis=0), entry_np.max(axis=0)) if n else (np.zeros(len(oral)), np.zeros(len(oral)))
    distinct_entries = np.unique(entry_np)
    if distinct_entries.size <= _LAGS_AS_CUTS * max(len(oral), 1):
        # few distinct lag times: every lagged entry becomes a boundary, so forcing is smooth per segment
        cuts |= set(distinct_entries.tolist())
    t_end = float(times[-1])
    bounds = sorted({t_init, t_end} | {c for c in cuts if t_init < c < t_end})
    n_core = len(model.state_names)
    inp = model.input_state
    onehot = _zeros(xp, x.shape[1])
    onehot[inp] = 1.0

    boluses = ev.select(Route.IV_BOLUS)
    if xp is np and model.kernel_id is not None and opts.method in SOLVERS and not track_elimination:
        # the whole walk below, compiled (the kernel gives no elimination column); imported here so that
        # numba is loaded only by a process that runs a compiled model
        from pgxtwin.pk._ode_compiled import integrate_history  # noqa: PLC0415

        durations = ev.durations[infusions]
        states = integrate_history(
            SOLVERS[opts.method], model.kernel_id, np.stack([np.broadcast_to(p[s.name], (n,)) for s in model.parameters]),
            x.T, depot0, t_init, np.asarray(bounds), times, ka=np.broadcast_to(ka, (n,)), entry=entry_np,
            amount=np.broadcast_to(f[:, None] * ev.amounts[:, oral], (n, len(oral))),
            bolus_t=ev.times[boluses], bolus_amount=np.broadcast_to(ev.amounts[:, boluses], (n, len(boluses))),
            infusions=(ev.times[infusions], ev.times[infusions] + durations,
                       np.broadcast_to(ev.amounts[:, infusions] / durations, (n, len(infusions)))),
            input_state=model.input_state, oral=bool(oral), rtol=opts.rtol, atol=opts.atol, max_jumps=_MAX_JUMPS,
        )
        return states.transpose(0, 2, 1), None

    out_x: list[Arr] = []
    out_depot: list[Arr] = []

    def record(sel: np.ndarray, states: Arr) -> None:
        out_x.append(states)
        if track_elimination:
            out_depot.append(xp.stack([_depot(xp, float(t), ev, oral, entry, span, f, ka, dep_a, t_a) for t in sel]))

    dep_a, t_a = depot0, t_init  # analytic depot at the current segment start
    for i, a in enumerate(bounds):
        dep_a, t_a = _depot(xp, a, ev, oral, entry, span, f, ka, dep_a, t_a, include_t0=i == 0), a
        for e in boluses:  # boluses given at a count from a on (right-continuous)
            if ev.times[e] == a:
                x = x + ev.amounts[:, e][:, None] * onehot
        if i == len(bounds) - 1:
            if times[-1] == a:
                record(times[-1:], x[None])
            break
        b = bounds[i + 1]
        obs = times[(times >= a) & (times < b)]
        if obs.size and obs[0] == a:
            record(obs[:1], x[None])
        rate = _zeros(xp, n)
        for e in infusions:
            if ev.times[e] <= a and ev.times[e] + ev.durations[e] >= b:
                rate = rate + ev.amounts[:, e] / ev.durations[e]
        # oral doses entering strictly inside (a, b) for some patient (only with per-patient lag times)
        pending = np.flatnonzero((span[1] > a) & (span[0] < b)).tolist()
        pending = [k for k in pending if ((entry_np[:, k] > a) & (entry_np[:, k] < b)).any()]

        infusing = any(ev.times[e] <= a and ev.times[e] + ev.durations[e] >= b for e in infusions)

        def rhs(t: float, y: Arr, rate: Arr = rate, pending: list[int] = pending, infusing: bool = infusing) -> Arr:
            # y is state-major (S, N): the model sees the (N, S) view, whose columns are contiguous
            core = y[:n_core].T
            dy = [model.rhs(core, p).T]
            if track_elimination:
                dy.append(model.elimination_rate(core, p)[None])
            u = rate if infusing else None
            if oral:
                absorbed = ka * y[-1]
                dy.append(-absorbed[None])
                for k in pending:
                    lag = t - entry[:, k]
                    absorbed = absorbed + ka * xp.where(lag >= 0, f * ev.amounts[:, oral[k]] * xp.exp(-_decay(xp, ka * lag)), 0.0)
                u = absorbed if u is None else u + absorbed
            out = _cat(xp, dy)
            if u is not None:
                row = out[inp]
                row += u  # inputs enter the input state's row (in place on a fresh array)
            return out

        inner = obs[obs > a]
        # The depot entered by time a rides along as a state (dz/dt = -ka·z) although it is known in
        # closed form: that puts the absorption transient under the solver's error control, which an
        # explicit forcing term escapes (measured ~100x larger errors at the same rtol; Michaelis–Menten
        # oral, 10³ patients, rtol 1e-6: 7x larger errors, 30% fewer steps, no faster for the exp per stage).
        y0 = _cat(xp, [x.T, dep_a[None]]) if oral else x.T  # state-major (S, N) for the solver
        y0 = y0.contiguous() if xp is torch else np.ascontiguousarray(y0)
        jumps = None
        if pending:
            # per-patient lagged entries are kinks of the forcing: make the stepper stop at each one
            jumps = np.unique(entry_np[:, pending])
            jumps = jumps[(jumps > a) & (jumps < b)]
            if jumps.size > _MAX_JUMPS:
                jumps = None
        ys, y1 = _solve(rhs, y0, a, b, inner, jumps, opts)
        ys, x = ys.swapaxes(1, 2), y1.T
        if oral:
            ys, x = ys[..., :-1], x[..., :-1]
        if inner.size:
            record(inner, ys)
    states = _cat(xp, out_x)
    return states, (_cat(xp, out_depot) if track_elimination else None)


def steady_state(
    model: Model, p: Params, n: int, reg: RegularRegimen, amount: torch.Tensor, opts: OdeOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """State and oral-depot amount just before a dose of a regimen repeated forever, (N, S) and (N,).

    The depot's steady state is analytic (geometric series of first-order decays). The other states
    solve x = Φ(x), Φ = one dosing interval, by Newton's method with a finite-difference Jacobian:
    the S+1 perturbed copies of the batch share one solver call (same steps, so for linear models the
    Jacobian is exact and one step lands on the fixed point), where plain repetition of intervals —
    "enough prior doses" — would need ~ half-lives/τ · log(1/tol) solver calls.
    """
    tau = reg.interval_h
    dtype = torch.float64
    depot_ss = torch.zeros(n, dtype=dtype)
    if reg.route is Route.ORAL:
        ka, f, tlag = model.oral(p)
        if bool((tlag >= tau).any()):
            raise ValueError(f"steady state with a lag time ≥ the dosing interval ({tau} h) is not supported")
        depot_ss = f * amount * torch.exp(-ka * (tau - tlag)) / -torch.expm1(-ka * tau)
    x = model.initial_state(p, n)
    s = x.shape[1]
    copies = s + 1
    # patient-major copies (patient i's copies are rows i·(S+1) ...): `block` keeps them in one chunk
    big_p = {k: v.expand(n).repeat_interleave(copies) for k, v in p.items()}
    interval = _Events(np.array([0.0]), amount.expand(n).repeat_interleave(copies)[:, None], (reg.route,), np.array([reg.duration_h]))
    eye = torch.eye(s, dtype=dtype)
    tol = max(opts.ss_rtol, 10 * opts.rtol)
    for _ in range(opts.ss_max_iter):
        h = 1e-6 * (x.detach().abs() + 1.0)  # (N, S)
        xs = torch.stack([x] + [x + h[:, i : i + 1] * eye[i] for i in range(s)], dim=1).reshape(n * copies, s)
        ys = integrate(
            model, big_p, n * copies, interval, np.array([tau]), opts, x0=xs, depot0=depot_ss.repeat_interleave(copies),
            t_init=0.0, block=copies,
        )[0][-1].reshape(n, copies, s)
        y0 = ys[:, 0]
        jac = torch.stack([(ys[:, i + 1] - y0) / h[:, i : i + 1] for i in range(s)], dim=2)  # (N, S, S)
        dx = torch.linalg.solve(jac - eye, (x - y0)[:, :, None])[:, :, 0]
        if not bool(torch.isfinite(dx).all()):
            break
        if float((dx.detach().abs() / (opts.atol + tol * x.detach().abs())).max()) <= 1.0:
            return x + dx, depot_ss
        x = (x + dx).clamp(min=0.0)  # amounts, responses and transit fractions are non-negative
    raise RuntimeError(
        f"no steady state found in {opts.ss_max_iter} Newton steps for dosing every {tau} h "
        "(e.g. saturable elimination slower than the dosing rate)"
    )

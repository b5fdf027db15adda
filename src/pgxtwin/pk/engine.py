"""Public entry point: simulate N patients (one parameter set each) under a dosing history.

``simulate(model, params, dosing, times_h)`` returns concentrations per analyte, shape (N, T), mg/L.
Linear models use the closed form (numpy for numpy inputs; torch, differentiable, for tensor inputs);
everything else — or ``method="ode"`` — uses the batched adaptive Runge–Kutta solver (``_solver``). ``simulate_chunks`` bounds
memory for very large populations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pgxtwin.pk._closed_form import closed_form
from pgxtwin.pk._ode import OdeOptions, _Events, integrate, steady_state
from pgxtwin.pk.dosing import DoseTable, DosingHistory, RegularRegimen
from pgxtwin.pk.models.base import Array, Model, ParamValues

__all__ = ["OdeOptions", "SimulationResult", "simulate", "simulate_chunks"]

Method = Literal["auto", "closed_form", "ode"]


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Simulated curves. ``concentrations[analyte]`` is (N, T) in mg/L (PD outputs in their own units).

    ``amounts`` (ODE path with ``return_amounts=True``) maps each state name, plus "depot" (oral drug
    not yet absorbed, after F) and "eliminated", to (N, T) mg — for mass-balance checks.
    """

    times_h: Array
    concentrations: dict[str, Array]
    method: Literal["closed_form", "ode"]
    amounts: dict[str, Array] | None = None

    def __getitem__(self, analyte: str) -> Array:
        return self.concentrations[analyte]

    @property
    def n_patients(self) -> int:
        return next(iter(self.concentrations.values())).shape[0]


def simulate(
    model: Model,
    params: ParamValues,
    dosing: DosingHistory | Sequence[DosingHistory],
    times_h: Array | Sequence[float],
    *,
    method: Method = "auto",
    amount_scale: Array | None = None,
    ode: OdeOptions = OdeOptions(),
    return_amounts: bool = False,
) -> SimulationResult:
    """Simulate N patients.

    Args:
        model: model structure, e.g. ``OneCompartment()``.
        params: parameter name -> (N,) array or scalar (see ``model.parameters`` for names and units).
            Torch tensors select the differentiable torch path and torch outputs.
        dosing: one history shared by all patients, or one history per patient.
        times_h: strictly increasing output times (h).
        method: "closed_form" (linear models only), "ode", or "auto" (closed form where available).
        amount_scale: optional (N,) factor on every dose amount (e.g. body weight for mg/kg doses).
        ode: solver settings for the ODE path.
        return_amounts: also return compartment amounts (forces the ODE path).
    """
    use_torch = any(isinstance(v, torch.Tensor) for v in [*params.values(), amount_scale, times_h])
    times = np.asarray(times_h.detach().cpu().numpy() if isinstance(times_h, torch.Tensor) else times_h, dtype=float)
    if times.ndim != 1 or times.size == 0 or not np.isfinite(times).all():
        raise ValueError("times_h must be a non-empty 1-D array of finite hours")
    if (np.diff(times) <= 0).any():
        raise ValueError("times_h must be strictly increasing")
    if method == "auto":
        method = "closed_form" if model.has_closed_form and not return_amounts else "ode"
    if method == "closed_form" and not model.has_closed_form:
        raise ValueError(f"{type(model).__name__} has no closed form; use method='ode'")
    if method == "closed_form" and return_amounts:
        raise ValueError("return_amounts needs method='ode'")
    xp = torch if (use_torch or method == "ode") else np
    p, n = model.prepare(params, xp)
    scale = _scale(amount_scale, n, xp)
    table = DoseTable.build(dosing, n)
    unsupported = set(table.routes) - model.routes
    if unsupported:
        raise ValueError(f"{type(model).__name__} does not support route(s) {sorted(r.value for r in unsupported)}")
    regimen = dosing.regimen if isinstance(dosing, DosingHistory) else None

    if method == "closed_form":
        t = torch.as_tensor(times, dtype=torch.float64) if xp is torch else times
        conc = closed_form(model, p, n, table, regimen, t, scale, xp)
        return SimulationResult(t, conc, "closed_form")

    ev = _Events.from_table(table, scale)
    x0 = depot0 = t_init = None
    if regimen is not None and regimen.steady_state:
        amount = regimen.amount_mg * (scale if scale is not None else torch.ones(n, dtype=torch.float64))
        x0, depot0 = steady_state(model, p, n, regimen, amount, ode)
        # times before the first listed dose see the periodic state: replay whole prior intervals
        k = max(0, math.ceil((regimen.start_h - times[0]) / regimen.interval_h))
        t_init = regimen.start_h - k * regimen.interval_h
        if k:
            ev = _prepend(ev, regimen, k, scale)
    states, depot = integrate(model, p, n, ev, times, ode, x0=x0, depot0=depot0, t_init=t_init, track_elimination=return_amounts)
    conc = {k: v.transpose(0, 1) for k, v in model.observe(states[..., : len(model.state_names)], p).items()}
    amounts = None
    if return_amounts:
        amounts = {name: states[..., i].transpose(0, 1) for i, name in enumerate(model.state_names)}
        amounts |= {"eliminated": states[..., -1].transpose(0, 1), "depot": depot.transpose(0, 1)}
    t = torch.as_tensor(times, dtype=torch.float64)
    if not use_torch:
        conc = {k: v.detach().numpy() for k, v in conc.items()}
        amounts = amounts and {k: v.detach().numpy() for k, v in amounts.items()}
        t = times
    return SimulationResult(t, conc, "ode", amounts)


def _scale(amount_scale: Array | None, n: int, xp: object) -> Array | None:
    if amount_scale is None:
        return None
    if xp is torch:
        s = torch.as_tensor(amount_scale, dtype=torch.float64).reshape(-1)
        check = s.detach().numpy()
    else:
        s = np.asarray(amount_scale, dtype=float).reshape(-1)
        check = s
    if s.shape[0] == 1:
        s = s.expand(n) if xp is torch else np.broadcast_to(s, (n,))
    if s.shape[0] != n:
        raise ValueError(f"amount_scale has {s.shape[0]} entries for {n} patients")
    if not np.isfinite(check).all() or (check < 0).any():
        raise ValueError("amount_scale must be finite and non-negative")
    return s


def _prepend(ev: _Events, reg: RegularRegimen, k: int, scale: Array | None) -> _Events:
    """Replay k steady-state doses in the k intervals before the regimen's first listed dose."""
    rows = ev.amounts.shape[0] if scale is None else scale.shape[0]
    amounts = torch.full((rows, k), reg.amount_mg, dtype=torch.float64)
    if scale is not None:
        amounts = amounts * scale[:, None]
    return _Events(
        np.concatenate([reg.start_h - reg.interval_h * np.arange(k, 0, -1), ev.times]),
        torch.cat([amounts, ev.amounts.expand(rows, -1)], dim=1),
        (reg.route,) * k + ev.routes,
        np.concatenate([np.full(k, reg.duration_h), ev.durations]),
    )


def simulate_chunks(
    model: Model,
    params: ParamValues,
    dosing: DosingHistory | Sequence[DosingHistory],
    times_h: Array | Sequence[float],
    *,
    chunk_size: int = 50_000,
    amount_scale: Array | None = None,
    **kwargs: object,
) -> Iterator[tuple[slice, SimulationResult]]:
    """Yield ``(patient_slice, result)`` for consecutive chunks of at most ``chunk_size`` patients.

    Memory stays O(chunk_size × T): reduce each chunk (e.g. with :mod:`pgxtwin.pk.metrics`) before the
    next is computed. Scalars in ``params`` are shared by all chunks.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    sizes = {len(v) for v in params.values() if np.ndim(v) > 0 and len(v) != 1}
    if len(sizes) > 1:
        raise ValueError(f"parameter arrays disagree on the number of patients: sizes {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    per_patient_dosing = not isinstance(dosing, DosingHistory)
    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        chunk = {k: (v[sl] if np.ndim(v) > 0 and len(v) == n else v) for k, v in params.items()}
        scale = amount_scale[sl] if amount_scale is not None and np.ndim(amount_scale) > 0 else amount_scale
        yield sl, simulate(model, chunk, dosing[sl] if per_patient_dosing else dosing, times_h, amount_scale=scale, **kwargs)


"""Batched ODE path: mass balance, Michaelis–Menten limits and steady state, PD structures, gradients."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from pgxtwin.pk import (
    DosingHistory,
    IndirectResponse,
    MichaelisMenten,
    OdeOptions,
    OneCompartment,
    ParentMetabolite,
    TwoCompartment,
    WarfarinINR,
    simulate,
)

from .conftest import METABOLITE, ONE_CPT, TIGHT, TWO_CPT

MM = {"vmax": np.array([30.0, 12.0]), "km": np.array([4.0, 10.0]), "v": np.array([50.0, 40.0]), "ka": 1.0, "f": 0.9}


def _mass_balance(model, params, dosing, times, bioavailable: float) -> None:
    res = simulate(model, params, dosing, times, return_amounts=True, ode=TIGHT)
    total = sum(res.amounts.values())
    np.testing.assert_allclose(total, np.broadcast_to(bioavailable, total.shape), rtol=1e-8)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (OneCompartment(), ONE_CPT),
        (TwoCompartment(), TWO_CPT),
        (ParentMetabolite(TwoCompartment()), TWO_CPT | METABOLITE),
        (MichaelisMenten(), MM),
    ],
)
def test_mass_balance_oral(model, params) -> None:
    times = np.linspace(0, 60, 31)
    doses = {0.0: 100.0, 10.0: 40.0, 30.0: 60.0}
    dosing = DosingHistory.from_records(list(doses), list(doses.values()))
    f = params["f"] if np.ndim(params["f"]) else np.full(2, params["f"])
    tlag = params.get("tlag", 0.0)
    entered = sum(a * (times >= t + tlag) for t, a in doses.items())  # doses reach the depot after tlag
    _mass_balance(model, params, dosing, times, np.asarray(f)[:, None] * entered[None, :])


def test_mass_balance_iv_bolus_michaelis_menten() -> None:
    times = np.linspace(0, 48, 25)
    _mass_balance(MichaelisMenten(), MM, DosingHistory.from_records([0.0], [500.0], route="iv_bolus"), times, 500.0)


def test_michaelis_menten_is_linear_when_km_dominates() -> None:
    km = 1e6
    cl = np.array([5.0, 2.0])
    mm = {"vmax": cl * km, "km": km, "v": np.array([50.0, 30.0]), "ka": 1.3}
    lin = {"cl": cl, "v": mm["v"], "ka": 1.3}
    times = np.linspace(0, 72, 73)
    dosing = DosingHistory.regular(100, 12, 6)
    a = simulate(MichaelisMenten(), mm, dosing, times, ode=TIGHT)["parent"]
    b = simulate(OneCompartment(), lin, dosing, times)["parent"]
    np.testing.assert_allclose(a, b, rtol=1e-5)  # C/Km ≤ ~1e-6: nonlinearity is below that


def test_michaelis_menten_saturates() -> None:
    # doubling the dose more than doubles the exposure when elimination saturates
    times = np.linspace(0, 96, 97)
    lo = simulate(MichaelisMenten(), MM, DosingHistory.regular(100, 12, 8), times)["parent"].sum(axis=1)
    hi = simulate(MichaelisMenten(), MM, DosingHistory.regular(200, 12, 8), times)["parent"].sum(axis=1)
    assert (hi > 2.05 * lo).all()


def test_michaelis_menten_steady_state_equals_many_doses() -> None:
    tau = 12.0
    params = MM | {"vmax": np.array([30.0, 25.0]), "km": np.array([4.0, 6.0])}
    opts = OdeOptions(rtol=1e-9, atol=1e-10)
    times = np.linspace(0, tau, 7)
    ss = simulate(MichaelisMenten(), params, DosingHistory.regular(100, tau, 1, steady_state=True), times, ode=opts)["parent"]
    n_prior = 40  # ≥ 30 effective half-lives for both patients
    long = DosingHistory.regular(100, tau, n_prior + 1)
    many = simulate(MichaelisMenten(), params, long, times + n_prior * tau, ode=opts)["parent"]
    np.testing.assert_allclose(ss, many, rtol=1e-6)
    np.testing.assert_allclose(ss[:, 0], ss[:, -1], rtol=1e-7)  # periodic: C(τ⁻) = C(0)


def test_no_steady_state_when_dosing_exceeds_vmax() -> None:
    params = {"vmax": 5.0, "km": 2.0, "v": 50.0, "ka": 1.0}
    with pytest.raises(RuntimeError, match="no steady state"):
        simulate(MichaelisMenten(), params, DosingHistory.regular(100, 12, 1, steady_state=True), np.array([0.0, 1.0]),
                 ode=OdeOptions(rtol=1e-6, atol=1e-8, ss_max_iter=20))


def test_ode_gradients_flow_to_parameters() -> None:
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in {"vmax": [30.0], "km": [4.0], "v": [50.0], "ka": [1.0]}.items()}
    times = np.linspace(0, 24, 9)
    dosing = DosingHistory.regular(100, 12, 2)
    opts = OdeOptions(rtol=1e-10, atol=1e-12)
    out = simulate(MichaelisMenten(), tp, dosing, times, ode=opts)["parent"].sum()
    out.backward()
    h = 1e-5
    base = {k: v.detach().numpy() for k, v in tp.items()}
    up = simulate(MichaelisMenten(), base | {"km": base["km"] + h}, dosing, times, ode=opts)["parent"].sum()
    dn = simulate(MichaelisMenten(), base | {"km": base["km"] - h}, dosing, times, ode=opts)["parent"].sum()
    np.testing.assert_allclose(tp["km"].grad.numpy(), (up - dn) / (2 * h), rtol=1e-4)
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in tp.values())


PD_PK = {"cl": 0.2, "v": 10.0, "ka": 1.0}


@pytest.mark.parametrize("kind", ["inhibit_production", "inhibit_loss", "stimulate_production", "stimulate_loss"])
def test_indirect_response_direction_and_baseline(kind: str) -> None:
    model = IndirectResponse(OneCompartment(), kind)
    pd = {"kin": 2.0, "kout": 0.1, "ec50": 1.0, ("imax" if kind.startswith("inhibit") else "emax"): 0.8}
    times = np.linspace(0, 96, 49)
    dosing = DosingHistory.regular(np.float64(10.0), 24, 4)
    r = simulate(model, PD_PK | pd, dosing, times)["response"][0]
    assert r[0] == pytest.approx(20.0)  # baseline kin/kout
    increases = kind in ("inhibit_loss", "stimulate_production")
    assert (r[-1] > 20.5) if increases else (r[-1] < 19.5)
    no_drug = simulate(model, PD_PK | pd, DosingHistory.from_records([0.0], [0.0]), times)["response"]
    np.testing.assert_allclose(no_drug, 20.0, rtol=1e-10)


def test_warfarin_inr_rises_with_delay_and_returns_to_baseline() -> None:
    model = WarfarinINR(OneCompartment())
    pd = {"imax": 1.0, "ec50": 0.5, "hill": 1.0, "mtt1": 12.0, "mtt2": 120.0, "base_inr": 1.0, "inr_max": 20.0, "lam": 3.6}
    times = np.linspace(0, 24 * 40, 161)
    inr = simulate(model, PD_PK | pd, DosingHistory.regular(5.0, 24, 10), times)["inr"][0]
    assert inr[0] == pytest.approx(1.0)
    assert inr[1] < inr[24] and inr.max() > 1.5  # delayed rise
    assert inr[-1] < inr.max()  # washout after the last dose


# ------------------------------------------------------------------ against an independent tight solve (scipy)


def _mm_reference(p: dict, doses: list[tuple[float, float]], route: str, times: np.ndarray, duration: float) -> np.ndarray:
    """Michaelis–Menten concentrations (mg/L) per patient by scipy's DOP853 at rtol = atol = 1e-12, restarted
    at every event; the depot is a state."""
    from scipy.integrate import solve_ivp

    out = np.empty((len(p["v"]), times.size))
    for i in range(len(p["v"])):
        ka, f, tlag, v, vmax, km = (p[k][i] for k in ("ka", "f", "tlag", "v", "vmax", "km"))
        lag = tlag if route == "oral" else 0.0
        events = {t + lag for t, _ in doses} | ({t + duration for t, _ in doses} if route == "iv_infusion" else set())
        bounds = sorted({times[0], times[-1]} | {e for e in events if times[0] < e < times[-1]})

        def rhs(t: float, y: np.ndarray, ka=ka, v=v, vmax=vmax, km=km) -> list[float]:
            rate = sum(a / duration for s, a in doses if route == "iv_infusion" and s <= t < s + duration)
            return [-ka * y[0], ka * y[0] + rate - vmax * y[1] / v / (km + y[1] / v)]

        y = np.zeros(2)
        for a, b in zip(bounds[:-1], bounds[1:]):
            for s, amount in doses:
                if route == "oral" and s + tlag == a:
                    y[0] += f * amount
                if route == "iv_bolus" and s == a:
                    y[1] += amount
            last = b == times[-1]
            sel = (times >= a) & ((times <= b) if last else (times < b))
            t_eval = times[sel] if last else np.append(times[sel], b)
            sol = solve_ivp(rhs, (a, b), y, t_eval=t_eval, rtol=1e-12, atol=1e-12, method="DOP853", first_step=1e-6)
            out[i, sel] = sol.y[1, : sel.sum()] / v
            y = sol.y[:, -1].copy()
    return out


MM3 = {"vmax": np.array([30.0, 12.0, 45.0]), "km": np.array([4.0, 10.0, 2.0]), "v": np.array([50.0, 40.0, 70.0]),
       "ka": np.array([1.0, 0.4, 2.5]), "f": np.array([0.9, 1.0, 0.7]), "tlag": np.array([0.5, 0.5, 0.5])}
MM_DOSES = [(0.0, 300.0), (12.0, 200.0), (24.0, 400.0), (36.0, 200.0)]  # saturating: C up to ~10 Km


@pytest.mark.parametrize(
    ("route", "tlag", "duration"),
    [("oral", None, 0.0), ("oral", np.array([0.3, 0.75, 1.1]), 0.0), ("iv_bolus", None, 0.0), ("iv_infusion", None, 2.0)],
)
def test_michaelis_menten_matches_scipy_tight_solve(route: str, tlag: np.ndarray | None, duration: float) -> None:
    params = MM3 if tlag is None else MM3 | {"tlag": tlag}  # per-patient lag: entries inside segments
    times = np.linspace(0.0, 72.0, 145)
    dosing = DosingHistory.from_records([t for t, _ in MM_DOSES], [a for _, a in MM_DOSES], route=route, duration_h=duration)
    ref = _mm_reference(params, MM_DOSES, route, times, duration)
    tight = simulate(MichaelisMenten(), params, dosing, times, ode=TIGHT)["parent"]
    assert np.abs(tight - ref).max() <= 1e-8 * ref.max()  # measured ≤ 3e-10
    bench = simulate(MichaelisMenten(), params, dosing, times, ode=OdeOptions(rtol=1e-6, atol=1e-4))["parent"]
    assert np.abs(bench - ref).max() <= 1e-6 * ref.max()  # benchmark settings; measured ≤ 1.1e-7
    # the torch path (taken when a gradient is needed) takes the same steps as the numpy one
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    grad_path = simulate(MichaelisMenten(), tp, dosing, times, ode=TIGHT)["parent"]
    assert grad_path.requires_grad
    np.testing.assert_allclose(grad_path.detach().numpy(), tight, rtol=0, atol=1e-10 * ref.max())


def test_michaelis_menten_per_patient_lags_inside_segments_match_scipy() -> None:
    # 12 patients with distinct lag times and 4 doses: 48 entries, more than _ode._LAGS_AS_CUTS per dose, so
    # they fall inside segments as forcing jumps the steps stop at (this hung both loops before stage times
    # at a stop took the forcing's left limit: a step ending at an entry saw the entering dose)
    rng = np.random.default_rng(7)
    n = 12
    params = {k: np.resize(v, n) for k, v in MM3.items()} | {"tlag": rng.uniform(0.1, 2.0, n)}
    times = np.linspace(0.0, 48.0, 97)
    dosing = DosingHistory.from_records([t for t, _ in MM_DOSES], [a for _, a in MM_DOSES], route="oral")
    ref = _mm_reference(params, MM_DOSES, "oral", times, 0.0)
    tight = simulate(MichaelisMenten(), params, dosing, times, ode=TIGHT)["parent"]
    assert np.abs(tight - ref).max() <= 1e-8 * ref.max()
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    grad_path = simulate(MichaelisMenten(), tp, dosing, times, ode=TIGHT)["parent"]
    np.testing.assert_allclose(grad_path.detach().numpy(), ref, rtol=0, atol=1e-8 * ref.max())


def test_numpy_path_keeps_amounts_and_steady_state_of_the_torch_path() -> None:
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in MM3.items()}
    times = np.linspace(0.0, 24.0, 25)
    ss = DosingHistory.regular(100.0, 12.0, 2, steady_state=True)
    a = simulate(MichaelisMenten(), MM3, ss, times, ode=TIGHT, return_amounts=True)
    b = simulate(MichaelisMenten(), tp, ss, times, ode=TIGHT, return_amounts=True)
    for name in ("central", "depot", "eliminated"):
        np.testing.assert_allclose(a.amounts[name], b.amounts[name].detach().numpy(), rtol=1e-9, atol=1e-9)


def test_compiled_path_loads_from_numba_cache_in_a_new_process(tmp_path) -> None:
    """The compiled walk is compiled once, then loaded in every later process (a kernel passed as a
    function value was compiled anew in each: ~14 s before the first simulation of every CLI call)."""
    code = (
        "import numpy as np\n"
        "from pgxtwin.pk import DosingHistory, MichaelisMenten, simulate\n"
        "c = simulate(MichaelisMenten(), {'vmax': 20.0, 'km': 5.0, 'v': 70.0, 'ka': 0.5}, DosingHistory.regular(100.0, 8.0, 3),"
        " np.array([1.0, 10.0, 20.0]))['parent']\n"
        "print(float(c[0, -1]))\n"
    )
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1"}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True) for _ in range(2)]
    first, second = (r.stdout + r.stderr for r in runs)
    assert re.search(r"data saved to .*_ode_compiled\._walk", first)
    assert re.search(r"data loaded from .*_ode_compiled\._walk", second) and "data saved" not in second
    assert runs[0].stdout.splitlines()[-1] == runs[1].stdout.splitlines()[-1]  # same result

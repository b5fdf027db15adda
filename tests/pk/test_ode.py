"""Batched ODE path: mass balance, Michaelis–Menten limits and steady state, PD structures, gradients."""

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

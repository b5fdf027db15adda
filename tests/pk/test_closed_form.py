"""Closed-form superposition: against the ODE path, explicit dosing, steady state and AUC identities."""

import numpy as np
import pytest
import torch

from pgxtwin.pk import (
    DosingHistory,
    EffectCompartment,
    OneCompartment,
    ParentMetabolite,
    Route,
    TwoCompartment,
    metrics,
    simulate,
)
from pgxtwin.pk import _closed_form as cf

from .conftest import METABOLITE, ONE_CPT, TIGHT, TWO_CPT

MODELS = {
    "one": (OneCompartment(), ONE_CPT),
    "two": (TwoCompartment(), TWO_CPT),
    "metabolite": (ParentMetabolite(), ONE_CPT | METABOLITE),
    "metabolite_2cpt": (ParentMetabolite(TwoCompartment()), TWO_CPT | METABOLITE),
    "effect": (EffectCompartment(OneCompartment()), ONE_CPT | {"ke0": 0.5, "emax": 2.0, "ec50": 1.0, "hill": 1.5}),
}
ROUTES = [("oral", 0.0), ("iv_bolus", 0.0), ("iv_infusion", 2.0)]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("route", "duration"), ROUTES)
@pytest.mark.parametrize("steady_state", [False, True])
def test_closed_form_matches_ode(name: str, route: str, duration: float, steady_state: bool) -> None:
    model, params = MODELS[name]
    times = np.linspace(0, 48, 65)
    dosing = DosingHistory.regular(100, 12, 3, start_h=6, route=route, duration_h=duration, steady_state=steady_state)
    exact = simulate(model, params, dosing, times)
    ode = simulate(model, params, dosing, times, method="ode", ode=TIGHT)
    assert exact.method == "closed_form" and ode.method == "ode"
    for analyte in model.analytes:
        assert _rel_err(ode[analyte], exact[analyte]) < 1e-6, analyte


def test_irregular_history_matches_ode_with_per_patient_lag() -> None:
    params = ONE_CPT | {"tlag": np.array([0.0, 0.5, 1.3])}
    dosing = DosingHistory.from_records([0, 20, 30, 55], [100, 50, 0, 150])
    times = np.linspace(0, 80, 161)
    exact = simulate(OneCompartment(), params, dosing, times)["parent"]
    ode = simulate(OneCompartment(), params, dosing, times, method="ode", ode=TIGHT)["parent"]
    assert _rel_err(ode, exact) < 1e-6


def test_superposition_equals_explicit_multiple_dosing(two_cpt: dict) -> None:
    times = np.arange(0, 100.0, 0.5)
    doses = [(0.0, 100.0), (12.0, 50.0), (30.0, 80.0)]
    together = simulate(TwoCompartment(), two_cpt, DosingHistory.from_records(*zip(*doses, strict=True)), times)["parent"]
    separately = sum(simulate(TwoCompartment(), two_cpt, DosingHistory.from_records([t], [a]), times)["parent"] for t, a in doses)
    np.testing.assert_allclose(together, separately, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("route", "duration"), ROUTES)
def test_geometric_regular_path_equals_event_loop(route: str, duration: float) -> None:
    model, params = MODELS["metabolite_2cpt"]
    times = np.arange(0, 200.0, 1.0)
    regular = DosingHistory.regular(100, 8, 20, start_h=3, route=route, duration_h=duration)
    as_records = DosingHistory.from_events(list(regular.events))
    a, b = simulate(model, params, regular, times), simulate(model, params, as_records, times)
    for analyte in model.analytes:
        np.testing.assert_allclose(a[analyte], b[analyte], rtol=1e-10, atol=1e-14)


def test_tabulated_and_direct_geometric_sums_agree_with_per_patient_lag() -> None:
    model = OneCompartment()
    params = ONE_CPT | {"tlag": np.array([0.0, 0.7, 30.0])}  # includes a lag longer than the interval
    p, _ = model.prepare(params)
    resp = model.impulse_response(p, Route.ORAL)["parent"]
    reg = DosingHistory.regular(100, 24, 10).regimen
    times = np.arange(0, 24 * 12 + 1, 1.0)
    tab = cf._geometric(resp, p["tlag"], reg, times, np)
    direct = cf._geometric_direct(resp, p["tlag"], reg, times, np)
    np.testing.assert_allclose(tab, direct, rtol=1e-11, atol=1e-15)


def test_steady_state_geometric_series_equals_many_doses(one_cpt: dict) -> None:
    tau, n_prior = 12.0, 400
    times = np.arange(0, 24.0 + 1e-9, 0.25)
    ss = simulate(OneCompartment(), one_cpt, DosingHistory.regular(100, tau, 2, steady_state=True), times)["parent"]
    many = DosingHistory.regular(100, tau, n_prior + 2, start_h=0.0)
    long = simulate(OneCompartment(), one_cpt, many, times + n_prior * tau)["parent"]
    np.testing.assert_allclose(ss, long, rtol=1e-10)


def test_steady_state_before_first_dose_is_periodic(one_cpt: dict) -> None:
    dosing = DosingHistory.regular(100, 12, 3, start_h=24, steady_state=True)
    c = simulate(OneCompartment(), one_cpt, dosing, np.array([1.0, 13.0, 25.0]))["parent"]
    np.testing.assert_allclose(c[:, 0], c[:, 1], rtol=1e-12)
    np.testing.assert_allclose(c[:, 1], c[:, 2], rtol=1e-12)


@pytest.mark.parametrize(("route", "duration"), ROUTES)
def test_auc_inf_equals_f_dose_over_cl(route: str, duration: float, one_cpt: dict) -> None:
    dose = 100.0
    times = np.concatenate([np.linspace(0, 10, 2001), np.linspace(10.01, 400, 20000)])
    c = simulate(OneCompartment(), one_cpt, DosingHistory.from_records([0.0], [dose], route=route, duration_h=duration), times)["parent"]
    f = one_cpt["f"] if route == "oral" else 1.0
    expected = f * dose / one_cpt["cl"]
    np.testing.assert_allclose(metrics.auc(times, c), expected, rtol=2e-5)
    np.testing.assert_allclose(metrics.auc_inf(OneCompartment(), one_cpt, dose, route), expected, rtol=1e-12)


def test_auc_inf_two_compartment_and_metabolite() -> None:
    dose = 100.0
    np.testing.assert_allclose(metrics.auc_inf(TwoCompartment(), TWO_CPT, dose), 0.8 * dose / TWO_CPT["cl"], rtol=1e-12)
    # metabolite AUC = fm·F·Dose/CLm (formation-rate limited mass balance)
    auc_m = metrics.auc_inf(ParentMetabolite(), ONE_CPT | METABOLITE, dose, analyte="metabolite")
    np.testing.assert_allclose(auc_m, METABOLITE["fm"] * ONE_CPT["f"] * dose / METABOLITE["cl_m"], rtol=1e-12)


def test_steady_state_auc_tau_and_css_avg(one_cpt: dict) -> None:
    tau, dose = 24.0, 75.0
    times = np.linspace(0, tau, 4801)
    c = simulate(OneCompartment(), one_cpt, DosingHistory.regular(dose, tau, 1, steady_state=True), times)["parent"]
    m = metrics.exposure(times, c, tau, start=0.0)
    np.testing.assert_allclose(m.auc_tau, one_cpt["f"] * dose / one_cpt["cl"], rtol=1e-5)
    np.testing.assert_allclose(m.css_avg, one_cpt["f"] * dose / (one_cpt["cl"] * tau), rtol=1e-5)


def test_degenerate_ka_equals_k_matches_limit() -> None:
    # ka == CL/V: C = F·D·k·t·e^{-kt}/V·... the nudged closed form must approach the limit
    p = {"cl": np.array([5.0]), "v": np.array([50.0]), "ka": np.array([0.1])}
    t = np.linspace(0, 100, 201)
    c = simulate(OneCompartment(), p, DosingHistory.from_records([0.0], [100.0]), t)["parent"][0]
    exact = 100.0 * 0.1 * t * np.exp(-0.1 * t) / 50.0
    np.testing.assert_allclose(c, exact, rtol=1e-5, atol=1e-12)


def test_amount_scale_and_per_patient_histories(one_cpt: dict) -> None:
    times = np.arange(0, 48.0)
    base = DosingHistory.regular(1.0, 12, 4)
    weights = np.array([60.0, 75.0, 90.0])
    scaled = simulate(OneCompartment(), one_cpt, base, times, amount_scale=weights)["parent"]
    per_patient = [DosingHistory.regular(w, 12, 4) for w in weights]
    explicit = simulate(OneCompartment(), one_cpt, per_patient, times)["parent"]
    np.testing.assert_allclose(scaled, explicit, rtol=1e-12)
    unit = simulate(OneCompartment(), one_cpt, base, times)["parent"]
    np.testing.assert_allclose(scaled, unit * weights[:, None], rtol=1e-12)


def test_torch_closed_form_matches_numpy_and_is_differentiable(one_cpt: dict) -> None:
    times = np.arange(0, 72.0, 0.5)
    dosing = DosingHistory.regular(100, 12, 6)
    ref = simulate(OneCompartment(), one_cpt, dosing, times)["parent"]
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in one_cpt.items()}
    out = simulate(OneCompartment(), tp, dosing, times)["parent"]
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12)
    loss = out.sum()
    loss.backward()
    # central finite difference on CL
    h = 1e-6
    up = simulate(OneCompartment(), one_cpt | {"cl": one_cpt["cl"] + h}, dosing, times)["parent"].sum(axis=1)
    dn = simulate(OneCompartment(), one_cpt | {"cl": one_cpt["cl"] - h}, dosing, times)["parent"].sum(axis=1)
    np.testing.assert_allclose(tp["cl"].grad.numpy(), (up - dn) / (2 * h), rtol=1e-6)
    assert torch.isfinite(tp["ka"].grad).all() and torch.isfinite(tp["tlag"].grad).all()


def test_parameter_validation_messages() -> None:
    times = np.arange(3.0)
    dosing = DosingHistory.regular(10, 12, 1)
    with pytest.raises(ValueError, match="needs parameter v"):
        simulate(OneCompartment(), {"cl": 1.0}, dosing, times)
    with pytest.raises(ValueError, match="no parameter"):
        simulate(OneCompartment(), {"cl": 1.0, "v": 1.0, "vd": 2.0}, dosing, times)
    with pytest.raises(ValueError, match="patient 1"):
        simulate(OneCompartment(), {"cl": np.array([1.0, -1.0]), "v": 1.0}, dosing, times)
    with pytest.raises(ValueError, match="strictly increasing"):
        simulate(OneCompartment(), {"cl": 1.0, "v": 1.0}, dosing, np.array([0.0, 2.0, 1.0]))

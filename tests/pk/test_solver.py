"""pgxtwin's batched adaptive Runge–Kutta solvers (pk/_solver): accuracy, error control, dense output, gradients."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgxtwin.pk import DosingHistory, MichaelisMenten, OdeOptions, OneCompartment, TwoCompartment, simulate
from pgxtwin.pk import _ode
from pgxtwin.pk._solver import SOLVERS, Dopri5, Tsit5

SOLVER_CLASSES = [Dopri5, Tsit5]
K = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
T_OUT = np.linspace(0.25, 10.0, 40)


def _forced(t: float, y: torch.Tensor) -> torch.Tensor:
    return -K * y + math.sin(t)


def _forced_exact(t: np.ndarray) -> torch.Tensor:
    tt = torch.as_tensor(t, dtype=torch.float64)[:, None]  # y(0) = 1
    return torch.exp(-K * tt) * (1 + 1 / (1 + K**2)) + (K * torch.sin(tt) - torch.cos(tt)) / (1 + K**2)


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_tightening_rtol_reduces_error(cls) -> None:
    errs, steps = [], []
    for rtol in (1e-3, 1e-5, 1e-7, 1e-9):
        sol = cls().solve(_forced, torch.ones(3, dtype=torch.float64), 0.0, 10.0, T_OUT, rtol=rtol, atol=1e-12)
        errs.append(float((sol.ys - _forced_exact(T_OUT)).abs().max()))
        steps.append(sol.n_steps)
        assert errs[-1] < 50 * rtol  # global error tracks the tolerance (max norm, dense output included)
    assert all(b < a / 10 for a, b in zip(errs, errs[1:])), errs
    assert all(b > a for a, b in zip(steps, steps[1:])), steps


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_dense_output_does_not_shorten_steps(cls) -> None:
    y0 = torch.ones(3, dtype=torch.float64)
    few = cls().solve(_forced, y0, 0.0, 10.0, [10.0], rtol=1e-8, atol=1e-12)
    many = cls().solve(_forced, y0, 0.0, 10.0, np.linspace(0.01, 10.0, 1000), rtol=1e-8, atol=1e-12)
    assert many.n_steps == few.n_steps and many.ys.shape == (1000, 3)
    torch.testing.assert_close(many.y1, few.y1, rtol=0, atol=0)
    assert float((many.ys - _forced_exact(np.linspace(0.01, 10.0, 1000))).abs().max()) < 1e-7


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_interpolant_is_continuous_with_step_ends(cls) -> None:
    b = cls().tableau.b
    np.testing.assert_allclose(cls().dense_weights(1.0), b, atol=1e-12)
    np.testing.assert_allclose(cls().dense_weights(0.0), 0.0, atol=1e-15)
    assert sum(b) == pytest.approx(1.0) and sum(cls().tableau.b_err) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_stops_are_step_ends(cls) -> None:
    # forcing switches on at t = 1.234: with the stop, the kink costs no accuracy
    def f(t: float, y: torch.Tensor) -> torch.Tensor:
        return -y + (1.0 if t >= 1.234 else 0.0)

    sol = cls().solve(f, torch.ones(1, dtype=torch.float64), 0.0, 5.0, [5.0], rtol=1e-10, atol=1e-12, stops=[1.234])
    exact = math.exp(-5.0) + (1 - math.exp(-(5.0 - 1.234)))
    assert float(sol.y1) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_gradients_flow_through_the_solver(cls) -> None:
    k = torch.tensor([0.7, 1.9], dtype=torch.float64, requires_grad=True)
    sol = cls().solve(lambda t, y: -k * y, torch.ones(2, dtype=torch.float64), 0.0, 3.0, [1.5, 3.0], rtol=1e-10, atol=1e-12)
    sol.ys.sum().backward()
    kd = k.detach()
    exact = -(1.5 * torch.exp(-1.5 * kd) + 3.0 * torch.exp(-3.0 * kd))
    torch.testing.assert_close(k.grad, exact, rtol=1e-7, atol=0)


def test_error_norm_is_max_over_the_batch() -> None:
    # one fast patient among slow ones sets the shared step: its error stays controlled
    k = torch.tensor([0.01] * 99 + [8.0], dtype=torch.float64)
    sol = Dopri5().solve(lambda t, y: -k * y, torch.ones(100, dtype=torch.float64), 0.0, 2.0, [2.0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(sol.y1.numpy(), np.exp(-2.0 * k.numpy()), rtol=1e-7, atol=1e-10)


# ------------------------------------------------------------------ through simulate() on linear models


@settings(max_examples=25, deadline=None)
@given(
    cl=st.floats(0.5, 30.0), v=st.floats(10.0, 200.0), ka=st.floats(0.2, 4.0), tlag=st.floats(0.0, 1.0),
    route=st.sampled_from(["oral", "iv_bolus", "iv_infusion"]), tau=st.sampled_from([8.0, 12.0, 24.0]),
    method=st.sampled_from(sorted(SOLVERS)),
)
def test_matches_closed_form_for_random_linear_parameters(cl, v, ka, tlag, route, tau, method) -> None:
    params = {"cl": cl, "v": v, "ka": ka, "tlag": tlag, "f": 0.8}
    dosing = DosingHistory.regular(100.0, tau, 4, route=route, duration_h=1.0 if route == "iv_infusion" else 0.0)
    times = np.linspace(0.0, 4 * tau, 49)
    exact = simulate(OneCompartment(), params, dosing, times)["parent"]
    ode = simulate(OneCompartment(), params, dosing, times, method="ode", ode=OdeOptions(method=method, rtol=1e-8, atol=1e-10))["parent"]
    assert np.abs(ode - exact).max() <= 1e-6 * np.abs(exact).max()


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_simulate_error_shrinks_with_rtol(method: str) -> None:
    params = {"cl": np.array([5.0, 2.0]), "v1": np.array([20.0, 35.0]), "q": 8.0, "v2": 60.0, "ka": np.array([1.5, 0.6])}
    dosing = DosingHistory.regular(100.0, 12.0, 4)
    times = np.linspace(0, 48, 97)
    exact = simulate(TwoCompartment(), params, dosing, times)["parent"]
    errs = []
    for rtol in (1e-4, 1e-6, 1e-8):
        ode = simulate(TwoCompartment(), params, dosing, times, method="ode", ode=OdeOptions(method=method, rtol=rtol, atol=rtol * 1e-2))
        errs.append(np.abs(ode["parent"] - exact).max() / exact.max())
    assert errs[0] < 1e-3 and errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10, errs


def test_chunks_and_sorting_do_not_change_results(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    n = 300
    params = {"vmax": 30 * np.exp(rng.normal(0, 0.3, n)), "km": 4.0, "v": 50 * np.exp(rng.normal(0, 0.3, n)),
              "ka": np.exp(rng.normal(0, 0.5, n)), "tlag": 0.5}
    dosing = DosingHistory.regular(100.0, 24.0, 3)
    times = np.arange(0.0, 73.0)
    opts = OdeOptions(rtol=1e-9, atol=1e-9)
    whole = simulate(MichaelisMenten(), params, dosing, times, ode=opts)["parent"]
    monkeypatch.setattr(_ode, "_CHUNK", 64)
    chunked = simulate(MichaelisMenten(), params, dosing, times, ode=opts)["parent"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-9)
    few = {k: v[:12] if np.ndim(v) else v for k, v in params.items()}
    ss = DosingHistory.regular(100.0, 24.0, 1, steady_state=True)
    monkeypatch.setattr(_ode, "_CHUNK", 5)  # odd: the Newton copies of a patient (2 each) stay in one chunk
    ss_chunked = simulate(MichaelisMenten(), few, ss, times[:25], ode=opts)
    monkeypatch.setattr(_ode, "_CHUNK", 1000)
    ss_whole = simulate(MichaelisMenten(), few, ss, times[:25], ode=opts)
    np.testing.assert_allclose(ss_chunked["parent"], ss_whole["parent"], rtol=1e-6)


def test_torchdiffeq_methods_still_available() -> None:
    params = {"cl": 5.0, "v": 50.0, "ka": 1.2}
    dosing = DosingHistory.regular(100.0, 12.0, 2)
    times = np.linspace(0, 24, 13)
    exact = simulate(OneCompartment(), params, dosing, times)["parent"]
    ode = simulate(OneCompartment(), params, dosing, times, method="ode", ode=OdeOptions(method="dopri8", rtol=1e-9, atol=1e-11))["parent"]
    assert np.abs(ode - exact).max() < 1e-6 * exact.max()


# ------------------------------------------------------------------ numpy backend (used when no gradient is needed)


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_numpy_backend_takes_the_same_steps_as_torch(cls) -> None:
    k = K.numpy()
    kw = {"rtol": 1e-8, "atol": 1e-12, "stops": [3.3]}
    ref = cls().solve(_forced, torch.ones(3, dtype=torch.float64), 0.0, 10.0, T_OUT, **kw)
    sol = cls().solve(lambda t, y: -k * y + math.sin(t), np.ones(3), 0.0, 10.0, T_OUT, **kw)
    assert isinstance(sol.ys, np.ndarray) and sol.ys.shape == (T_OUT.size, 3)
    assert (sol.n_steps, sol.n_rejected, sol.n_rhs) == (ref.n_steps, ref.n_rejected, ref.n_rhs)
    np.testing.assert_allclose(sol.ys, ref.ys.numpy(), rtol=1e-13, atol=1e-15)  # same arithmetic up to summation order
    assert np.abs(sol.ys - _forced_exact(T_OUT).numpy()).max() < 1e-7


def test_numpy_backend_batch_shapes_and_max_norm() -> None:
    # (S, N) state as the engine uses it; one fast patient sets the shared step
    k = np.array([[0.01] * 99 + [8.0], [0.5] * 100])
    sol = Dopri5().solve(lambda t, y: -k * y, np.ones((2, 100)), 0.0, 2.0, [1.0, 2.0], rtol=1e-8, atol=1e-12)
    assert sol.ys.shape == (2, 2, 100)
    np.testing.assert_allclose(sol.ys, np.exp(-np.array([1.0, 2.0])[:, None, None] * k), rtol=1e-7, atol=1e-10)

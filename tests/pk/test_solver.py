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
from pgxtwin.pk._ode_compiled import _check_status, _erk_loop, kernel_rhs
from pgxtwin.pk._solver.base import tableau_arrays

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


# ------------------------------------------------------------------ compiled loop (models with a numba kernel)


def _compiled_solve(cls, p, y0, t1, t_out, stops, *, ka, entry, amount, rate, rtol, atol):
    """One Michaelis–Menten segment [0, t1] on the compiled loop; returns (ys, y1, n_steps, n_rejected)."""
    c, a, e, dense = tableau_arrays(cls)
    ys, y1, _, n_steps, n_rejected, _, status, t = _erk_loop(
        MichaelisMenten.kernel_id, y0.copy(), 0.0, t1, t_out, np.append(stops, t1), p, True, ka, entry, amount, rate, 0,
        c, a, e, dense, float(cls.order), cls.safety, cls.ifactor, cls.dfactor, cls.beta, rtol, atol, 100_000,
    )
    _check_status(status, t, 0.0, t1, 100_000)
    return ys, y1, n_steps, n_rejected


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
def test_compiled_loop_takes_the_steps_of_the_python_loop(cls) -> None:
    # Michaelis–Menten + oral depot riding along + lagged oral entries inside the segment + an infusion rate
    vmax, km, v = np.array([30.0, 12.0, 45.0, 8.0]), np.array([4.0, 10.0, 2.0, 6.0]), np.array([50.0, 40.0, 70.0, 30.0])
    ka = np.array([0.5, 1.0, 2.0, 0.8])
    entry, amount = np.array([[1.3], [2.0], [2.7], [20.0]]), np.array([[50.0], [80.0], [20.0], [10.0]])
    rate = np.array([0.0, 5.0, 0.0, 1.0])

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        lag = t - entry
        lagged = np.where(lag >= 0, amount * np.exp(-np.clip(ka[:, None] * lag, 0, 700)), 0.0).sum(1)
        return np.stack([-vmax * y[0] / (km * v + y[0]) + ka * y[1] + ka * lagged + rate, -ka * y[1]])

    y0 = np.array([[10.0, 0.0, 3.0, 1.0], [100.0, 40.0, 0.0, 5.0]])
    stops = np.array([1.3, 2.0, 2.7])  # the lagged entries are jumps of the forcing: steps end there
    ref = cls().solve(rhs, y0.copy(), 0.0, 10.0, T_OUT, stops=stops, rtol=1e-8, atol=1e-12)
    p = np.stack([vmax, km, v, ka, np.ones(4), np.zeros(4)])  # MichaelisMenten.parameters order
    ys, y1, n_steps, n_rejected = _compiled_solve(cls, p, y0, 10.0, T_OUT, stops, ka=ka, entry=entry, amount=amount,
                                                  rate=rate, rtol=1e-8, atol=1e-12)
    # The error estimate is a near-cancelling sum of stage derivatives, so its summation order (one pass
    # per stage here, a matrix product there) moves step sizes by ~1e-10 relative, which can flip an
    # accept/reject decision near ratio 1: the same steps up to a few, the same solution to the tolerance.
    assert abs(n_steps - ref.n_steps) <= 0.03 * ref.n_steps and abs(n_rejected - ref.n_rejected) <= max(2, 0.05 * ref.n_rejected)
    np.testing.assert_allclose(ys, ref.ys, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(y1, ref.y1, rtol=1e-7, atol=1e-10)
    assert ys.shape == (T_OUT.size, 2, 4)


def test_compiled_loop_rejects_nan_steps_until_the_step_underflows() -> None:
    none = np.zeros((1, 0))
    p = np.array([[np.nan], [1.0], [1.0], [1.0], [1.0], [0.0]])  # Vmax NaN: every derivative is NaN
    with pytest.raises(RuntimeError, match="step size underflow"):
        _compiled_solve(Dopri5, p, np.ones((2, 1)), 1.0, np.zeros(0), np.zeros(0), ka=np.ones(1), entry=none,
                        amount=none, rate=np.zeros(1), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls", SOLVER_CLASSES)
@settings(max_examples=10, deadline=None)
@given(theta=st.floats(min_value=0.0, max_value=1.0))
def test_compiled_dense_output_polynomial_is_the_solvers_interpolant(cls, theta: float) -> None:
    dense = tableau_arrays(cls)[3]
    np.testing.assert_allclose(dense @ theta ** np.arange(1, dense.shape[1] + 1), cls().dense_weights(theta), atol=1e-12)


class _PythonLoopMM(MichaelisMenten):
    kernel_id = None  # the same model on the Python (numpy) loop


@settings(max_examples=25, deadline=None)
@given(
    vmax=st.floats(min_value=2.0, max_value=80.0), km=st.floats(min_value=0.5, max_value=30.0),
    v=st.floats(min_value=10.0, max_value=150.0), ka=st.floats(min_value=0.1, max_value=3.0),
    tlag=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=2, max_size=2),
    route=st.sampled_from(["oral", "iv_bolus", "iv_infusion"]),
    doses=st.lists(st.tuples(st.floats(min_value=0.0, max_value=60.0), st.floats(min_value=10.0, max_value=600.0)),
                   min_size=1, max_size=6),
    method=st.sampled_from(["dopri5", "tsit5"]),
)
def test_compiled_and_python_loops_agree_on_any_dosing_history(vmax, km, v, ka, tlag, route, doses, method) -> None:
    params = {"vmax": np.array([vmax, 0.5 * vmax]), "km": np.array([km, 2 * km]), "v": np.array([v, v]),
              "ka": np.array([ka, 2 * ka]), "tlag": np.array(tlag)}
    dosing = DosingHistory.from_records([t for t, _ in doses], [a for _, a in doses], route=route,
                                     duration_h=1.5 if route == "iv_infusion" else 0.0)
    times = np.linspace(0.0, 72.0, 49)
    opts = OdeOptions(method=method, rtol=1e-8, atol=1e-10)
    compiled = simulate(MichaelisMenten(), params, dosing, times, ode=opts)["parent"]
    python = simulate(_PythonLoopMM(), params, dosing, times, ode=opts)["parent"]
    np.testing.assert_allclose(compiled, python, rtol=1e-9, atol=1e-12 * max(python.max(), 1.0))


@settings(max_examples=25, deadline=None)
@given(amount=st.floats(min_value=0.0, max_value=1e4), vmax=st.floats(min_value=0.1, max_value=100.0),
       km=st.floats(min_value=0.1, max_value=50.0), v=st.floats(min_value=1.0, max_value=500.0))
def test_michaelis_menten_kernel_is_its_rhs(amount, vmax, km, v) -> None:
    model = MichaelisMenten()
    p, _ = model.prepare({"vmax": vmax, "km": km, "v": v, "ka": 1.0})
    matrix = np.stack([p[s.name] for s in model.parameters])
    out = np.zeros((1, 1))
    kernel_rhs(model.kernel_id, np.array([[amount]]), matrix, out)
    expected = model.rhs(torch.tensor([[amount]], dtype=torch.float64), {k: torch.tensor(np.asarray(x)) for k, x in p.items()})
    np.testing.assert_allclose(out[0, 0], float(expected[0, 0]), rtol=1e-14, atol=1e-300)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), method=st.sampled_from(["dopri5", "tsit5"]))
def test_compiled_walk_handles_per_patient_lags_inside_segments(seed: int, method: str) -> None:
    # 40 distinct lag times per dose: more than _ode._LAGS_AS_CUTS per dose, so the entries fall inside
    # segments as forcing terms the steps stop at, instead of becoming segment bounds
    rng = np.random.default_rng(seed)
    n = 40
    params = {"vmax": rng.uniform(5, 60, n), "km": rng.uniform(1, 20, n), "v": rng.uniform(20, 120, n),
              "ka": rng.uniform(0.2, 2.5, n), "tlag": rng.uniform(0.0, 3.0, n)}
    assert n > _ode._LAGS_AS_CUTS * 2
    dosing = DosingHistory.from_records([0.0, 12.0], [300.0, 200.0], route="oral")
    times = np.linspace(0.5, 30.0, 60)
    opts = OdeOptions(method=method, rtol=1e-8, atol=1e-10)
    compiled = simulate(MichaelisMenten(), params, dosing, times, ode=opts)["parent"]
    python = simulate(_PythonLoopMM(), params, dosing, times, ode=opts)["parent"]
    np.testing.assert_allclose(compiled, python, rtol=1e-9, atol=1e-12 * python.max())

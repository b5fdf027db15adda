"""Property tests: random positive parameters and doses."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pgxtwin.pk import DosingHistory, MichaelisMenten, OdeOptions, OneCompartment, TwoCompartment, simulate

# physiologically plausible ranges (mg, L, h): keeps rate constants ≤ 10/h so explicit RK stays non-stiff
cl_ = st.floats(min_value=0.1, max_value=50.0)
vol = st.floats(min_value=5.0, max_value=500.0)
ka_ = st.floats(min_value=0.1, max_value=5.0)
dose = st.floats(min_value=0.1, max_value=1000.0, allow_nan=False)
route = st.sampled_from(["oral", "iv_bolus", "iv_infusion"])
TIMES = np.linspace(0, 72, 145)


def _history(route_: str, amounts: list[float], times: list[float]) -> DosingHistory:
    return DosingHistory.from_records(times, amounts, route=route_, duration_h=1.5 if route_ == "iv_infusion" else 0.0)


doses = st.lists(st.tuples(st.floats(min_value=0, max_value=60), dose), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(cl=cl_, v1=vol, q=cl_, v2=vol, ka=ka_, route_=route, events=doses, k=st.floats(min_value=0.1, max_value=10))
def test_linear_models_nonnegative_and_linear_in_dose(cl, v1, q, v2, ka, route_, events, k) -> None:
    params = {"cl": cl, "v1": v1, "q": q, "v2": v2, "ka": ka}
    times, amounts = zip(*events, strict=True)
    c = simulate(TwoCompartment(), params, _history(route_, list(amounts), list(times)), TIMES)["parent"]
    assert np.isfinite(c).all() and (c >= -1e-12 * max(1.0, c.max())).all()
    scaled = simulate(TwoCompartment(), params, _history(route_, [a * k for a in amounts], list(times)), TIMES)["parent"]
    np.testing.assert_allclose(scaled, k * c, rtol=1e-9, atol=1e-12 * k * max(1.0, c.max()))


@settings(max_examples=15, deadline=None)
@given(cl=cl_, v=vol, ka=ka_, route_=route, events=doses)
def test_mass_balance_one_compartment(cl, v, ka, route_, events) -> None:
    times, amounts = zip(*events, strict=True)
    h = _history(route_, list(amounts), list(times))
    grid = np.linspace(0, 72, 7)
    atol = 1e-9  # mg: the solver's absolute tolerance on each amount
    res = simulate(OneCompartment(), {"cl": cl, "v": v, "ka": ka}, h, grid, return_amounts=True, ode=OdeOptions(rtol=1e-8, atol=atol))
    given_ = np.array([sum(e.amount_mg * float(np.clip((t - e.time_h) / max(e.duration_h, 1e-300), 0, 1)) if e.duration_h
                          else e.amount_mg * (t >= e.time_h) for e in h) for t in grid])
    total = sum(res.amounts.values())[0]
    np.testing.assert_allclose(total, given_, rtol=1e-6, atol=1e-8 * max(amounts))
    # non-negative up to the solver's absolute tolerance, expressed as a concentration (amount / V)
    assert (res["parent"] >= -2 * atol / v).all()


@settings(max_examples=10, deadline=None)
@given(vmax=st.floats(min_value=1.0, max_value=100.0), km=st.floats(min_value=0.5, max_value=50.0), v=vol, ka=ka_, events=doses)
def test_michaelis_menten_nonnegative(vmax, km, v, ka, events) -> None:
    times, amounts = zip(*events, strict=True)
    c = simulate(MichaelisMenten(), {"vmax": vmax, "km": km, "v": v, "ka": ka}, _history("oral", list(amounts), list(times)),
                 np.linspace(0, 72, 13), ode=OdeOptions(rtol=1e-7, atol=1e-9))["parent"]
    assert np.isfinite(c).all() and (c >= -1e-7 * max(amounts) / v).all()

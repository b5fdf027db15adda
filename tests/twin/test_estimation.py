"""Bayesian individualisation: MAP + Laplace from drug levels (pgxtwin.twin.estimation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.stats import norm

from pgxtwin.errors import PgxInputError
from pgxtwin.pk.dosing import DosingHistory
from pgxtwin.pk.drug_model import PatientFactors
from pgxtwin.pk.engine import simulate
from pgxtwin.twin.estimation import (
    MIN_RUN,
    add_residual,
    dose_pieces,
    estimate,
    estimate_many,
    population_prior,
    read_doses_csv,
    read_observations_csv,
)

PATIENT = PatientFactors(weight_kg=70.0)
DAILY = [(24.0 * k, 600.0) for k in range(14)]  # efavirenz 600 mg daily for two weeks


def _conc(drug: str, params: dict[str, float], doses, times) -> np.ndarray:
    prior = population_prior(drug, PATIENT)
    history = DosingHistory.from_records([t for t, _ in doses], [a for _, a in doses])
    p = {k: np.array([v]) for k, v in params.items()}
    return np.asarray(simulate(prior.model.structure, p, history, np.asarray(times))[prior.output])[0]


def test_as_dict_shape_and_prior_only_result():
    res = estimate("efavirenz", PATIENT, DAILY, [])
    d = res.as_dict()
    assert set(d["parameters"]) == {"cl", "v"}
    for q in d["parameters"].values():
        assert set(q) == {"estimate", "p05", "p95", "prior"} and all(isinstance(v, float) for v in q.values())
        assert q["estimate"] == pytest.approx(q["prior"])  # no data: the mode is the prior median
    assert {"next_trough_mg_per_l", "p05", "p95"} <= set(d["prediction"])
    assert d["n_observations"] == 0 and any("no observations" in n for n in d["notes"])
    # prior percentiles: typical * exp(±1.645 ω), ω² = ln(1 + CV²), CV(cl) = 0.284
    omega = math.sqrt(math.log1p(0.284**2))
    cl = d["parameters"]["cl"]
    assert cl["p95"] == pytest.approx(cl["prior"] * math.exp(1.6448536 * omega), rel=1e-6)
    # the predicted trough is at 13*24 + 24 h, just before the next dose, and is the typical value
    typical = population_prior("efavirenz", PATIENT).typical
    assert d["prediction"]["time_h"] == 336.0
    assert d["prediction"]["next_trough_mg_per_l"] == pytest.approx(_conc("efavirenz", typical, DAILY, [336.0])[0])
    p = d["prediction"]
    assert p["p05_without_residual_error"] < p["next_trough_mg_per_l"] < p["p95_without_residual_error"] < p["p95"]
    assert p["p95"] - p["p05"] > p["p95_without_residual_error"] - p["p05_without_residual_error"]


def test_recovers_known_eta_from_dense_noiseless_irregular_data():
    prior = population_prior("efavirenz", PATIENT)
    eta_true = np.array([0.35, -0.25])
    truth = dict(prior.typical, cl=prior.typical["cl"] * math.exp(eta_true[0]), v=prior.typical["v"] * math.exp(eta_true[1]))
    # irregular EHR history: late doses, a missed dose (day 5), a changed dose from day 9
    doses = [(24.0 * k + (1.5 if k % 3 == 1 else 0.0), 600.0 if k < 9 else 400.0) for k in range(12) if k != 5]
    times = np.concatenate([np.linspace(0.5, 23.5, 12), np.linspace(216.5, 287.5, 60)])
    obs = [(float(t), float(c), False) for t, c in zip(times, _conc("efavirenz", truth, doses, times))]
    res = estimate("efavirenz", PATIENT, doses, obs)
    assert res.converged
    np.testing.assert_allclose(res.eta, eta_true, atol=0.03)
    assert res.parameters["cl"].p05 < truth["cl"] < res.parameters["cl"].p95
    # dense data: the posterior is much narrower than the prior
    assert math.sqrt(res.covariance[0, 0]) < 0.25 * math.sqrt(prior.omega[0, 0])


def test_blq_observation_pulls_the_estimate_the_right_way():
    typical = population_prior("efavirenz", PATIENT).typical
    t = 13 * 24 + 23.0
    c_typ = _conc("efavirenz", typical, DAILY, [t])[0]
    # BLQ at a limit far below the typical trough: the level is lower than expected -> clearance higher
    low = estimate("efavirenz", PATIENT, DAILY, [(t, 0.3 * c_typ, True)])
    assert low.parameters["cl"].estimate > 1.2 * typical["cl"]
    # a lower limit is stronger evidence of a low level: the clearance estimate rises further
    lower = estimate("efavirenz", PATIENT, DAILY, [(t, 0.1 * c_typ, True)])
    assert lower.parameters["cl"].estimate > low.parameters["cl"].estimate
    # censoring is not the same as a value at the limit: the likelihood differs (Φ vs the density)
    measured = estimate("efavirenz", PATIENT, DAILY, [(t, 0.3 * c_typ, False)])
    assert measured.parameters["cl"].estimate != pytest.approx(low.parameters["cl"].estimate, rel=1e-3)
    # BLQ with a limit far above the prediction carries almost no information
    vague = estimate("efavirenz", PATIENT, DAILY, [(t, 10 * c_typ, True)])
    assert vague.parameters["cl"].estimate == pytest.approx(typical["cl"], rel=0.02)


def test_small_validation_shrinks_clearance_error_and_covers():
    rng = np.random.default_rng(7)
    prior = population_prior("efavirenz", PATIENT)
    n = 40
    truth = prior.model.sample(prior.typical, n, rng)
    history = DosingHistory.regular(600.0, 24.0, 14)
    obs, held_t, held_y = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 5))
        times = np.sort(rng.uniform(7 * 24, 13 * 24, size=k))
        th = float(rng.uniform(13 * 24, 14 * 24))
        p = {name: np.array([v[i]]) for name, v in truth.items()}
        c = np.asarray(simulate(prior.model.structure, p, history, np.append(times, th))[prior.output])[0]
        y = add_residual(c, prior, rng)
        obs.append([(float(t), float(v), False) for t, v in zip(times, y[:-1])])
        held_t.append(th)
        held_y.append(y[-1])
    _, modes, covs, conv = estimate_many("efavirenz", PATIENT, [history] * n, obs)
    assert conv.all()
    err_prior = prior.typical["cl"] / truth["cl"] - 1
    err_map = prior.typical["cl"] * np.exp(modes[:, 0]) / truth["cl"] - 1
    assert np.sqrt(np.mean(err_map**2)) < 0.7 * np.sqrt(np.mean(err_prior**2))
    assert np.median(np.abs(err_map)) < 0.85 * np.median(np.abs(err_prior))
    # held-out coverage of the 90% predictive interval, through the public result object
    doses = [(e.time_h, e.amount_mg) for e in history.events]
    inside = []
    for i in range(n):
        res = estimate("efavirenz", PATIENT, doses, obs[i], n_draws=400)
        np.testing.assert_allclose(res.eta, modes[i], atol=1e-4)  # batched == single-patient
        pred = res.predict([held_t[i]], n_draws=1000, seed=i)
        inside.append(pred["p05"][0] <= held_y[i] <= pred["p95"][0])
    assert 0.75 <= np.mean(inside) <= 1.0


def _independent_neg_log_posterior(eta, typical, omega, prop, doses, obs):
    """−log p(η | y) for oral one-compartment PK, written out here (Bateman function summed over doses,
    Gaussian prior on η, combined error, Beal M3 for BLQ rows) rather than through pgxtwin's engine."""
    cl, v = typical["cl"] * math.exp(eta[0]), typical["v"] * math.exp(eta[1])
    k, ka, f = cl / v, typical["ka"], typical.get("f", 1.0)
    total = 0.5 * eta @ np.linalg.solve(omega, eta)
    for t, y, blq in obs:
        s = np.array([t - td for td, _ in doses])
        a = np.array([amount for _, amount in doses])
        c = float(np.sum(np.where(s >= 0, a * f * ka / (v * (ka - k)) * (np.exp(-k * s) - np.exp(-ka * s)), 0.0)))
        sd = prop * c
        total -= norm.logcdf((y - c) / sd) if blq else norm.logpdf(y, c, sd)
    return total


def test_map_and_laplace_match_an_independently_written_posterior():
    drug = population_prior("efavirenz", PATIENT).model.drug
    assert drug.residual.additive is None  # the helper above is proportional-only
    typical = population_prior("efavirenz", PATIENT).typical
    cv = np.array([drug.variability.cv["cl"].value, drug.variability.cv["v"].value])
    omega = np.diag(np.log1p(cv**2))  # no correlation between cl and v in the file
    prop = drug.residual.proportional.value
    cases = [  # one trough; a peak and a trough; a BLQ row with a measured one; a high level
        [(13 * 24 + 23.0, 1.1, False)],
        [(13 * 24 + 3.0, 4.5, False), (13 * 24 + 23.5, 3.9, False)],
        [(12 * 24 + 22.0, 0.5, True), (13 * 24 + 6.0, 1.2, False)],
        [(13 * 24 + 12.0, 9.0, False)],
    ]
    for obs in cases:
        res = estimate("efavirenz", PATIENT, DAILY, obs, n_draws=10)
        fun = lambda e: _independent_neg_log_posterior(e, typical, omega, prop, DAILY, obs)  # noqa: E731
        ref = minimize(fun, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000})
        np.testing.assert_allclose(res.eta, ref.x, atol=2e-6)
        # Laplace covariance = inverse Hessian of the same posterior at the mode (central differences)
        h, hess = 1e-4, np.zeros((2, 2))
        for i in range(2):
            for j in range(2):
                e_i, e_j = np.eye(2)[i] * h, np.eye(2)[j] * h
                hess[i, j] = (fun(ref.x + e_i + e_j) - fun(ref.x + e_i - e_j) - fun(ref.x - e_i + e_j) + fun(ref.x - e_i - e_j)) / (4 * h * h)
        np.testing.assert_allclose(res.covariance, np.linalg.inv(hess), rtol=1e-4)


def test_two_posterior_modes_the_estimate_is_the_higher_one():
    """Two clopidogrel-H4 levels (a virtual patient of benchmarks/validate_estimation.py, where NUTS on an
    independent posterior found a higher mode than ours): the posterior of (ka, v, cl, fm) has two modes.
    Newton from the prior mode alone stops at the lesser one, η ≈ (−0.50, 0.34, −0.22, 0.82) with
    −log posterior −14.347; the estimate is the higher one, at −14.980."""
    doses = [(24.0 * k, 75.0) for k in range(14)]
    res = estimate("clopidogrel", PATIENT, doses, [(183.5, 1.129e-4, False), (232.8, 4.98e-5, False)], n_draws=10)
    assert res.converged and res.analyte == "clopidogrel-H4"
    assert res.objective == pytest.approx(-14.9796, abs=1e-3)
    np.testing.assert_allclose(res.eta, [-0.0984, 0.9744, -0.6338, 0.4190], atol=2e-3)


def test_zero_records_and_record_order_do_not_change_the_estimate():
    """Twice-daily tacrolimus (two compartments, lag time): the same history listed in reverse order and
    with a zero-amount record gives the same estimate and prediction."""
    doses = [(12.0 * k, 5.0) for k in range(20)]
    typical = population_prior("tacrolimus", PATIENT).typical
    times = [9 * 24 + 1.5, 9 * 24 + 11.5]
    conc = _conc("tacrolimus", typical, doses, times)
    obs = [(times[0], 1.3 * conc[0], False), (times[1], 1.6 * conc[1], False)]
    plain = estimate("tacrolimus", PATIENT, doses, obs, n_draws=200)
    other = estimate("tacrolimus", PATIENT, [*reversed(doses), (12.0 * 5 + 3.0, 0.0)], obs, n_draws=200)
    assert plain.converged and other.converged
    np.testing.assert_allclose(plain.eta, other.eta, atol=1e-7)
    np.testing.assert_allclose(plain.covariance, other.covariance, rtol=1e-5, atol=1e-10)
    for key, value in plain.prediction.items():
        assert other.prediction[key] == pytest.approx(value, rel=1e-8)
    # the levels are above the typical curve: clearance below the typical value
    assert plain.parameters["cl"].estimate < typical["cl"]


@settings(max_examples=30, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, 39), st.sampled_from(["late", "missed", "changed", "zero"]), st.floats(0.25, 5.0)),
        max_size=6,
    )
)
def test_dose_pieces_superpose_to_the_whole_history(changes):
    """An EHR-like q12h history (late, missed, changed doses, zero records) split into regular runs and
    the rest: the pieces hold exactly the non-zero doses, and their concentrations add up to the whole's."""
    records = {k: (12.0 * k, 5.0) for k in range(40)}
    extra = []
    for k, what, x in changes:
        if k not in records:
            continue
        t, a = records[k]
        if what == "late":
            records[k] = (t + x, a)
        elif what == "missed":
            del records[k]
        elif what == "changed":
            records[k] = (t, a * x)
        else:
            extra.append((t + x, 0.0))
    doses = sorted([*records.values(), *extra])
    history = DosingHistory.from_records([t for t, _ in doses], [a for _, a in doses])
    model = population_prior("tacrolimus", PATIENT).model.structure
    pieces = dose_pieces(model, history)
    held = sorted((e.time_h, e.amount_mg) for p in pieces for e in p.events)
    np.testing.assert_allclose(held, [d for d in doses if d[1] > 0], rtol=0, atol=1e-9)
    if not changes:
        assert len(pieces) == 1 and pieces[0].regimen is not None
    assert all(p.regimen is None or p.regimen.n_doses >= MIN_RUN for p in pieces)
    typical = {k: np.array([v]) for k, v in population_prior("tacrolimus", PATIENT).typical.items()}
    times = np.linspace(0.5, 12.0 * 41, 97)
    whole = np.asarray(simulate(model, typical, history, times)["parent"])
    summed = sum(np.asarray(simulate(model, typical, p, times)["parent"]) for p in pieces)
    np.testing.assert_allclose(summed, whole, rtol=1e-9, atol=1e-15)


def test_dose_pieces_keep_nonlinear_models_whole():
    history = DosingHistory.from_records([0.0, 8.0, 16.0, 24.0, 32.0, 41.0], [300.0] * 6)
    phenytoin = population_prior("phenytoin", PATIENT).model.structure
    assert dose_pieces(phenytoin, history) == [history]


def test_newton_converges_in_few_iterations():
    """Speed is measured in benchmarks/validate_estimation.py; here its cause: a handful of Newton steps."""
    obs = [(13 * 24 + 2.0, 4.0, False), (13 * 24 + 23.5, 2.0, False)]
    res = estimate("efavirenz", PATIENT, DAILY, obs, n_draws=10)
    assert res.converged and 1 <= res.iterations <= 10
    typical = population_prior("tacrolimus", PATIENT).typical
    doses = [(12.0 * k, 5.0) for k in range(28)]
    t = [13 * 24 + 1.5, 13 * 24 + 11.5]
    obs = [(t[0], 0.7 * c, False) for c in _conc("tacrolimus", typical, doses, t[:1])]
    res = estimate("tacrolimus", PATIENT, doses, obs, n_draws=10)
    assert res.converged and 1 <= res.iterations <= 10


def test_time_varying_covariates_are_applied_piecewise_and_noted():
    obs = [(13 * 24 + 3.0, 0.4, False)]
    table = [(0.0, 60.0, None), (200.0, 90.0, None)]
    res = estimate("lansoprazole", PATIENT, [(24.0 * k, 30.0) for k in range(14)], obs, covariates=table)
    # mean observation time 315 h: weight 90 kg -> allometric typical clearance above the 70 kg value
    assert res.parameters["cl"].prior > population_prior("lansoprazole", PATIENT).typical["cl"]
    assert any("time-varying covariates" in n for n in res.notes)


def test_drug_without_residual_model_fails_naming_it():
    with pytest.raises(PgxInputError, match="atomoxetine.*residual"):
        estimate("atomoxetine", PATIENT, [(0.0, 80.0)], [(5.0, 0.1, False)])


def test_bad_observations_in_code():
    with pytest.raises(PgxInputError, match="before the first dose"):
        estimate("efavirenz", PATIENT, [(24.0, 600.0)], [(12.0, 1.0, False)])
    with pytest.raises(PgxInputError, match="negative concentration"):
        estimate("efavirenz", PATIENT, DAILY, [(30.0, -1.0, False)])


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "empty"),
        ("time_h,concentration_mg_per_l\n", 1, "no data rows"),
        ("time_h,concentration_mg_per_l\n30,1.2\n40,-0.5\n", 3, "negative concentration"),
        ("time_h,concentration_mg_per_l\n30,abc\n", 2, "is not a number"),
        ("time_h,concentration_mg_per_l,blq\n30,0.1,maybe\n", 2, "blq="),
        ("time_h,concentration_mg_per_l\n1,0.5\n", 2, "before the first dose"),
        ("time,conc\n1,0.5\n", 1, "missing time_h"),
    ],
)
def test_observation_csv_errors_name_file_line_and_reason(tmp_path, text, line, reason):
    path = tmp_path / "levels.csv"
    path.write_text(text)
    with pytest.raises(PgxInputError) as err:
        read_observations_csv(path, doses=[(24.0, 600.0)])
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ") and reason in message and "\n" not in message


def test_csv_readers_happy_path_and_dose_errors(tmp_path):
    doses = tmp_path / "doses.csv"
    doses.write_text("time_h,amount_mg\n0,600\n24,600\n\n48,400\n")
    assert read_doses_csv(doses) == [(0.0, 600.0), (24.0, 600.0), (48.0, 400.0)]
    levels = tmp_path / "levels.csv"
    levels.write_text("time_h,concentration_mg_per_l,blq\n47.5,2.1,\n50,0.05,1\n")
    assert read_observations_csv(levels, read_doses_csv(doses)) == [(47.5, 2.1, False), (50.0, 0.05, True)]
    bad = tmp_path / "bad.csv"
    bad.write_text("time_h,amount_mg\n0,six hundred\n")
    with pytest.raises(PgxInputError, match=rf"^{bad}:2: amount_mg='six hundred' is not a number"):
        read_doses_csv(bad)
    bad.write_text("")
    with pytest.raises(PgxInputError, match=rf"^{bad}:1: the file is empty"):
        read_doses_csv(bad)


def _phenytoin_neg_log_posterior(eta, typical, omega, prop, doses, obs) -> float:
    """−log posterior of phenytoin written independently of pgxtwin's engine: scipy's DOP853 on
    dA/dt = ka·F·Σ D_i·exp(−ka(t − t_i)) − Vmax·C/(Km + C), C = A/V, one solve per dosing interval."""
    from scipy.integrate import solve_ivp  # noqa: PLC0415

    vmax, v, km = (typical[k] * math.exp(e) for k, e in zip(("vmax", "v", "km"), eta, strict=True))
    ka, f = typical["ka"], typical["f"]

    def rhs(t, a):
        flux = sum(ka * f * d * math.exp(-ka * (t - t0)) for t0, d in doses if t0 <= t)
        c = a[0] / v
        return [flux - vmax * c / (km + c)]

    times = sorted(o[0] for o in obs)
    bounds = sorted({t for t, _ in doses} | {times[-1]})
    conc, a = {}, [0.0]
    for lo, hi in zip(bounds, bounds[1:]):  # the absorbed flux has a kink at each dose: stop there
        sol = solve_ivp(rhs, (lo, hi), a, method="DOP853", rtol=1e-9, atol=1e-10, dense_output=True)
        conc.update({t: float(sol.sol(t)[0]) / v for t in times if lo < t <= hi})
        a = [sol.y[0][-1]]
    total = 0.5 * eta @ np.linalg.solve(omega, eta)
    for t, y, blq in obs:
        c = conc[t]
        sd = prop * c
        total -= norm.logcdf((y - c) / sd) if blq else norm.logpdf(y, c, sd)
    return total


def test_ode_model_map_by_differences_matches_an_independent_posterior():
    """Phenytoin (Michaelis–Menten, ODE path: gradient and Hessian by central differences of the objective)
    against the same posterior solved by scipy's DOP853: at our mode the independent posterior is
    stationary (its Newton step is < 1e-4 in η), has the same value, and its Hessian inverts to our
    Laplace covariance."""
    prior = population_prior("phenytoin", PATIENT)
    assert prior.names == ("vmax", "v", "km") and prior.additive == 0.0 and "tlag" not in prior.typical
    doses = [(8.0 * k, 100.0) for k in range(9)]  # 100 mg every 8 h for 3 days
    obs = [(30.0, 2.1, False), (71.5, 4.4, False)]
    res = estimate("phenytoin", PATIENT, doses, obs, n_draws=10)
    assert res.converged
    fun = lambda e: _phenytoin_neg_log_posterior(e, prior.typical, prior.omega, prior.proportional, doses, obs)  # noqa: E731
    h, eye = 1e-3, np.eye(3)
    f0 = fun(res.eta)
    plus = np.array([fun(res.eta + h * eye[k]) for k in range(3)])
    minus = np.array([fun(res.eta - h * eye[k]) for k in range(3)])
    hess = np.diag((plus - 2 * f0 + minus) / h**2)
    for k in range(3):
        for j in range(k + 1, 3):
            both = fun(res.eta + h * (eye[k] + eye[j])) + fun(res.eta - h * (eye[k] + eye[j]))
            hess[k, j] = hess[j, k] = (both - plus[k] - minus[k] - plus[j] - minus[j] + 2 * f0) / (2 * h**2)
    grad = (plus - minus) / (2 * h)
    assert np.all(np.linalg.eigvalsh(hess) > 0)
    assert np.abs(np.linalg.solve(hess, grad)).max() < 1e-4
    # the same objective up to the prior's normalising constant ½ ln|2πΩ|
    assert res.objective == pytest.approx(f0 + 0.5 * float(np.linalg.slogdet(2 * math.pi * prior.omega)[1]), abs=1e-5)
    np.testing.assert_allclose(res.covariance, np.linalg.inv(hess), rtol=2e-3)

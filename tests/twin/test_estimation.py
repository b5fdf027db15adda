"""Bayesian individualisation: MAP + Laplace from drug levels (pgxtwin.twin.estimation)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pgxtwin.errors import PgxInputError
from pgxtwin.pk.dosing import DosingHistory
from pgxtwin.pk.drug_model import PatientFactors
from pgxtwin.pk.engine import simulate
from pgxtwin.twin.estimation import (
    add_residual,
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


def test_update_is_fast_for_a_one_compartment_drug():
    obs = [(13 * 24 + 2.0, 4.0, False), (13 * 24 + 23.5, 2.0, False)]
    estimate("efavirenz", PATIENT, DAILY, obs)  # warm-up
    t0 = time.perf_counter()
    for _ in range(5):
        estimate("efavirenz", PATIENT, DAILY, obs)
    assert (time.perf_counter() - t0) / 5 < 0.25  # ~20-40 ms measured; loose bound for slow CI machines


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

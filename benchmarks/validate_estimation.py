"""Validate Bayesian individualisation (pgxtwin.twin.estimation) on virtual patients.

For every library drug with between-subject variability and a residual error model:
  * 500 patients drawn from the prior (DrugModel.sample), standard regimen for 14 days (phenytoin:
    7 days, fewer patients — its Michaelis-Menten model runs on the ODE path);
  * 1-4 samples each at random times on days 8-14 with residual error; values below an LLOQ (5% of the
    typical concentration) are censored (BLQ); one held-out sample in the last dosing interval;
  * MAP + Laplace per patient (batched Newton, the same objective and optimiser as ``estimate``).
Reports: error of individual clearance (cl; vmax for phenytoin) by the MAP vs the prior-only
prediction (RMSE of the relative error and median |% error|), coverage of the 90% predictive
interval on the held-out sample (with residual error), and the time of one ``estimate`` call.
Then, for efavirenz (one-compartment), NumPyro NUTS on the same model re-implemented in JAX for 50
patients: MAP vs the posterior mode (Gaussian KDE of the draws), vs the posterior median, and vs a
JAX optimisation of the JAX log density.

    python benchmarks/validate_estimation.py            # full run
    python benchmarks/validate_estimation.py --quick    # small run (~1 min)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from pgxtwin.pk.dosing import DosingHistory
from pgxtwin.pk.drug_model import PatientFactors, drug_model
from pgxtwin.pk.engine import simulate
from pgxtwin.pk.units import parse_dose
from pgxtwin.twin.estimation import FRACTIONS, add_residual, estimate, estimate_many, population_prior

PATIENT = PatientFactors(weight_kg=70.0)


def drugs_with_variability() -> list[str]:
    from pgxtwin.knowledge.drugs import drug_names  # noqa: PLC0415

    out = []
    for name in drug_names():
        drug = drug_model(name).drug
        if drug.variability.cv and (drug.residual.proportional or drug.residual.additive):
            out.append(drug.name)
    return out


def regimen(name: str) -> tuple[DosingHistory, float, float]:
    std = drug_model(name).drug.dosing.standard
    days = 7 if name == "phenytoin" else 14
    amount = parse_dose(std.dose).to_mg(weight_kg=70.0, bsa_m2=1.8)
    n = int(round(days * 24 / std.interval_h))
    return DosingHistory.regular(amount, std.interval_h, n, route=std.route, duration_h=std.infusion_h or 0.0), std.interval_h, days * 24.0


def simulate_patients(name: str, n: int, rng: np.random.Generator):
    prior = population_prior(name, PATIENT)
    model = prior.model
    history, tau, end = regimen(name)
    truth = model.sample(prior.typical, n, rng)
    n_obs = rng.integers(1, 5, size=n)
    fit_times = [np.sort(rng.uniform(end - 7 * 24, end - tau, size=k)) for k in n_obs]
    held = rng.uniform(end - tau, end, size=n)
    grid = np.unique(np.concatenate([*fit_times, held]))
    conc = np.asarray(simulate(model.structure, truth, history, grid)[prior.output])
    typical_curve = np.asarray(simulate(model.structure, {k: np.array([v]) for k, v in prior.typical.items()}, history, grid)[prior.output])[0]
    lloq = 0.05 * float(np.median(typical_curve))
    observations, held_obs = [], []
    for i in range(n):
        c = conc[i, np.searchsorted(grid, fit_times[i])]
        y = add_residual(c, prior, rng)
        observations.append([(float(t), float(max(v, lloq)) if v < lloq else float(v), bool(v < lloq)) for t, v in zip(fit_times[i], y)])
        held_obs.append(float(add_residual(conc[i, np.searchsorted(grid, held[i])], prior, rng)))
    return prior, history, truth, observations, held, np.array(held_obs), lloq


def predictive_coverage(prior, history, modes, covs, held_t, held_y, rng, n_draws=400) -> float:
    """Share of held-out observations inside the 5-95% predictive interval (η ~ Laplace, + residual)."""
    n, d = modes.shape
    eta = np.concatenate([rng.multivariate_normal(modes[i], covs[i], size=n_draws, method="eigh") for i in range(n)]) if d else np.zeros((n * n_draws, 0))
    params = {k: np.full(n * n_draws, v) for k, v in prior.typical.items()}
    for k, name in enumerate(prior.names):
        params[name] = params[name] * np.exp(eta[:, k])
        if name in FRACTIONS:
            params[name] = np.minimum(params[name], 1.0)
    grid, inv = np.unique(held_t, return_inverse=True)
    conc = np.empty((n, n_draws))
    for s in range(0, n, 25):  # chunks of patients bound memory (draws x grid per chunk)
        rows = slice(s * n_draws, min(s + 25, n) * n_draws)
        c = np.asarray(simulate(prior.model.structure, {k: v[rows] for k, v in params.items()}, history, grid)[prior.output])
        m = c.shape[0] // n_draws
        conc[s : s + m] = c.reshape(m, n_draws, -1)[np.arange(m), :, inv[s : s + m]]
    noisy = add_residual(conc, prior, rng)
    lo, hi = np.quantile(noisy, [0.05, 0.95], axis=1)
    return float(np.mean((held_y >= lo) & (held_y <= hi)))


def clearance_name(prior) -> str:
    return "cl" if "cl" in prior.names else "vmax"


def validate_drug(name: str, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    prior, history, truth, observations, held_t, held_y, lloq = simulate_patients(name, n, rng)
    t0 = time.perf_counter()
    modes, covs = [], []
    chunk = 10 if name == "phenytoin" else 100
    for s in range(0, n, chunk):
        _, m, c, _ = estimate_many(name, PATIENT, [history] * len(observations[s : s + chunk]), observations[s : s + chunk])
        modes.append(m)
        covs.append(c)
    modes, covs = np.concatenate(modes), np.concatenate(covs)
    batch_s = time.perf_counter() - t0
    k = prior.names.index(clearance_name(prior))
    cl_name = prior.names[k]
    true_cl = truth[cl_name]
    typ = prior.typical[cl_name]
    est_cl = typ * np.exp(modes[:, k])
    err_prior = typ / true_cl - 1.0
    err_map = est_cl / true_cl - 1.0
    coverage = predictive_coverage(prior, history, modes, covs, held_t, held_y, rng)
    prior_cov = predictive_coverage(prior, history, np.zeros_like(modes), np.repeat(prior.omega[None], n, 0), held_t, held_y, rng)
    # time of single-patient updates through the public entry point
    doses = [(e.time_h, e.amount_mg) for e in history.events]
    estimate(name, PATIENT, doses, observations[0], n_draws=10)  # warm-up (imports, caches)
    times = []
    for i in range(3 if name == "phenytoin" else 20):
        t1 = time.perf_counter()
        estimate(name, PATIENT, doses, observations[i], n_draws=500 if name == "phenytoin" else 2000)
        times.append(time.perf_counter() - t1)
    return {
        "drug": name, "structure": prior.model.drug.model.structure, "n": n, "param": cl_name,
        "blq_pct": 100.0 * np.mean([o[2] for obs in observations for o in obs]),
        "rmse_prior": float(np.sqrt(np.mean(err_prior**2))), "rmse_map": float(np.sqrt(np.mean(err_map**2))),
        "mdape_prior": float(np.median(np.abs(err_prior)) * 100), "mdape_map": float(np.median(np.abs(err_map)) * 100),
        "coverage": coverage, "coverage_prior": prior_cov,
        "ms_median": float(np.median(times) * 1e3), "ms_max": float(np.max(times) * 1e3),
        "batch_ms_per_patient": batch_s / n * 1e3,
    }


# ------------------------------------------------------------------------------------------ MCMC
def mcmc_check(n_patients: int, n_samples: int, seed: int) -> dict[str, float] | None:
    try:
        import jax  # noqa: PLC0415

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp  # noqa: PLC0415
        import numpyro  # noqa: PLC0415
        import numpyro.distributions as dist  # noqa: PLC0415
        from jax.scipy.special import log_ndtr  # noqa: PLC0415
        from numpyro.infer import MCMC, NUTS  # noqa: PLC0415
        from scipy.stats import gaussian_kde  # noqa: PLC0415
        from scipy.optimize import minimize  # noqa: PLC0415
    except ImportError as exc:
        print(f"MCMC check skipped: {exc} (pip install numpyro jax jaxlib)")
        return None
    name = "efavirenz"
    rng = np.random.default_rng(seed)
    prior, history, truth, observations, *_ = simulate_patients(name, n_patients, rng)
    assert prior.model.drug.model.structure == "one_compartment" and prior.names == ("cl", "v")
    p = prior.typical
    dose_t = jnp.array([e.time_h for e in history.events])
    dose_a = jnp.array([e.amount_mg for e in history.events])
    omega = jnp.array(prior.omega)
    prop, add = prior.proportional, prior.additive

    def conc(eta, t):  # one-compartment oral, superposition (independent of pgxtwin's engine)
        cl, v = p["cl"] * jnp.exp(eta[0]), p["v"] * jnp.exp(eta[1])
        k, ka = cl / v, p["ka"]
        s = t[:, None] - dose_t[None, :] - p.get("tlag", 0.0)
        sp = jnp.clip(s, 0.0, None)
        unit = p["f"] * ka / (v * (ka - k)) * (jnp.exp(-k * sp) - jnp.exp(-ka * sp))
        return jnp.sum(jnp.where(s >= 0, unit, 0.0) * dose_a[None, :], axis=1)

    def loglik(eta, t, y, blq, mask):
        c = conc(eta, t)
        sd = jnp.sqrt((prop * c) ** 2 + add**2 + 1e-12)
        z = (y - c) / sd
        normal = -0.5 * jnp.log(2 * jnp.pi) - jnp.log(sd) - 0.5 * z**2
        return jnp.sum(jnp.where(blq, log_ndtr(z), normal) * mask)

    def model(t, y, blq, mask):
        eta = numpyro.sample("eta", dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=omega))
        numpyro.factor("lik", loglik(eta, t, y, blq, mask))

    neg_logpost = jax.jit(lambda eta, *a: -(dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=omega).log_prob(eta) + loglik(eta, *a)))
    grad = jax.jit(jax.grad(lambda eta, *a: neg_logpost(eta, *a)))
    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=n_samples, progress_bar=False, jit_model_args=True)
    rows = []
    t0 = time.perf_counter()
    for i, obs in enumerate(observations):
        t = np.full(4, obs[-1][0]) + np.arange(4) * 1e-3
        y, blq, mask = np.zeros(4), np.zeros(4, bool), np.zeros(4)
        for j, (tj, cj, bj) in enumerate(obs):
            t[j], y[j], blq[j], mask[j] = tj, cj, bj, 1.0
        args = tuple(jnp.array(a) for a in (t, y, blq, mask))
        mcmc.run(jax.random.PRNGKey(seed + i), *args)
        draws = np.asarray(mcmc.get_samples()["eta"])
        res = estimate(name, PATIENT, [(e.time_h, e.amount_mg) for e in history.events], obs, n_draws=10)
        kde = gaussian_kde(draws.T)
        kde_mode = minimize(lambda e: -kde.logpdf(e)[0], np.median(draws, 0), method="Nelder-Mead",
                            options={"xatol": 1e-5, "fatol": 1e-10}).x
        jax_mode = minimize(lambda e: float(neg_logpost(jnp.array(e), *args)), np.zeros(2),
                            jac=lambda e: np.asarray(grad(jnp.array(e), *args)), method="BFGS", options={"gtol": 1e-9}).x
        cl_pct = lambda a, b: 100.0 * (math.exp(a - b) - 1.0)  # noqa: E731
        cl_sd_mcmc = float(np.std(draws[:, 0]))
        rows.append((
            cl_pct(res.eta[0], kde_mode[0]), cl_pct(res.eta[0], np.median(draws[:, 0])), cl_pct(res.eta[0], jax_mode[0]),
            cl_pct(res.eta[1], kde_mode[1]),
            float(np.sqrt(res.covariance[0, 0])) / cl_sd_mcmc,
        ))
    a = np.abs(np.array(rows))
    r = np.array(rows)
    return {
        "n": n_patients, "draws": n_samples, "seconds": time.perf_counter() - t0,
        "cl_vs_kde_mode_median_abs_pct": float(np.median(a[:, 0])), "cl_vs_kde_mode_p90_abs_pct": float(np.quantile(a[:, 0], 0.9)),
        "cl_vs_kde_mode_within_2pct": float(np.mean(a[:, 0] <= 2.0)),
        "cl_vs_median_median_abs_pct": float(np.median(a[:, 1])), "cl_vs_median_p90_abs_pct": float(np.quantile(a[:, 1], 0.9)),
        "cl_vs_jax_map_max_abs_pct": float(np.max(a[:, 2])),
        "v_vs_kde_mode_median_abs_pct": float(np.median(a[:, 3])),
        "laplace_sd_over_mcmc_sd_cl_median": float(np.median(r[:, 4])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run: 60 patients per drug, 10 for MCMC")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--no-mcmc", action="store_true")
    args = ap.parse_args()
    n = 60 if args.quick else 500
    n_mm = 10 if args.quick else 40
    print(f"{'drug':13s} {'structure':18s} {'N':>4s} {'param':>5s} {'BLQ%':>5s}  {'RMSE prior':>10s} {'RMSE MAP':>9s}"
          f"  {'MdAPE prior':>11s} {'MdAPE MAP':>9s}  {'PI90 cov':>8s} {'(prior)':>7s}  {'ms/update':>9s} {'max':>6s} {'batch':>6s}")
    for name in drugs_with_variability():
        r = validate_drug(name, n_mm if name == "phenytoin" else n, args.seed)
        print(f"{r['drug']:13s} {r['structure']:18s} {r['n']:4d} {r['param']:>5s} {r['blq_pct']:5.1f}  {r['rmse_prior']:10.3f} {r['rmse_map']:9.3f}"
              f"  {r['mdape_prior']:10.1f}% {r['mdape_map']:8.1f}%  {100 * r['coverage']:7.1f}% {100 * r['coverage_prior']:6.1f}%"
              f"  {r['ms_median']:9.1f} {r['ms_max']:6.0f} {r['batch_ms_per_patient']:6.1f}", flush=True)
    print("RMSE/MdAPE: relative error of the individual clearance (vmax for phenytoin), prior-only typical value vs MAP;"
          " PI90 cov: share of held-out samples inside the 90% predictive interval (with residual error), after"
          " estimation and (prior) before; ms/update: one estimate() call (median, max); batch: ms per patient in the"
          " batched validation run.")
    if not args.no_mcmc:
        m = mcmc_check(10 if args.quick else 50, 2000 if args.quick else 6000, args.seed)
        if m is not None:
            print(f"\nMCMC (NumPyro NUTS, efavirenz re-implemented in JAX): {m['n']} patients, {m['draws']} draws each, {m['seconds']:.0f} s")
            print(f"  MAP CL vs KDE posterior mode:  median |diff| {m['cl_vs_kde_mode_median_abs_pct']:.2f}%, 90th pct"
                  f" {m['cl_vs_kde_mode_p90_abs_pct']:.2f}%, within 2%: {100 * m['cl_vs_kde_mode_within_2pct']:.0f}% of patients")
            print(f"  MAP CL vs posterior median:    median |diff| {m['cl_vs_median_median_abs_pct']:.2f}%, 90th pct {m['cl_vs_median_p90_abs_pct']:.2f}%")
            print(f"  MAP CL vs JAX-optimised mode of the JAX log density: max |diff| {m['cl_vs_jax_map_max_abs_pct']:.4f}%")
            print(f"  MAP V vs KDE posterior mode:   median |diff| {m['v_vs_kde_mode_median_abs_pct']:.2f}%")
            print(f"  Laplace SD / MCMC SD of eta_CL (median): {m['laplace_sd_over_mcmc_sd_cl_median']:.3f}")


if __name__ == "__main__":
    main()

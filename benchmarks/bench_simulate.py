"""PK engine benchmark: prints figures, asserts nothing.

(a) 1,000,000 virtual patients x 28 days of once-daily oral dosing, hourly grid, one-compartment
    model: closed-form concentrations + exposure metrics, in chunks. Wall time and peak memory.
(b) Michaelis–Menten model (batched adaptive Runge–Kutta ODE path, pgxtwin.pk._solver), 100,000 patients,
    same regimen and grid; accuracy against tight solves by the same solver and by torchdiffeq (dopri8).
(c) Per-patient throughput vs peers on 1,000 patients: scipy solve_ivp in a Python loop, and
    libRoadRunner (model written in Antimony) if installed.

Run: .venv/bin/python benchmarks/bench_simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from pgxtwin.pk import DosingHistory, MichaelisMenten, OdeOptions, OneCompartment, metrics, simulate, simulate_chunks

DAYS, TAU, DOSE = 28, 24.0, 100.0
TLAG, F = 0.5, 0.9
WINDOW = (0.5, 2.5)  # mg/L, an illustrative therapeutic window
# states in mg: atol 1e-4 mg is 1e-6 of a dose; the peers get the same tolerances
ODE_OPTS = OdeOptions(rtol=1e-6, atol=1e-4)


def population(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Log-normal inter-individual variability (30% CV) around typical values."""
    rng = np.random.default_rng(seed)
    eta = rng.normal(0.0, 0.3, size=(4, n))
    return {
        "cl": 5.0 * np.exp(eta[0]),
        "v": 50.0 * np.exp(eta[1]),
        "ka": 1.2 * np.exp(eta[2]),
        "vmax": 30.0 * np.exp(eta[3]),
    }


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_linear_population(n: int, chunk: int, workers: int) -> None:
    times = np.arange(0.0, DAYS * TAU + 1.0)
    pop = population(n)
    params = {"cl": pop["cl"], "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
    dosing = DosingHistory.regular(DOSE, TAU, DAYS)
    last = (DAYS - 1) * TAU
    auc_tau, cmax, cmin, frac_ss, frac_course = (np.empty(n) for _ in range(5))
    rss0 = peak_rss_gb()

    def process(start: int) -> None:
        # one chunk: simulate, reduce to per-patient metrics, drop the (chunk, T) curves
        sl = slice(start, min(start + chunk, n))
        [(_, res)] = simulate_chunks(OneCompartment(), {k: v[sl] if np.ndim(v) else v for k, v in params.items()},
                                     dosing, times, chunk_size=chunk)
        c = res["parent"]
        m = metrics.exposure(times, c, TAU, start=last, window=WINDOW)
        auc_tau[sl], cmax[sl], cmin[sl] = m.auc_tau, m.cmax, m.cmin
        frac_ss[sl] = m.window.fraction_within
        frac_course[sl] = metrics.time_in_window(times, c, *WINDOW).fraction_within

    def run() -> None:
        # numpy releases the GIL inside its kernels, so chunks on `workers` threads use all cores
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(process, range(0, n, chunk)))

    wall, _ = timed(run)
    print(f"(a) one-compartment oral, {n:,} patients x {times.size} times ({DAYS} daily doses), "
          f"chunks of {chunk:,} on {workers} threads")
    print(f"    concentrations + metrics (AUCtau, Cmax, Cmin last day; time in {WINDOW} mg/L last day and whole course)")
    print(f"    wall {wall:.2f} s  ({n / wall:,.0f} patients/s, {n * times.size / wall / 1e6:.0f} M conc/s)")
    print(f"    peak RSS {peak_rss_gb():.2f} GB (before: {rss0:.2f} GB; includes numpy/torch runtime)")
    print(f"    median AUCtau {np.median(auc_tau):.2f} mg.h/L (analytic F.D/CL median {np.median(F * DOSE / pop['cl']):.2f}),"
          f" Cmax {np.median(cmax):.2f}, Cmin {np.median(cmin):.2f} mg/L,"
          f" in window: last day {np.mean(frac_ss):.1%}, whole course {np.mean(frac_course):.1%}")


def bench_mm_population(n: int) -> None:
    times = np.arange(0.0, DAYS * TAU + 1.0)
    pop = population(n, seed=1)
    params = {"vmax": pop["vmax"], "km": 4.0, "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
    dosing = DosingHistory.regular(DOSE, TAU, DAYS)
    wall, res = timed(lambda: simulate(MichaelisMenten(), params, dosing, times, ode=ODE_OPTS))
    c = res["parent"]
    # accuracy of these settings against a tight solve of the first 100 patients
    few = {k: v[:100] if np.ndim(v) else v for k, v in params.items()}
    ref = simulate(MichaelisMenten(), few, dosing, times, ode=OdeOptions(rtol=1e-10, atol=1e-10))["parent"]
    err = np.abs(c[:100] - ref).max() / np.abs(ref).max()
    # independent reference: torchdiffeq's dopri8 (another code, another method)
    ref8 = simulate(MichaelisMenten(), few, dosing, times, ode=OdeOptions(method="dopri8", rtol=1e-10, atol=1e-10))["parent"]
    err8 = np.abs(c[:100] - ref8).max() / np.abs(ref8).max()
    print(f"(b) Michaelis–Menten oral ({ODE_OPTS.method}, pgxtwin solver, rtol={ODE_OPTS.rtol}, atol={ODE_OPTS.atol} mg), "
          f"{n:,} patients x {times.size} times")
    print(f"    wall {wall:.2f} s  ({n / wall:,.0f} patients/s); peak RSS {peak_rss_gb():.2f} GB;"
          f" median Cmax day 28 {np.median(metrics.cmax(times, c, start=(DAYS - 1) * TAU)):.2f} mg/L")
    print(f"    max error (100 patients, all times) vs rtol=1e-10 solve {err:.1e}, vs torchdiffeq dopri8 rtol=1e-10 "
          f"{err8:.1e} of Cmax (references agree to {np.abs(ref - ref8).max() / np.abs(ref8).max():.1e})")


# ---------------------------------------------------------------------------------------- peers


def scipy_loop(params: dict[str, np.ndarray], mm: bool) -> np.ndarray:
    """One solve_ivp call per dosing interval per patient (RK45, same tolerances), depot as a state."""
    from scipy.integrate import solve_ivp

    times = np.arange(0.0, DAYS * TAU + 1.0)
    n = params["v"].shape[0]
    out = np.empty((n, times.size))
    for i in range(n):
        ka, v = params["ka"][i], params["v"][i]
        if mm:
            vmax, km = params["vmax"][i], 4.0

            def rhs(t: float, y: np.ndarray, ka=ka, v=v, vmax=vmax, km=km) -> list[float]:
                c = y[1] / v
                return [-ka * y[0], ka * y[0] - vmax * c / (km + c)]
        else:
            k = params["cl"][i] / v

            def rhs(t: float, y: np.ndarray, ka=ka, k=k) -> list[float]:
                return [-ka * y[0], ka * y[0] - k * y[1]]

        y = np.zeros(2)
        bounds = [0.0] + [d * TAU + TLAG for d in range(DAYS)] + [times[-1]]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if a > 0:
                y[0] += F * DOSE  # lagged dose enters the depot
            last = b == times[-1]
            sel = (times >= a) & ((times <= b) if last else (times < b))
            t_eval = np.append(times[sel], b) if not last else times[sel]
            sol = solve_ivp(rhs, (a, b), y, t_eval=t_eval, rtol=ODE_OPTS.rtol, atol=ODE_OPTS.atol, method="RK45")
            out[i, sel] = sol.y[1, : sel.sum()] / v
            y = sol.y[:, -1].copy()
    return out


def antimony_model(mm: bool) -> str:
    elim = "vmax*C/(km + C)" if mm else "cl*C"
    return f"""
    model pk
      depot' = -ka*depot
      central' = ka*depot - {elim}
      C := central/v
      depot = 0; central = 0
      ka = 1.2; v = 50; cl = 5; vmax = 30; km = 4
      next_dose = {TLAG}
      E1: at (time >= next_dose): depot = depot + {F * DOSE}, next_dose = next_dose + {TAU}
    end
    """


def roadrunner_loop(params: dict[str, np.ndarray], mm: bool) -> np.ndarray | str:
    try:
        import antimony
        import roadrunner
    except ImportError as exc:
        return f"skipped: {exc}"
    if antimony.loadAntimonyString(antimony_model(mm)) < 0:
        return f"skipped: antimony error {antimony.getLastError()}"
    rr = roadrunner.RoadRunner(antimony.getSBMLString(antimony.getMainModuleName()))
    rr.integrator.relative_tolerance = ODE_OPTS.rtol
    rr.integrator.absolute_tolerance = ODE_OPTS.atol
    rr.timeCourseSelections = ["time", "C"]
    n = params["v"].shape[0]
    n_t = int(DAYS * TAU) + 1
    out = np.empty((n, n_t))
    names = ["ka", "v"] + (["vmax"] if mm else ["cl"])
    for i in range(n):
        rr.resetAll()
        for name in names:
            rr[name] = float(params[name][i])
        out[i] = rr.simulate(0, DAYS * TAU, n_t)[:, 1]
    return out


def bench_peers(n: int) -> None:
    times = np.arange(0.0, DAYS * TAU + 1.0)
    dosing = DosingHistory.regular(DOSE, TAU, DAYS)
    pop = population(n, seed=2)
    for mm in (False, True):
        label = "Michaelis–Menten" if mm else "one-compartment linear"
        if mm:
            params = {"vmax": pop["vmax"], "km": 4.0, "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
            ours_t, ours = timed(lambda params=params: simulate(MichaelisMenten(), params, dosing, times, ode=ODE_OPTS)["parent"])
        else:
            params = {"cl": pop["cl"], "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
            ours_t, ours = timed(lambda params=params: simulate(OneCompartment(), params, dosing, times)["parent"])
        print(f"(c) {label}, {n:,} patients, {DAYS} daily oral doses, {times.size} output times")
        print(f"    pgxtwin      {ours_t:8.3f} s  {n / ours_t:12,.0f} patients/s")
        sp_t, sp = timed(lambda mm=mm: scipy_loop(pop, mm))
        err = np.abs(sp - ours).max() / np.abs(ours).max()
        print(f"    scipy loop   {sp_t:8.3f} s  {n / sp_t:12,.0f} patients/s  -> pgxtwin {sp_t / ours_t:,.0f}x  (max rel diff {err:.1e})")
        rr_t, rr = timed(lambda mm=mm: roadrunner_loop(pop, mm))
        if isinstance(rr, str):
            print(f"    libRoadRunner {rr}")
        else:
            err = np.abs(rr - ours).max() / np.abs(ours).max()
            print(f"    libRoadRunner {rr_t:7.3f} s  {n / rr_t:12,.0f} patients/s  -> pgxtwin {rr_t / ours_t:,.1f}x  (max rel diff {err:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (10k / 1k / 50 patients)")
    ap.add_argument("--chunk", type=int, default=2048, help="patients per chunk in (a) (small chunks stay in cache)")
    ap.add_argument("--workers", type=int, default=1, help="threads for the chunks of (a) (no gain measured on 2 cores)")
    args = ap.parse_args()
    n_a, n_b, n_c = (10_000, 1_000, 50) if args.quick else (1_000_000, 100_000, 1_000)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), float64")
    bench_linear_population(n_a, min(args.chunk, n_a), args.workers)
    bench_mm_population(n_b)
    bench_peers(n_c)


if __name__ == "__main__":
    main()

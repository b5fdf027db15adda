"""PK engine benchmark: prints figures, asserts nothing.

(a) 1,000,000 virtual patients x 28 days of once-daily oral dosing, hourly grid, one-compartment
    model: closed-form concentrations + exposure metrics, in chunks. Wall time and peak memory.
(b) Michaelis–Menten model (batched adaptive Runge–Kutta ODE path, pgxtwin.pk._solver), 100,000 patients,
    same regimen and grid; accuracy against tight solves by the same solver and by torchdiffeq (dopri8).
(c) Per-patient throughput vs peers on 1,000 patients: scipy solve_ivp in a Python loop, and
    libRoadRunner (model written in Antimony) if installed. pgxtwin and libRoadRunner are timed
    alternately for --rounds rounds (the machine may be shared: the ratio is given per round and from
    the best times); every code is accurate to its tolerances against scipy DOP853 at rtol 1e-12.
    Issue 3's targets: >= 100x libRoadRunner's per-patient throughput on the linear model, >= 10x on
    the nonlinear (Michaelis-Menten) one.

Run: .venv/bin/python benchmarks/bench_simulate.py [--quick] [--only c] [--rounds 3]
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


def scipy_loop(
    params: dict[str, np.ndarray], mm: bool, rtol: float = ODE_OPTS.rtol, atol: float = ODE_OPTS.atol, method: str = "RK45"
) -> np.ndarray:
    """One solve_ivp call per dosing interval per patient (RK45 and our tolerances by default), depot as a state."""
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
            sol = solve_ivp(rhs, (a, b), y, t_eval=t_eval, rtol=rtol, atol=atol, method=method)
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


def bench_peers(n: int, rounds: int) -> None:
    times = np.arange(0.0, DAYS * TAU + 1.0)
    dosing = DosingHistory.regular(DOSE, TAU, DAYS)
    pop = population(n, seed=2)
    n_ref = min(n, 20)
    few = {k: v[:n_ref] for k, v in pop.items()}
    for mm in (False, True):
        label = "Michaelis–Menten" if mm else "one-compartment linear"
        if mm:
            model: object = MichaelisMenten()
            params = {"vmax": pop["vmax"], "km": 4.0, "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
            kwargs = {"ode": ODE_OPTS}
        else:
            model = OneCompartment()
            params = {"cl": pop["cl"], "v": pop["v"], "ka": pop["ka"], "f": F, "tlag": TLAG}
            kwargs = {}

        def ours(params=params, model=model, kwargs=kwargs) -> np.ndarray:
            return simulate(model, params, dosing, times, **kwargs)["parent"]

        ours_t, rr_t = [], []
        rr: np.ndarray | str = ""
        ours({k: v[:10] if np.ndim(v) else v for k, v in params.items()})  # warm-up (first-call overheads), untimed
        for _ in range(rounds):
            t, c = timed(ours)
            ours_t.append(t)
            t, rr = timed(lambda mm=mm: roadrunner_loop(pop, mm))
            rr_t.append(t)
        # accuracy of everyone against a tight independent solve of the first n_ref patients
        ref = scipy_loop(few, mm, rtol=1e-12, atol=1e-12, method="DOP853")

        def err(x: np.ndarray) -> str:
            return f"{np.abs(x[:n_ref] - ref).max() / np.abs(ref).max():.1e}"

        print(f"(c) {label}, {n:,} patients, {DAYS} daily oral doses, {times.size} output times"
              f"{'' if rounds == 1 else f'; {rounds} rounds, pgxtwin and libRoadRunner timed alternately'}")
        print(f"    max error vs scipy DOP853 rtol=atol=1e-12 ({n_ref} patients), relative to Cmax:")
        print(f"    pgxtwin       {min(ours_t):8.3f} s  {n / min(ours_t):12,.0f} patients/s  (rounds {_span(ours_t)} s)  error {err(c)}")
        sp_t, sp = timed(lambda mm=mm: scipy_loop(pop, mm))
        print(f"    scipy loop    {sp_t:8.3f} s  {n / sp_t:12,.0f} patients/s  -> pgxtwin {sp_t / min(ours_t):,.0f}x"
              f"  error {err(sp)}")
        if isinstance(rr, str):
            print(f"    libRoadRunner {rr}")
            continue
        ratios = [r / o for o, r in zip(ours_t, rr_t, strict=True)]
        print(f"    libRoadRunner {min(rr_t):8.3f} s  {n / min(rr_t):12,.0f} patients/s  (rounds {_span(rr_t)} s)  error {err(rr)}")
        print(f"    -> pgxtwin {min(rr_t) / min(ours_t):,.1f}x libRoadRunner's throughput (best times; per round "
              f"{_span(ratios, '.1f')}x; issue 3's target >= {10 if mm else 100}x)")


def _span(values: list[float], fmt: str = ".3f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if len(values) > 1 else f"{values[0]:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run (10k / 1k / 50 patients)")
    ap.add_argument("--chunk", type=int, default=2048, help="patients per chunk in (a) (small chunks stay in cache)")
    ap.add_argument("--workers", type=int, default=1, help="threads for the chunks of (a) (no gain measured on 2 cores)")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these parts (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds of pgxtwin and libRoadRunner in (c)")
    args = ap.parse_args()
    n_a, n_b, n_c = (10_000, 1_000, 50) if args.quick else (1_000_000, 100_000, 1_000)
    parts = set(args.only or "abc")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), float64, load average {os.getloadavg()[0]:.1f}")
    if "a" in parts:
        bench_linear_population(n_a, min(args.chunk, n_a), args.workers)
    if "b" in parts:
        bench_mm_population(n_b)
    if "c" in parts:
        bench_peers(n_c, max(1, args.rounds))


if __name__ == "__main__":
    main()

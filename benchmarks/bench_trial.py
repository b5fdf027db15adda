"""In-silico trial benchmark (issue 6): prints figures, asserts nothing.

(a) ``--n`` virtual patients (default 10,000,000) x one arm x 28 days: sertraline 50 mg once daily
    (one-compartment oral model of the drug library, CYP2C19 effects), endpoints target attainment,
    time in window and adverse-reaction incidence (closed-form exposure path), per-patient results
    written to Parquet.  Run on a local Dask cluster with 1 worker, then 2 (processes, 1 thread
    each): wall time of the simulation phase, patients per second, peak memory per worker, and the
    speed-up from 1 to 2 workers.  Cluster start-up and worker imports are timed apart.
    Issue 6's targets: >= 1,000,000 patients/s on 2 cores; speed-up >= 1.6x.
(b) Two processes: ``dask scheduler`` and ``dask worker`` (1 thread) started as subprocesses on
    127.0.0.1, the same trial run with ``--scheduler tcp://127.0.0.1:PORT``, then both stopped.
    The machine's own ceiling is printed beside it: the chunk kernel run in 1 and in 2 bare processes.
(c) Peer: no in-silico trial tool (Simcyp, PK-Sim's population module, mrgsolve) can run here.
    libRoadRunner, a general SBML ODE simulator (the ``bench`` extra), integrates the same
    patients' 28-day course one patient at a time and the same summaries are taken from its last
    day; the ratio compares per-core patient throughput.  Its accuracy is that of its ODE tolerances.

Run: .venv/bin/python benchmarks/bench_trial.py [--n 1000000] [--chunk-size 262144] [--skip-two-process] [--skip-peer]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

DRUG = "sertraline"
DAYS = 28


def trial(n: int) -> dict:
    return {
        "name": "bench-sertraline",
        "seed": 1,
        "duration_days": DAYS,
        "population": {"size": n, "mix": {"european": 0.6, "east_asian": 0.4}},
        "arms": [{"name": "label", "kind": "standard", "drug": DRUG}],
        "endpoints": ["target_attainment", "time_in_window", "adverse_reaction"],
    }


def run(path: Path, out: Path, chunk: int, **where) -> dict:
    from pgxtwin.population.trial import run_trial

    started = time.perf_counter()
    result = run_trial(path, out, chunk_size=chunk, **where)
    wall = time.perf_counter() - started
    manifest = result.manifest
    manifest["execution"]["wall_seconds"] = wall
    size = sum(p.stat().st_size for p in (out / "patients").glob("*.parquet"))
    manifest["execution"]["parquet_mb"] = size / 2**20
    return manifest


def show(label: str, manifest: dict) -> None:
    ex = manifest["execution"]
    peak = ", ".join(f"{v:.0f}" for v in sorted(ex["peak_rss_mb_per_worker"].values()))
    print(
        f"  {label:<22} {manifest['counts']['screened']:>11,} patients  simulation {ex['seconds']:7.2f} s"
        f"  {ex['patients_per_second']:>12,.0f} patients/s  (start-up {ex['startup_seconds']:.1f} s, wall {ex['wall_seconds']:.1f} s)"
        f"  peak RSS per worker {peak} MB  tasks {ex['tasks']}  Parquet {ex['parquet_mb']:.0f} MB"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process(path: Path, out: Path, chunk: int, log: Path) -> dict:
    """``dask scheduler`` + ``dask worker`` as subprocesses, the trial on ``--scheduler``."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with open(log, "w") as sink:
        scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                     stdout=sink, stderr=subprocess.STDOUT)
        worker = subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                                   "--no-dashboard"], stdout=sink, stderr=subprocess.STDOUT)
        try:
            with Client(address, timeout="60s") as client:
                client.wait_for_workers(1, timeout=120)
            return run(path, out, chunk, scheduler=address)
        finally:
            for process in (worker, scheduler):
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _chunks(args: tuple[str, int, int]) -> float:
    """CPU work of ``count`` chunks in this process (no Dask, nothing written): seconds."""
    from pgxtwin.population.trial import prepare, simulate_chunk

    path, size, count = args
    plan, _ = prepare(path)
    simulate_chunk(plan, 0, 0, 1000)  # warm caches
    started = time.perf_counter()
    for k in range(count):
        simulate_chunk(plan, 0, k * size, size)
    return time.perf_counter() - started


def calibrate(path: Path, size: int, count: int) -> float:
    """The machine's own speed-up from 1 to 2 processes running the trial's chunk kernel side by side
    (an upper bound for any scheduler here: it has no serialisation, no writes)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        pool.submit(_chunks, (str(path), 1000, 1)).result()  # start and import before timing
        one = pool.submit(_chunks, (str(path), size, count)).result()
        started = time.perf_counter()
        list(pool.map(_chunks, [(str(path), size, count)] * 2))
        two = time.perf_counter() - started
    return 2 * one / two


def peer(n: int) -> tuple[float, str]:
    """libRoadRunner: patients/s on one core for the same regimen and summaries (or why not)."""
    try:
        import antimony
        import roadrunner
    except ImportError as exc:
        return float("nan"), f"libRoadRunner not installed ({exc}; pip install '.[bench]')"
    from pgxtwin.pk import metrics
    from pgxtwin.pk.drug_model import PatientFactors, drug_model

    model = drug_model(DRUG)
    p = model.individualise(PatientFactors()).parameters
    rng = np.random.default_rng(0)
    cl = p["cl"] * rng.choice([1.0, 0.5, 1.2], size=n)  # a spread of clearances, as the genotypes give
    dose, tau = 50.0, 24.0
    text = f"""
    model pk
      depot' = -ka*depot
      central' = ka*depot - cl*central/v
      C := central/v
      depot = 0; central = 0
      ka = {p['ka']}; v = {p['v']}; cl = {p['cl']}
      next_dose = 0
      E1: at (time >= next_dose): depot = depot + {p['f'] * dose}, next_dose = next_dose + {tau}
    end
    """
    if antimony.loadAntimonyString(text) < 0:
        return float("nan"), f"antimony error {antimony.getLastError()}"
    rr = roadrunner.RoadRunner(antimony.getSBMLString(antimony.getMainModuleName()))
    rr.timeCourseSelections = ["time", "C"]
    window = model.drug.therapeutic_window
    started = time.perf_counter()
    grid = np.linspace(0.0, tau, 25)
    for i in range(n):
        rr.resetAll()
        rr["cl"] = float(cl[i])
        rr.simulate(0.0, (DAYS - 1) * tau, 2)
        last = rr.simulate((DAYS - 1) * tau, DAYS * tau, 25)[:, 1]
        metrics.time_in_window(grid, last[None, :], window.low, window.high)
    seconds = time.perf_counter() - started
    return n / seconds, f"libRoadRunner {roadrunner.__version__} (CVODE, default tolerances), {n:,} patients"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000_000, help="virtual patients (default 10,000,000)")
    parser.add_argument("--chunk-size", type=int, default=262_144)
    parser.add_argument("--peer-n", type=int, default=2000)
    parser.add_argument("--skip-two-process", action="store_true")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"trial: {args.n:,} patients x 1 arm ({DRUG} label regimen) x {DAYS} days; chunks of {args.chunk_size:,}")
    folder = Path(tempfile.mkdtemp(prefix="bench-trial-"))
    try:
        path = folder / "trial.yaml"
        path.write_text(yaml.safe_dump(trial(args.n)))
        results = {}
        print("(a) local cluster (processes, 1 thread each)")
        for workers in (1, 2):
            results[workers] = run(path, folder / f"out-{workers}", args.chunk_size, workers=workers)
            show(f"{workers} worker(s)", results[workers])
            shutil.rmtree(folder / f"out-{workers}")
        speedup = results[1]["execution"]["seconds"] / results[2]["execution"]["seconds"]
        print(f"  speed-up 1 -> 2 workers: {speedup:.2f}x (simulation phase)")
        machine = calibrate(path, args.chunk_size, 4)
        print(f"  this machine's own speed-up for the same chunk kernel in 2 bare processes (no Dask, no writes):"
              f" {machine:.2f}x: the ceiling for any scheduler here")
        if not args.skip_two_process:
            print("(b) two processes: `dask scheduler` + `dask worker --nthreads 1` on 127.0.0.1")
            manifest = two_process(path, folder / "out-tcp", args.chunk_size, folder / "dask.log")
            show("scheduler + 1 worker", manifest)
        if not args.skip_peer:
            print("(c) peer")
            rate, what = peer(args.peer_n)
            ours = results[1]["execution"]["patients_per_second"]
            if np.isfinite(rate):
                print(f"  {what}: {rate:,.0f} patients/s on one core; pgxtwin 1 worker: {ours:,.0f} patients/s"
                      f" -> ratio {ours / rate:,.0f}x")
            else:
                print(f"  no peer run: {what}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Trials on Dask: one local cluster for the module (1 worker, then scaled to 2), results identical
whatever the chunk size and the worker count, the CLI on an existing scheduler, `trial report`."""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pgxtwin.errors import PgxInputError
from pgxtwin.population import execution
from pgxtwin.population.trial import run_trial
from pgxtwin.population.trial_report import report

ROOT = Path(__file__).resolve().parents[2]

TRIAL = {
    "name": "repro",
    "seed": 314,
    "replicates": 2,
    "duration_days": 14,
    "population": {"size": 1500, "mix": {"european": 0.5, "east_asian": 0.3, "latino": 0.2},
                   "inclusion": {"age": [18, 80], "weight_kg": [45, None]}},
    "arms": [
        {"name": "label", "kind": "standard", "drug": "escitalopram"},
        {"name": "guided", "kind": "genotype_guided", "drug": "escitalopram"},
        {"name": "cpic", "kind": "cpic", "drug": "escitalopram", "alternative": "sertraline"},
    ],
    "endpoints": ["target_attainment", "time_in_window", "adverse_reaction"],
}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as local:
        yield local


@pytest.fixture(scope="module")
def trial_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trial") / "trial.yaml"
    path.write_text(yaml.safe_dump(TRIAL))
    return path


def patients(folder: Path) -> pd.DataFrame:
    table = pa.concat_tables(pq.read_table(p) for p in sorted((folder / "patients").glob("part-*.parquet")))
    frame = table.to_pandas()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    return frame.sort_values(["replicate", "arm", "patient_id"]).reset_index(drop=True)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from pgxtwin.cli_trial import trial_app; trial_app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, COLUMNS="220"))


def test_results_do_not_depend_on_chunks_or_workers(cluster, trial_file: Path, tmp_path: Path) -> None:
    from distributed import Client

    one = run_trial(trial_file, tmp_path / "one", scheduler=cluster.scheduler_address, chunk_size=1000)
    assert len(cluster.scheduler_info["workers"]) == 1
    cluster.scale(2)
    with Client(cluster.scheduler_address) as client:
        client.wait_for_workers(2, timeout=120)
    # the second run through the CLI, on the same (now two-worker) scheduler
    result = run_cli("run", str(trial_file), "-o", str(tmp_path / "two"), "--scheduler", cluster.scheduler_address,
                     "--chunk-size", "1500")
    assert result.returncode == 0, result.stderr
    assert "target attainment (PTA)" in result.stdout and "CYP2C19 Poor Metabolizer" in result.stdout

    a, b = patients(tmp_path / "one"), patients(tmp_path / "two")
    assert len(a) == one.manifest["counts"]["rows"] == 3 * one.manifest["counts"]["enrolled"]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert one.manifest["execution"]["tasks"] == 4 and two["execution"]["tasks"] == 2
    assert len(two["execution"]["peak_rss_mb_per_worker"]) == 2
    assert all(v > 0 for v in two["execution"]["peak_rss_mb_per_worker"].values())
    # summaries agree up to the order of floating-point sums; counts exactly
    rows_a = json.loads((tmp_path / "one" / "summary.json").read_text())["rows"]
    rows_b = json.loads((tmp_path / "two" / "summary.json").read_text())["rows"]
    assert [(r["arm"], r["stratum"], r["measure"], r["n"]) for r in rows_a] == [(r["arm"], r["stratum"], r["measure"], r["n"]) for r in rows_b]
    for x, y in zip(rows_a, rows_b):
        assert x["estimate"] == pytest.approx(y["estimate"], rel=1e-12, abs=1e-15)

    # `trial report` recomputes the same summary from the Parquet parts
    summary = (tmp_path / "one" / "summary.csv").read_text()
    (tmp_path / "one" / "summary.csv").unlink()
    (tmp_path / "one" / "report.html").unlink()
    report(tmp_path / "one")
    assert (tmp_path / "one" / "summary.csv").read_text() == summary
    page = (tmp_path / "one" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "http://" not in page.replace("http://www.w3.org", "") and "<script" not in page
    assert (tmp_path / "one" / "plots" / "endpoints.png").stat().st_size > 0


def test_rerun_replaces_a_results_folder_and_refuses_other_folders(cluster, trial_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = run_trial(trial_file, out, scheduler=cluster.scheduler_address, chunk_size=3000)
    (out / "patients" / "stale.txt").write_text("from an earlier run")
    second = run_trial(trial_file, out, scheduler=cluster.scheduler_address, chunk_size=3000)
    assert first.manifest["counts"] == second.manifest["counts"]
    assert not (out / "patients" / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["results"]  # no partial or old folders left
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(PgxInputError, match="exists and is not a trial results folder"):
        run_trial(trial_file, other, scheduler=cluster.scheduler_address)
    assert (other / "todo.txt").read_text() == "keep me"


def test_chunks_cover_every_patient_of_every_replicate() -> None:
    jobs = execution.plan_chunks(2500, 2, 1000)
    assert [(j.replicate, j.start, j.size) for j in jobs] == [
        (0, 0, 1000), (0, 1000, 1000), (0, 2000, 500), (1, 0, 1000), (1, 1000, 1000), (1, 2000, 500)]
    assert len({j.name for j in jobs}) == len(jobs)
    with pytest.raises(PgxInputError, match="--chunk-size: must be at least 1"):
        execution.plan_chunks(10, 1, 0)


def test_a_failing_task_stops_the_run_and_leaves_no_part(cluster, tmp_path: Path) -> None:
    from distributed import Client

    failing = functools.partial(operator.truediv)  # three arguments: TypeError inside the worker
    with Client(cluster.scheduler_address) as client, pytest.raises(TypeError):
        execution.run_parts(client, execution.plan_chunks(10, 1, 5), build=failing, summarise=len, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_parts_are_written_atomically(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2, 3]})
    execution.write_part(table, tmp_path / "part-a.parquet")
    assert pq.read_table(tmp_path / "part-a.parquet").equals(table)
    assert [p.name for p in tmp_path.iterdir()] == ["part-a.parquet"]
    assert [name for name, _ in execution.read_parts(tmp_path)] == ["part-a.parquet"]

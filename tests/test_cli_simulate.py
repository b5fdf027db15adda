"""`pgxtwin simulate`, `exposure-ratio` and `drugs` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pgxtwin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgxtwin.cli", *args], capture_output=True, text=True, timeout=300)


def test_simulate_typical_patient_json_contract():
    run = pgxtwin("simulate", "escitalopram", "--dose", "10 mg", "--every", "24h", "--days", "14", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["drug"] == "escitalopram"
    curve = out["analytes"]["escitalopram"]
    assert curve["unit"] == "mg/L"
    assert curve["median"] == curve["p05"] == curve["p95"]  # one typical patient
    assert len(curve["time_h"]) == len(curve["median"])
    assert out["metrics"]["escitalopram"]["css_avg_mg_per_l"]["median"] > 0


def test_poor_metabolizer_population_has_higher_exposure_and_an_interval(tmp_path):
    common = ["simulate", "escitalopram", "--dose", "10 mg", "--days", "14", "--n", "300", "--seed", "3", "--json"]
    normal = json.loads(pgxtwin(*common, "--phenotype", "CYP2C19=Normal Metabolizer").stdout)
    poor = pgxtwin(*common, "--phenotype", "CYP2C19=Poor Metabolizer", "--plot", str(tmp_path / "p.png"))
    assert poor.returncode == 0, poor.stderr
    poor_out = json.loads(poor.stdout)
    m_normal = normal["metrics"]["escitalopram"]["css_avg_mg_per_l"]
    m_poor = poor_out["metrics"]["escitalopram"]["css_avg_mg_per_l"]
    assert m_poor["median"] > 2.5 * m_normal["median"]
    assert m_poor["p05"] < m_poor["median"] < m_poor["p95"]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_times_option_and_phenoconversion():
    run = pgxtwin(
        "simulate", "metoprolol", "--dose", "100 mg", "--every", "24h", "--days", "2", "--times", "0,1,2.5,24",
        "--diplotype", "CYP2D6=*1/*1", "--with", "paroxetine", "--json",
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["analytes"]["metoprolol"]["time_h"] == [0.0, 1.0, 2.5, 24.0]
    status = out["phenotypes"]["CYP2D6"]
    assert status["genotype_phenotype"] == "Normal Metabolizer"
    assert status["phenotype"] == "Poor Metabolizer"


def test_exposure_ratio_json():
    run = pgxtwin("exposure-ratio", "warfarin", "--gene", "CYP2C9", "--test", "*3/*3", "--reference", "*1/*1", "--metric", "cl", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert 0 < out["ratio"] < 1


def test_drugs_lists_sources():
    run = pgxtwin("drugs", "--json")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert {"clopidogrel", "warfarin", "escitalopram"} <= {r["drug"] for r in rows}
    assert all(r["sources"] for r in rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "clopidogrl", "--dose", "75 mg"], "did you mean clopidogrel"),
        (["simulate", "clopidogrel", "--dose", "75 g"], "implausible"),
        (["simulate", "clopidogrel", "--dose", "seventy mg"], "--dose"),
        (["simulate", "clopidogrel", "--dose", "75 mg", "--times", "-1,2"], "negative"),
        (["simulate", "clopidogrel", "--dose", "75 mg", "--phenotype", "CYP2C19=Fast Metabolizer"], "unknown phenotype"),
        (["simulate", "clopidogrel", "--dose", "0.1 mg/kg"], "give --weight"),
        (["exposure-ratio", "warfarin", "--gene", "CYP2C9", "--test", "*1/*99", "--reference", "*1/*1"], "unknown diplotype"),
    ],
)
def test_bad_input_is_a_one_line_error(args, needle):
    run = pgxtwin(*args)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert needle in run.stderr, run.stderr


def test_estimate_contract_and_bad_csv(tmp_path):
    doses = tmp_path / "doses.csv"
    doses.write_text("time_h,amount_mg\n" + "".join(f"{24 * k},10\n" for k in range(5)))
    levels = tmp_path / "levels.csv"
    levels.write_text("time_h,concentration_mg_per_l\n95.5,0.031\n")
    run = pgxtwin("estimate", "escitalopram", "--doses", str(doses), "--observations", str(levels), "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    cl = out["parameters"]["cl"]
    assert {"estimate", "p05", "p95", "prior"} <= set(cl)
    assert cl["p05"] < cl["estimate"] < cl["p95"]
    assert cl["estimate"] < cl["prior"]  # a level above the typical prediction means slower clearance
    pred = out["prediction"]
    assert pred["p05"] < pred["next_trough_mg_per_l"] < pred["p95"]
    levels.write_text("time_h,concentration_mg_per_l\n95.5,-0.2\n")
    bad = pgxtwin("estimate", "escitalopram", "--doses", str(doses), "--observations", str(levels))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and f"{levels}:2" in bad.stderr

"""`pgxtwin twin ...` over a real SQLite store file (PGXTWIN_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PGXTWIN_DATABASE_URL=f"sqlite:///{db}")
    return subprocess.run([sys.executable, "-m", "pgxtwin.cli", "twin", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def test_twin_lifecycle_versions_and_evaluation(tmp_path):
    db = tmp_path / "twins.db"
    created = run(db, "create", "--patient-id", "p-1", "--vcf", "examples/demo_patient.vcf", "--sex", "F",
                  "--age", "64", "--weight", "72", "--creatinine", "0.9")
    assert created.returncode == 0, created.stderr
    assert run(db, "medicate", "p-1", "--drug", "escitalopram", "--dose", "10 mg", "--every", "24h",
               "--start", "2026-11-20T08:00:00+00:00", "--given", "3").returncode == 0
    observed = run(db, "observe", "p-1", "--drug", "escitalopram", "--concentration", "25", "--unit", "ng/mL",
                   "--hours-after-first-dose", "71.5")
    assert observed.returncode == 0, observed.stderr

    history = run(db, "history", "p-1")
    assert history.returncode == 0 and "escitalopram concentration 0.025 mg/L" in history.stdout
    # a new level is a re-estimation: its posterior is an event of its own
    assert "estimate for escitalopram" in history.stdout
    env_run = run(db, "show", "p-1", "--json")
    assert json.loads(env_run.stdout)["posteriors"]["escitalopram"]["n_observations"] == 1

    past = json.loads(run(db, "show", "p-1", "--version", "2", "--json").stdout)
    now = json.loads(run(db, "show", "p-1", "--json").stdout)
    assert past["version"] == 2 and not past["medications"]
    assert now["version"] > past["version"] and now["observations"]

    evaluation = run(db, "evaluate", "p-1", "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    (ev,) = json.loads(evaluation.stdout)
    assert ev["drug"] == "escitalopram" and ev["verdict"] in ("ok", "adjust_dose")
    assert any("measured level" in n for n in ev["notes"])

    new = json.loads(run(db, "evaluate", "p-1", "--drug", "clopidogrel", "--dose", "75 mg", "--json").stdout)
    assert new[0]["verdict"] == "avoid"  # the demo patient is a CYP2C19 intermediate metabolizer


def test_bad_input_writes_nothing(tmp_path):
    db = tmp_path / "twins.db"
    assert run(db, "create", "--patient-id", "p-2").returncode == 0
    before = json.loads(run(db, "show", "p-2", "--json").stdout)["version"]
    bad = run(db, "observe", "p-2", "--drug", "escitalopram", "--concentration", "-3", "--time", "2026-11-20T08:00:00+00:00")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "negative" in bad.stderr
    heavy = run(db, "create", "--patient-id", "p-3", "--weight", "700")
    assert heavy.returncode != 0 and "weight" in heavy.stderr and "Traceback" not in heavy.stderr
    assert json.loads(run(db, "show", "p-2", "--json").stdout)["version"] == before
    missing = run(db, "show", "nobody")
    assert missing.returncode != 0 and "no twin for patient 'nobody'" in missing.stderr

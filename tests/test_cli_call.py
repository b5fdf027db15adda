"""`pgxtwin call` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo_patient.vcf"
GENE_KEYS = {"status", "diplotypes", "phenotype", "activity_score", "alleles", "missing_positions", "unexpected_variants", "notes"}


def pgxtwin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgxtwin.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_demo_table_shows_the_example_patients_phenotypes():
    run = pgxtwin("call", str(DEMO))
    assert run.returncode == 0, run.stderr
    for text in ("CYP2C19", "*2/*17", "CYP2C9", "*1/*3", "SLCO1B1", "Decreased Function", "TPMT", "*1/*3A", "knowledge base pypgx-"):
        assert text in run.stdout


def test_json_contract():
    run = pgxtwin("call", str(DEMO), "--format", "json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert {"source", "sample", "assembly", "knowledge_base", "genes"} <= set(result)
    assert result["sample"] == "DEMO-001" and result["assembly"] == "GRCh38"
    gene = result["genes"]["CYP2C19"]
    assert GENE_KEYS <= set(gene)
    assert gene["status"] == "called" and gene["diplotypes"][0] == "*2/*17"
    assert gene["phenotype"] == "Intermediate Metabolizer"
    assert {a["name"] for a in gene["alleles"]} == {"*2", "*17"}
    assert result["genes"]["CYP2C9"]["activity_score"] == 1.0


def test_several_files_stream_json_lines_and_a_bad_file_fails_alone(tmp_path):
    other = tmp_path / "copy.vcf"
    shutil.copy(DEMO, other)
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a VCF\n")
    run = pgxtwin("call", str(DEMO), str(bad), str(other), "--format", "json", "--gene", "CYP2C19")
    assert run.returncode == 1
    lines = run.stdout.strip().splitlines()
    assert [json.loads(line)["source"] for line in lines] == [str(DEMO), str(other)]
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not a VCF" in errors[0]


def test_output_file_and_jobs(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"p{i}.vcf")
        shutil.copy(DEMO, files[-1])
    out = tmp_path / "calls.jsonl"
    run = pgxtwin("call", *map(str, files), "--format", "json", "--jobs", "2", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["source"] for line in out.read_text().splitlines()] == list(map(str, files))
    assert not list(tmp_path.glob(".calls.jsonl.*"))  # no temporary left behind


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sample", "NOBODY"], "sample 'NOBODY' is not in the file"),
        (["--gene", "CYP2D6"], "not callable from a VCF"),
        (["--assembly", "GRCh37"], "looks like GRCh38"),
    ],
)
def test_user_mistakes_are_one_line_errors(args, needle):
    run = pgxtwin("call", str(DEMO), *args)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert needle in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) == 1


def test_unknown_outside_call_gene_is_reported_with_file_and_line(tmp_path):
    tsv = tmp_path / "outside.tsv"
    tsv.write_text("CYP2D6\t*1/*4\nNOTAGENE\t*1/*1\n")
    run = pgxtwin("call", str(DEMO), "--outside-calls", str(tsv))
    assert run.returncode == 2
    assert f"{tsv}:2: unknown gene 'NOTAGENE'" in run.stderr
    assert "Traceback" not in run.stderr


def test_outside_calls_are_merged(tmp_path):
    tsv = tmp_path / "outside.tsv"
    tsv.write_text("# from a CNV-aware caller\nCYP2D6\tCYP2D6*1/CYP2D6*4\nHLA-B\t*57:01/*08:01\n")
    run = pgxtwin("call", str(DEMO), "--outside-calls", str(tsv), "--format", "json")
    assert run.returncode == 0, run.stderr
    genes = json.loads(run.stdout)["genes"]
    assert genes["CYP2D6"]["status"] == "outside_call"
    assert genes["CYP2D6"]["diplotypes"] == ["*1/*4"]
    assert genes["CYP2D6"]["phenotype"] == "Intermediate Metabolizer"
    assert genes["HLA-B"]["diplotypes"] == ["*08:01/*57:01"]

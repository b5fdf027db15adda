"""Trial files: schema and library checks, each error naming the file, the YAML key and the reason,
before any work starts; the CLI's one-line failures."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pgxtwin.errors import PgxInputError
from pgxtwin.population.trial import plan_trial, prepare
from pgxtwin.population.trial_spec import ARM_KINDS, ENDPOINTS, load_trial, parse_trial

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "trial_escitalopram.yaml"

BASE = {
    "name": "t",
    "seed": 1,
    "duration_days": 28,
    "population": {"size": 100, "mix": {"european": 0.7, "east_asian": 0.3}},
    "arms": [{"name": "label", "kind": "standard", "drug": "escitalopram"}],
    "endpoints": ["target_attainment"],
}


def spec(**changes) -> dict:
    out = copy.deepcopy(BASE)
    out.update(copy.deepcopy(changes))
    return out


def error_of(data: dict, plan: bool = True) -> str:
    with pytest.raises(PgxInputError) as info:
        parsed = parse_trial(data, "trial.yaml")
        if plan:
            plan_trial(parsed, "trial.yaml")
    return str(info.value)


def test_example_trial_loads_and_plans() -> None:
    plan, chunk = prepare(EXAMPLE)
    assert [a.kind for a in plan.spec.arms] == ["standard", "genotype_guided", "cpic", "alternative"]
    assert plan.genes == ("CYP2C19",) and plan.stratify_by == ("CYP2C19",)
    assert chunk == 262_144


def test_unknown_arm_kind_names_the_key_and_the_choices() -> None:
    data = spec(arms=[BASE["arms"][0], {"name": "x", "kind": "magic", "drug": "escitalopram"}])
    assert error_of(data, plan=False) == (
        "trial.yaml: arms[1].kind: unknown arm kind 'magic' (expected one of " + ", ".join(ARM_KINDS) + ")"
    )


def test_unknown_endpoint_names_the_key() -> None:
    message = error_of(spec(endpoints=["target_attainment", "cure"]), plan=False)
    assert message == "trial.yaml: endpoints[1]: unknown endpoint 'cure' (expected one of " + ", ".join(ENDPOINTS) + ")"


def test_unknown_drug_suggests_names() -> None:
    message = error_of(spec(arms=[{"name": "a", "kind": "standard", "drug": "escitalopam"}]))
    assert message.startswith("trial.yaml: arms[0].drug: unknown drug 'escitalopam'") and "escitalopram" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"population": {"size": 100, "mix": {"european": 0.5, "east_asian": 0.4}}}, "trial.yaml: population.mix: frequencies sum to 0.9, not 1"),
        ({"population": {"size": 0, "mix": {"european": 1.0}}}, "trial.yaml: population.size: must be at least 1 (got 0)"),
        ({"replicates": 0}, "trial.yaml: replicates: must be at least 1 (got 0)"),
        ({"duration_days": 0}, "trial.yaml: duration_days: must be greater than 0 (got 0)"),
        ({"duration_days": -3.5}, "trial.yaml: duration_days: must be greater than 0 (got -3.5)"),
        ({"chunk_size": 0}, "trial.yaml: chunk_size: must be at least 1 (got 0)"),
        ({"arms": []}, "trial.yaml: arms: must list at least 1 item(s)"),
        ({"colour": "blue"}, "trial.yaml: colour: unknown key"),
    ],
)
def test_impossible_values_name_the_key(changes: dict, expected: str) -> None:
    assert error_of(spec(**changes), plan=False) == expected


def test_missing_keys_and_wrong_shapes() -> None:
    data = spec()
    del data["arms"]
    assert error_of(data, plan=False) == "trial.yaml: arms: required key is missing"
    assert "arms[0]: alternative applies to cpic arms" in error_of(
        spec(arms=[{"name": "a", "kind": "standard", "drug": "escitalopram", "alternative": "sertraline"}]), plan=False)
    assert "arms: arm name 'a' is used twice" in error_of(
        spec(arms=[{"name": "a", "kind": "standard", "drug": "escitalopram"}] * 2), plan=False)


def test_unknown_population_group() -> None:
    message = error_of(spec(population={"size": 10, "mix": {"European": 1.0}}))
    assert message.startswith("trial.yaml: population.mix.European: unknown population group (known: european,")


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        # clopidogrel's library file has no therapeutic window
        ({"arms": [{"name": "a", "kind": "standard", "drug": "clopidogrel"}], "endpoints": ["time_in_window"]},
         "endpoints[0]", "time_in_window for arms[0].drug (clopidogrel): needs the library's therapeutic_window"),
        ({"endpoints": ["target_attainment", "efficacy_proxy"]},
         "endpoints[1]", "efficacy_proxy for arms[0].drug (escitalopram): needs a prodrug"),
        ({"arms": [{"name": "a", "kind": "standard", "drug": "clopidogrel"}], "endpoints": ["adverse_reaction"]},
         "endpoints[0]", "needs the library's toxicity_thresholds, which clopidogrel does not have"),
        # CPIC recommends another drug for CYP2C19 rapid and ultrarapid metabolizers
        ({"arms": [{"name": "c", "kind": "cpic", "drug": "escitalopram"}]},
         "arms[0].alternative", "required: CPIC recommends another drug than escitalopram for CYP2C19"),
        # the population has no CYP2B6 allele frequencies
        ({"arms": [{"name": "a", "kind": "standard", "drug": "efavirenz"}]},
         "arms[0].drug", "efavirenz needs CYP2B6 genotypes, but the population has no CYP2B6 allele frequencies"),
        # citalopram's library has no sourced intermediate-metabolizer effect
        ({"arms": [{"name": "a", "kind": "standard", "drug": "citalopram"}]},
         "arms[0].drug", "exclude them with population.inclusion.phenotypes.CYP2C19"),
        ({"population": {"size": 10, "mix": {"european": 1.0}, "inclusion": {"phenotypes": {"CYP2C19": ["Slow"]}}}},
         "population.inclusion.phenotypes.CYP2C19[0]", "unknown CYP2C19 phenotype 'Slow'"),
        ({"stratify_by": ["CYP2B6"]}, "stratify_by[0]", "no CYP2B6 allele frequencies"),
        ({"arms": [{"name": "a", "kind": "standard", "drug": "escitalopram", "dose": "10 g"}]},
         "arms[0].dose", "'10 g' is implausible for escitalopram"),
        ({"arms": [{"name": "a", "kind": "standard", "drug": "escitalopram", "dose": "ten"}]},
         "arms[0].dose", "dose 'ten' cannot be parsed"),
    ],
)
def test_library_checks_name_the_key(changes: dict, key: str, reason: str) -> None:
    message = error_of(spec(**changes))
    assert message.startswith(f"trial.yaml: {key}: "), message
    assert reason in message, message


def test_inclusion_criteria_can_exclude_unsourced_phenotypes() -> None:
    sourced = ["Normal Metabolizer", "Poor Metabolizer", "Likely Poor Metabolizer"]
    data = spec(arms=[{"name": "a", "kind": "standard", "drug": "citalopram"}],
                population={"size": 10, "mix": {"european": 1.0}, "inclusion": {"phenotypes": {"CYP2C19": sourced}}})
    plan = plan_trial(parse_trial(data, "trial.yaml"), "trial.yaml")
    assert plan.genes == ("CYP2C19",)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PgxInputError, match=r"missing.yaml: no such file"):
        load_trial(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PgxInputError, match=r"bad.yaml:\d+: invalid YAML"):
        load_trial(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PgxInputError, match="bad.yaml: a trial file is a YAML mapping"):
        load_trial(bad)


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(["replicates", "duration_days", "chunk_size", "population.size"]),
    value=st.integers(min_value=-10**9, max_value=0),
)
def test_non_positive_sizes_always_name_their_key(key: str, value: int) -> None:
    data = spec()
    if key == "population.size":
        data["population"]["size"] = value
    else:
        data[key] = value
    assert error_of(data, plan=False).startswith(f"trial.yaml: {key}: must be ")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=4))
def test_frequencies_must_sum_to_one(shares: list[float]) -> None:
    names = ["european", "east_asian", "latino", "central_south_asian"]
    data = spec(population={"size": 10, "mix": dict(zip(names, shares))})
    total = sum(shares)
    if abs(total - 1.0) > 1e-6:
        assert error_of(data, plan=False).startswith("trial.yaml: population.mix: frequencies sum to ")
    else:
        parse_trial(data, "trial.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from pgxtwin.cli_trial import trial_app; trial_app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, COLUMNS="200"))


def test_cli_bad_trial_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "trial.yaml"
    bad.write_text(yaml.safe_dump(spec(arms=[{"name": "a", "kind": "magic", "drug": "escitalopram"}])))
    out = tmp_path / "results"
    result = run_cli("run", str(bad), "-o", str(out))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "arms[0].kind: unknown arm kind 'magic'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(spec()))
    result = run_cli("run", str(good), "-o", str(out), "--chunk-size", "0")
    assert result.returncode != 0 and "--chunk-size: must be at least 1 (got 0)" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
    result = run_cli("report", str(tmp_path))
    assert result.returncode != 0 and "is not a trial results folder" in result.stderr

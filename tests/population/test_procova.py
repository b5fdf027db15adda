"""PROCOVA: type-I error and power by simulation, the twin's prognostic score, the trial file's checks and
the ``trial analyse`` command end to end."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from typer.testing import CliRunner

from pgxtwin.cli_procova import analyse
from pgxtwin.errors import PgxInputError
from pgxtwin.pk.drug_model import drug_model
from pgxtwin.population.procova import MIN_PER_ARM, ControlRegimen, analyse_trial, procova, read_trial

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "procova_trial.csv"
REPLICATES, N, ALPHA = 400, 100, 0.05
# 99% central interval of the number of rejections out of REPLICATES when the true rate is ALPHA
REJECTIONS_99 = (stats.binom.ppf(0.005, REPLICATES, ALPHA), stats.binom.ppf(0.995, REPLICATES, ALPHA))


def simulate_trials(rho: float, effect: float, seed: int, *, skewed: bool = False,
                    replicates: int = REPLICATES) -> tuple[np.ndarray, ...]:
    """``replicates`` two-arm trials of N (half treated): each participant has a true control prognosis P,
    the twin predicts an affine, miscalibrated function of P (3 + 0.5 P), and corr(score, control outcome)
    is ``rho``.  ``skewed``: a log-normal, heteroscedastic outcome whose treated arm is more variable
    (same mean): the linear model is misspecified and the test must still hold its level."""
    rng = np.random.default_rng(seed)
    treated = np.tile(np.arange(N) >= N // 2, (replicates, 1))
    prognosis = rng.standard_normal((replicates, N))
    noise = rng.standard_normal((replicates, N))
    control = 10.0 + 2.0 * (rho * prognosis + np.sqrt(1.0 - rho**2) * noise)
    if skewed:
        control = np.exp(prognosis) + 0.5 * noise
        control = control + treated * 1.5 * rng.standard_normal((replicates, N))
    outcome = control + effect * treated
    score = 3.0 + 0.5 * prognosis
    return outcome, treated, score


@lru_cache(maxsize=None)
def rejections(rho: float, effect: float, seed: int, skewed: bool = False, replicates: int = REPLICATES) -> dict[str, np.ndarray]:
    """Per replicate: p-values and estimates of both analyses, and the reported equivalent n."""
    outcome, treated, score = simulate_trials(rho, effect, seed, skewed=skewed, replicates=replicates)
    fits = [procova(y, t, s) for y, t, s in zip(outcome, treated, score)]
    return {
        "p_adjusted": np.array([f.adjusted.p_value for f in fits]),
        "p_unadjusted": np.array([f.unadjusted.p_value for f in fits]),
        "adjusted": np.array([f.adjusted.estimate for f in fits]),
        "unadjusted": np.array([f.unadjusted.estimate for f in fits]),
        "n_equivalent": np.array([f.n_equivalent_unadjusted for f in fits], dtype=float),
        "covered": np.array([f.adjusted.ci_low <= effect <= f.adjusted.ci_high for f in fits]),
    }


@pytest.mark.parametrize(("rho", "skewed", "seed"), [(0.8, False, 11), (0.0, False, 12), (0.0, True, 13)],
                         ids=["good-twin", "useless-twin", "skewed-heteroscedastic"])
def test_type_one_error_stays_nominal_with_and_without_the_twin(rho, skewed, seed):
    sims = rejections(rho, 0.0, seed, skewed)
    low, high = REJECTIONS_99
    for key in ("p_adjusted", "p_unadjusted"):
        rejected = int((sims[key] < ALPHA).sum())
        assert low <= rejected <= high, f"{key}: {rejected}/{REPLICATES} rejections (99% bounds {low:g}-{high:g})"
    # and the 95% interval covers the true (null) effect as often as it should
    assert low <= int((~sims["covered"]).sum()) <= high


def test_a_good_twin_raises_power_and_a_useless_one_costs_almost_nothing():
    # effect 0.8 with outcome SD 2: an unadjusted trial of 100 has power ≈ Φ(0.8/0.4 − 1.96) ≈ 0.5
    good = rejections(0.8, 0.8, 21)
    power_adjusted = (good["p_adjusted"] < ALPHA).mean()
    power_unadjusted = (good["p_unadjusted"] < ALPHA).mean()
    assert 0.4 <= power_unadjusted <= 0.62
    assert power_adjusted >= power_unadjusted + 0.25
    # the power an unadjusted trial would have with variance shrunk by 1 − ρ² (Schuler 2021), ± 3 MC SE
    expected = stats.norm.cdf(0.8 / (0.4 * np.sqrt(1 - 0.8**2)) - stats.norm.ppf(1 - ALPHA / 2))
    assert abs(power_adjusted - expected) <= 3 * np.sqrt(expected * (1 - expected) / REPLICATES)

    useless = rejections(0.0, 0.8, 22)
    assert (useless["p_adjusted"] < ALPHA).mean() >= (useless["p_unadjusted"] < ALPHA).mean() - 0.03


def test_sample_size_formula_matches_the_simulated_variance_ratio():
    rho, replicates = 0.8, 4 * REPLICATES
    sims = rejections(rho, 0.8, 31, replicates=replicates)
    formula = 1.0 / (1.0 - rho**2)  # n_unadjusted / n for equal power
    simulated = sims["unadjusted"].var(ddof=1) / sims["adjusted"].var(ddof=1)
    # the bootstrap SE of this ratio is ~3.5% at 1600 replicates (7% at 400): 10% is ~3 SE
    assert simulated == pytest.approx(formula, rel=0.10)
    # each trial's own figure (ρ from its 50 controls) centres on the formula too
    assert np.median(sims["n_equivalent"]) / N == pytest.approx(formula, rel=0.1)
    # both estimators are unbiased
    for key in ("adjusted", "unadjusted"):
        assert abs(sims[key].mean() - 0.8) < 3 * sims[key].std(ddof=1) / np.sqrt(replicates)


def test_procova_matches_least_squares_and_hc3_by_hand():
    rng = np.random.default_rng(5)
    t = np.arange(40) % 2 == 1
    s = rng.normal(size=40)
    y = 1.0 + 0.7 * t + 2.0 * s + rng.normal(size=40) * (1 + t)
    result = procova(y, t, s)
    x = np.column_stack([np.ones(40), t, s])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    bread = np.linalg.inv(x.T @ x)
    leverage = np.einsum("ij,jk,ik->i", x, bread, x)
    residual = y - x @ beta
    hc3 = bread @ (x.T * (residual / (1 - leverage)) ** 2) @ x @ bread
    assert result.adjusted.estimate == pytest.approx(beta[1])
    assert result.adjusted.se == pytest.approx(np.sqrt(hc3[1, 1]))
    assert result.score_coefficient == pytest.approx(beta[2])
    assert result.rho_control == pytest.approx(np.corrcoef(s[~t], y[~t])[0, 1])
    assert result.n_equivalent_unadjusted == pytest.approx(40 / (1 - result.rho_control**2))


# --- the twin's prognostic score -------------------------------------------------------------------

def test_twin_score_is_the_typical_individual_prediction_per_phenotype():
    regimen = ControlRegimen.resolve("clopidogrel", "75 mg", "24h", 14, "auc_tau", "clopidogrel-H4")
    trial = read_trial(EXAMPLE, regimen=regimen)
    phenotypes = [line.split(",")[3] for line in EXAMPLE.read_text().splitlines() if not line.startswith("#")][1:]
    by_phenotype = {p: trial.score[[q == p for q in phenotypes]] for p in set(phenotypes)}
    for scores in by_phenotype.values():  # the clopidogrel model uses only CYP2C19: one prediction per phenotype
        assert np.ptp(scores) == 0
    normal = by_phenotype["Normal Metabolizer"][0]
    # H4 AUCτ at steady state = fm·dose/CL_m (linear model, F = 1): the library's values and its CYP2C19
    # factors on fm carry through to the score
    drug = drug_model("clopidogrel").drug
    (effect,) = drug.genotype_effects
    assert effect.parameter == "fm"
    for phenotype in ("Poor Metabolizer", "Intermediate Metabolizer", "Rapid Metabolizer"):
        ratio = by_phenotype[phenotype][0] / normal
        assert ratio == pytest.approx(effect.factors[phenotype].value, rel=1e-3)
    assert normal == pytest.approx(drug.parameters["fm"].value * 75 / drug.parameters["cl_m"].value, rel=1e-3)


# --- the command ----------------------------------------------------------------------------------

def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    app.command("analyse")(analyse)
    return app


def run(*args: str):
    return CliRunner().invoke(_app(), ["analyse", *args])


TWIN = ["--drug", "clopidogrel", "--dose", "75 mg", "--every", "24h", "--metric", "auc_tau", "--analyte", "clopidogrel-H4"]


def test_command_analyses_the_example_trial_with_the_twin():
    result = run(str(EXAMPLE), *TWIN, "--log", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["n"], out["n_control"], out["n_treatment"], out["scale"]) == (40, 20, 20, "log")
    assert out["prognostic_score"].startswith("twin: clopidogrel 75 mg every 24 h")
    assert out["rho_control"] > 0.5
    assert out["effect"]["se"] < out["unadjusted_effect"]["se"]
    assert out["n_equivalent_unadjusted"] == pytest.approx(40 / (1 - out["rho_control"] ** 2))
    assert out["n_equivalent_unadjusted_empirical"] > 40
    # the example's treatment arm got 150 mg instead of 75 mg: a linear model doubles H4 exposure
    assert out["effect"]["ratio_ci_low"] <= 2.0 <= out["effect"]["ratio_ci_high"]
    assert out["effect"]["p_value"] < out["unadjusted_effect"]["p_value"]

    table = run(str(EXAMPLE), *TWIN, "--log")
    assert table.exit_code == 0
    assert "PROCOVA (twin-adjusted)" in table.stdout and "Unadjusted" in table.stdout and "1 − ρ²" in table.stdout


def _write(path: Path, rows: list[str], header: str = "participant_id,arm,outcome,prognostic_score") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _scored_rows(n_per_arm: int = 12) -> list[str]:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(2 * n_per_arm):
        score = rng.normal(10, 2)
        rows.append(f"p{i},{'treatment' if i % 2 else 'control'},{score + rng.normal() + 3.0 * (i % 2):.4f},{score:.4f}")
    return rows


def test_command_with_a_given_prognostic_score(tmp_path):
    trial = _write(tmp_path / "scored.csv", _scored_rows())
    result = run(str(trial), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["prognostic_score"] == "prognostic_score" and out["scale"] == "linear"
    assert "ratio" not in out["effect"]
    assert out["rho_control"] > 0.6 and out["effect"]["se"] < out["unadjusted_effect"]["se"]
    assert out["effect"]["ci_low"] <= 3.0 <= out["effect"]["ci_high"] and out["effect"]["ci_low"] > 0


def _bad(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """A broken trial file and what its error must say."""
    rows = _scored_rows()
    header = "participant_id,arm,outcome,prognostic_score"
    if case == "missing-column":
        header, rows = "participant_id,arm,prognostic_score", [",".join(r.split(",")[:2] + r.split(",")[3:]) for r in rows]
        expect = ["missing column(s) outcome"]
    elif case == "non-numeric-outcome":
        rows[4] = "p4,control,high,10.0"
        expect = [":6:", "column outcome", "'high' is not a number"]
    elif case == "three-arms":
        rows[3] = rows[3].replace("treatment", "placebo")
        expect = ["exactly two arms, found 3"]
    elif case == "one-arm":
        rows = [r.replace("treatment", "control") for r in rows]
        expect = ["exactly two arms, found 1"]
    elif case == "no-control-arm":
        rows = [r.replace("control", "standard") for r in rows]
        expect = ["no arm named 'control'"]
    elif case == "too-few":
        rows = rows[: 2 * (MIN_PER_ARM - 1)]
        expect = ["too few participants", f"at least {MIN_PER_ARM} per arm"]
    elif case == "constant-score":
        rows = [",".join(r.split(",")[:3] + ["5"]) for r in rows]
        expect = ["column prognostic_score is the same (5) for every control participant"]
    elif case == "missing-score":
        rows[7] = ",".join(rows[7].split(",")[:3] + [""])
        expect = [":9:", "column prognostic_score: missing value"]
    elif case == "duplicate-id":
        rows[5] = "p0" + rows[5][2:]
        expect = [":7:", "'p0' already on line 2"]
    elif case == "ragged-row":
        rows[2] += ",extra"
        expect = [":4:", "5 fields where the header has 4"]
    elif case == "infinite-outcome":
        rows[0] = "p0,control,inf,10"
        expect = [":2:", "not a finite number"]
    else:
        raise AssertionError(case)
    return _write(tmp_path / f"{case}.csv", rows, header), expect


BAD_CASES = ["missing-column", "non-numeric-outcome", "three-arms", "one-arm", "no-control-arm", "too-few",
             "constant-score", "missing-score", "duplicate-id", "ragged-row", "infinite-outcome"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_trial_file_is_one_line_naming_file_and_reason(tmp_path, case):
    path, expect = _bad(tmp_path, case)
    result = run(str(path))
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert "Traceback" not in result.output and len(message.splitlines()) == 1, result.output
    assert str(path) in message
    for fragment in expect:
        assert fragment in message


def test_bad_command_lines_and_twin_columns(tmp_path):
    missing = run(str(tmp_path / "nowhere.csv"))
    assert missing.exit_code != 0 and "no such file" in missing.stderr

    scored = _write(tmp_path / "scored.csv", _scored_rows())
    both = run(str(scored), *TWIN)
    assert both.exit_code != 0 and "use one or the other" in both.stderr
    assert "give --drug too" in run(str(scored), "--dose", "75 mg").stderr
    assert "--metric 'auc'" in run(str(EXAMPLE), "--drug", "clopidogrel", "--metric", "auc").stderr
    assert "--analyte 'H4'" in run(str(EXAMPLE), "--drug", "clopidogrel", "--analyte", "H4").stderr

    negative = _write(tmp_path / "negative.csv", _scored_rows())
    text = negative.read_text().splitlines()
    text[3] = "p2,control,-1.0,10.0"
    negative.write_text("\n".join(text) + "\n")
    logged = run(str(negative), "--log")
    assert logged.exit_code != 0 and f"{negative}:4:" in logged.stderr and "--log needs positive values" in logged.stderr

    lines = EXAMPLE.read_text().splitlines()
    unknown = tmp_path / "unknown_phenotype.csv"
    unknown.write_text("\n".join(lines[:12] + [lines[12].replace("Poor Metabolizer", "Slow Metabolizer")] + lines[13:]) + "\n")
    bad = run(str(unknown), *TWIN)
    assert bad.exit_code != 0 and f"{unknown}:13:" in bad.stderr and "unknown phenotype 'Slow Metabolizer'" in bad.stderr

    no_gene = tmp_path / "no_gene.csv"
    no_gene.write_text("\n".join(line.replace("CYP2C19_phenotype", "note") for line in lines) + "\n")
    assert "CYP2C19_phenotype or CYP2C19_diplotype" in run(str(no_gene), *TWIN).stderr

    same = tmp_path / "all_normal.csv"
    same.write_text("\n".join(lines[:10] + [line.replace("Poor", "Normal").replace("Intermediate", "Normal")
                                             .replace("Rapid", "Normal") for line in lines[10:]]) + "\n")
    constant = run(str(same), *TWIN)
    assert constant.exit_code != 0 and "the twin-predicted prognostic score is the same" in constant.stderr


# --- the parser, by property ----------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    outcomes=st.lists(finite, min_size=2 * MIN_PER_ARM, max_size=2 * MIN_PER_ARM + 6),
    labels=st.sampled_from([("control", "treatment"), ("Control", "Drug"), ("CONTROL", "arm b")]),
    comment_every=st.integers(min_value=2, max_value=7),
    data=st.data(),
)
def test_reader_round_trips_any_valid_trial(tmp_path_factory, outcomes, labels, comment_every, data):
    n = len(outcomes)
    treated = [i % 2 == 1 for i in range(n)]
    scores = [float(i) for i in range(n)]  # distinct, so never constant
    body, expected_lines, line = ["participant_id,arm,outcome,prognostic_score"], [], 1
    for i in range(n):
        if i % comment_every == 0:
            body.append("# a comment")
            line += 1
        body.append(f" id{i} ,{labels[1] if treated[i] else labels[0]},{outcomes[i]!r},{scores[i]!r}")
        line += 1
        expected_lines.append(line)
    path = tmp_path_factory.mktemp("trial") / "t.csv"
    path.write_text("\n".join(body) + "\n")
    trial = read_trial(path, control_arm="control")
    assert trial.participant_ids == tuple(f"id{i}" for i in range(n))
    assert trial.treated.tolist() == treated
    assert trial.outcome.tolist() == outcomes and trial.score.tolist() == scores
    assert trial.lines.tolist() == expected_lines
    assert (trial.control_arm, trial.treatment_arm) == labels

    # any non-numeric outcome is reported with its own line
    broken = data.draw(st.integers(min_value=0, max_value=n - 1))
    word = data.draw(st.text(alphabet="abcxyz?!", min_size=1, max_size=6))
    lines = path.read_text().splitlines()
    index = expected_lines[broken] - 1
    fields = lines[index].split(",")
    lines[index] = ",".join([fields[0], fields[1], word, fields[3]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PgxInputError, match=re.escape(f":{expected_lines[broken]}: column outcome: '{word}' is not a number")):
        read_trial(path)


def test_log_scale_analyses_ratios():
    regimen = ControlRegimen.resolve("clopidogrel")
    trial = read_trial(EXAMPLE, regimen=regimen)
    linear, logged = analyse_trial(trial), analyse_trial(trial, log=True)
    assert linear.scale == "linear" and logged.scale == "log"
    ratio = np.exp(np.log(trial.outcome[trial.treated]).mean() - np.log(trial.outcome[~trial.treated]).mean())
    # balanced phenotypes in both arms: the adjusted log-ratio equals the ratio of geometric means
    assert np.exp(logged.unadjusted.estimate) == pytest.approx(ratio)
    assert logged.as_dict()["effect"]["ratio"] == pytest.approx(np.exp(logged.adjusted.estimate))

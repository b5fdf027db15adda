"""Trial simulation without a cluster: the closed-form exposure against the PK engine, individual
parameters against the drug model, per-patient randomness, arm dosing and endpoints."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pgxtwin.errors import PgxInputError
from pgxtwin.knowledge.drugs import load_drug
from pgxtwin.pk import metrics
from pgxtwin.pk.dosing import DosingHistory
from pgxtwin.pk.drug_model import GeneInput, PatientFactors, drug_model
from pgxtwin.pk.engine import simulate
from pgxtwin.population import arms
from pgxtwin.population.endpoints import (
    GRID_POINTS, Covariates, drug_endpoints, endpoint_values, exposure, individual_parameters, standard_normals,
    uses_fast_path, variability_key, variability_size,
)
from pgxtwin.population.generator import generate_chunk
from pgxtwin.population.trial import plan_trial, population_seed, population_spec, simulate_chunk
from pgxtwin.population.trial_spec import parse_trial
from pgxtwin.twin.regimen import reference_target

N = 400


def draws(drug: str, n: int = N, seed: int = 3) -> dict[str, np.ndarray]:
    """Parameter sets around the drug's typical values, with absorption and lag spread wider than
    the library's variability so that peaks fall anywhere in the grid."""
    model = drug_model(drug)
    rng = np.random.default_rng(seed)
    params = model.sample(model.individualise(PatientFactors()).parameters, n, rng)
    params = {k: np.broadcast_to(np.asarray(v, float), (n,)).copy() for k, v in params.items()}
    params["ka"] *= rng.lognormal(0.0, 0.6, n)
    if "tlag" in params:
        params["tlag"] *= rng.uniform(0.3, 2.0, n)
    return params


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("drug", ["sertraline", "omeprazole", "escitalopram", "clopidogrel"])
@pytest.mark.parametrize(("tau", "n_doses"), [(24.0, 28), (12.0, 3), (24.0, 1)])
def test_closed_form_exposure_matches_the_engine(drug: str, tau: float, n_doses: int) -> None:
    """One-compartment (with and without lag), two-compartment with lag, parent -> metabolite."""
    model = drug_model(drug)
    assert uses_fast_path(model)
    params = draws(drug)
    dose = np.random.default_rng(1).uniform(5.0, 100.0, N)
    outputs = tuple(dict.fromkeys(model.analytes.values()))
    window = (0.001, 0.01)
    fast = exposure(model, params, dose, tau, n_doses, outputs, {o: window for o in outputs})
    course = DosingHistory.regular(1.0, tau, n_doses)
    fine = np.linspace(0.0, tau, 12001)
    grid = np.linspace(0.0, tau, GRID_POINTS)
    reference = simulate(model.structure, params, course, (n_doses - 1) * tau + fine, amount_scale=dose)
    on_grid = simulate(model.structure, params, course, (n_doses - 1) * tau + grid, amount_scale=dose)
    for output in outputs:
        curve = np.asarray(reference[output])
        got = fast[output]
        # the reference's own error: trapezoid and grid maximum on a 2-minute grid
        assert rel(got.auc_tau, np.trapezoid(curve, fine)) < 1e-5
        assert rel(got.cmax, curve.max(axis=1)) < 1e-5
        assert np.all(got.cmax >= curve.max(axis=1) * (1 - 1e-12))
        assert np.allclose(got.trough, curve[:, -1], rtol=1e-9, atol=1e-15)
        # time in window: the same linear interpolation on the same grid as pk.metrics
        expected = metrics.time_in_window(grid, np.asarray(on_grid[output]), *window).fraction_within
        assert np.allclose(got.in_window, expected, rtol=0, atol=1e-9)


def test_time_in_window_grid_error_is_modest() -> None:
    """The 25-point grid against a fine grid, escitalopram's window: mean error < 1 percentage point."""
    model = drug_model("escitalopram")
    params = draws("escitalopram")
    dose = np.full(N, 10.0)
    window = (0.015, 0.080)
    got = exposure(model, params, dose, 24.0, 28, ("parent",), {"parent": window})["parent"].in_window
    fine = np.linspace(0.0, 24.0, 4801)
    curve = simulate(model.structure, params, DosingHistory.regular(1.0, 24.0, 28), 27 * 24.0 + fine, amount_scale=dose)["parent"]
    exact = metrics.time_in_window(fine, np.asarray(curve), *window).fraction_within
    assert float(np.mean(np.abs(got - exact))) < 0.01


def test_nonlinear_drugs_use_the_engine() -> None:
    model = drug_model("voriconazole")
    assert not uses_fast_path(model)
    params = {k: np.full(3, v) for k, v in model.individualise(PatientFactors()).parameters.items()}
    dose = np.array([100.0, 200.0, 300.0])
    got = exposure(model, params, dose, 12.0, 6, ("parent",))["parent"]
    times = 5 * 12.0 + np.linspace(0.0, 12.0, 193)
    curve = np.asarray(simulate(model.structure, params, DosingHistory.regular(1.0, 12.0, 6), times, amount_scale=dose)["parent"])
    assert np.allclose(got.trough, curve[:, -1]) and np.allclose(got.cmax, curve.max(axis=1))
    assert np.all(np.diff(got.auc_tau) > 0) and got.auc_tau[2] / got.auc_tau[0] > 3.0  # saturable: more than proportional


@pytest.mark.parametrize("drug", ["lansoprazole", "warfarin", "escitalopram"])
def test_individual_parameters_match_the_drug_model(drug: str) -> None:
    """Typical values (genotype stratum x vectorised covariates) equal DrugModel.individualise;
    zero normals give the typical values."""
    model = drug_model(drug)
    rng = np.random.default_rng(5)
    n = 6
    cov = Covariates(rng.uniform(45, 120, n), rng.uniform(150, 195, n), rng.uniform(20, 85, n), rng.random(n) < 0.5, rng.uniform(30, 140, n))
    gene = model.genes[0]
    given = GeneInput.from_text(gene, "*1/*3") if drug == "warfarin" else GeneInput(phenotype="Poor Metabolizer")
    typical = arms.typical_parameters(drug, ((gene, arms.gene_input(model, gene, given.diplotype or "*1/*1", given.phenotype)),))
    got = individual_parameters(model, {k: np.full(n, v) for k, v in typical.items()}, cov, np.zeros((n, variability_size(drug))))
    for i in range(n):
        patient = PatientFactors(weight_kg=cov.weight_kg[i], height_cm=cov.height_cm[i], age_years=cov.age_years[i],
                                 sex="F" if cov.female[i] else "M", crcl_ml_min=cov.crcl_ml_min[i],
                                 genes={gene: arms.gene_input(model, gene, given.diplotype or "*1/*1", given.phenotype)})
        expected = model.individualise(patient).parameters
        for name, value in expected.items():
            assert got[name][i] == pytest.approx(value, rel=1e-12), (name, i)


def test_between_subject_variability_follows_omega() -> None:
    drug = "escitalopram"
    model = drug_model(drug)
    n = 20000
    normals = standard_normals(variability_key(9, 0, drug), 0, n, variability_size(drug))
    cov = Covariates(*(np.full(n, 70.0) for _ in range(3)), np.zeros(n, bool), np.full(n, 100.0))
    typical = model.individualise(PatientFactors()).parameters
    params = individual_parameters(model, {k: np.full(n, v) for k, v in typical.items()}, cov, normals)
    names, omega = model.omega(typical)
    logs = np.stack([np.log(params[name] / typical[name]) for name in names])
    assert np.allclose(np.cov(logs), omega, rtol=0.05, atol=2e-3)


def test_patient_randomness_does_not_depend_on_chunking() -> None:
    key = variability_key(11, 2, "escitalopram")
    whole = standard_normals(key, 0, 1000, 6)
    for start, size in [(0, 1), (1, 999), (37, 300), (999, 1)]:
        assert np.array_equal(standard_normals(key, start, size, 6), whole[start : start + size])
    assert not np.array_equal(standard_normals(variability_key(11, 3, "escitalopram"), 0, 10, 6), whole[:10])
    assert not np.array_equal(standard_normals(variability_key(11, 2, "sertraline"), 0, 10, 6), whole[:10])


@pytest.mark.parametrize(
    ("drug", "gene", "phenotype", "kind", "factor", "daily", "cap"),
    [
        ("escitalopram", "CYP2C19", "Poor Metabolizer", "adjusted", 0.5, None, None),
        ("escitalopram", "CYP2C19", "Ultrarapid Metabolizer", "alternative", None, None, None),
        ("escitalopram", "CYP2C19", "Normal Metabolizer", "standard", None, None, None),
        ("sertraline", "CYP2C19", "Rapid Metabolizer", "standard", None, None, None),  # "if no response" comes later
        ("efavirenz", "CYP2B6", "Poor Metabolizer", "adjusted", None, 400.0, None),
        ("tacrolimus", "CYP3A5", "Normal Metabolizer", "adjusted", 1.5, None, None),
        ("omeprazole", "CYP2C19", "Ultrarapid Metabolizer", "adjusted", 2.0, None, None),
        ("omeprazole", "CYP2C19", "Poor Metabolizer", "standard", None, None, None),  # reduction only after 12 weeks
        ("atorvastatin", "SLCO1B1", "Poor Function", "adjusted", None, None, 20.0),
        ("clopidogrel", "CYP2C19", "Intermediate Metabolizer", "alternative", None, None, None),
        ("tamoxifen", "CYP2D6", "Normal Metabolizer", "standard", None, None, None),  # "avoid ... inhibitors" is skipped
    ],
)
def test_cpic_recommendations_read_as_regimens(drug, gene, phenotype, kind, factor, daily, cap) -> None:
    decision = arms.cpic_decision(drug, ((gene, phenotype),))
    assert (decision.kind, decision.factor, decision.daily_mg, decision.cap_mg) == (kind, factor, daily, cap)


TRIAL = {
    "name": "unit",
    "seed": 5,
    "duration_days": 21,
    "population": {"size": 1200, "mix": {"european": 0.5, "east_asian": 0.5}},
    "arms": [
        {"name": "label", "kind": "standard", "drug": "escitalopram"},
        {"name": "guided", "kind": "genotype_guided", "drug": "escitalopram"},
        {"name": "cpic", "kind": "cpic", "drug": "escitalopram", "alternative": "sertraline"},
    ],
    "endpoints": ["target_attainment", "time_in_window", "adverse_reaction"],
}


def plan_of(data: dict):
    return plan_trial(parse_trial(data, "trial.yaml"), "trial.yaml")


def by_arm(table: pa.Table, arm: str) -> dict[str, np.ndarray]:
    rows = table.filter(pa.compute.equal(table.column("arm").cast(pa.string()), arm))
    return {name: np.asarray(rows.column(name).to_numpy(zero_copy_only=False)) for name in rows.column_names}


def test_chunk_rows_arms_and_endpoints() -> None:
    plan = plan_of(TRIAL)
    table, counts = simulate_chunk(plan, 0, 0, 1200)
    assert counts == {"screened": 1200, "enrolled": 1200} and table.num_rows == 3 * 1200
    label, guided, cpic = (by_arm(table, a) for a in ("label", "guided", "cpic"))
    assert np.array_equal(label["patient_id"], np.arange(1200))
    assert np.all(label["dose_mg"] == 10.0) and np.all(label["interval_h"] == 24.0)
    # endpoints follow from the exposure columns and the library's window and alert level
    window, alert = load_drug("escitalopram").therapeutic_window, load_drug("escitalopram").toxicity_thresholds[0]
    trough = label["trough_mg_l"]
    assert np.array_equal(label["target_attained"], (trough >= window.low * (1 - 1e-9)) & (trough <= window.high * (1 + 1e-9)))
    assert np.array_equal(label["adverse_reaction"], trough > alert.high)
    assert np.all((label["time_in_window"] >= 0) & (label["time_in_window"] <= 1))
    # the same patient has the same parameters for a drug in every arm: exposure scales with dose
    same = (cpic["drug"] == "escitalopram") & (guided["interval_h"] == 24.0)
    ratio = cpic["css_avg_mg_l"][same] / label["css_avg_mg_l"][same]
    assert np.allclose(ratio, cpic["dose_mg"][same] / 10.0, rtol=1e-12)
    # CPIC: poor metabolizers halve the dose; rapid/ultrarapid switch to sertraline 50 mg
    phenotype = cpic["CYP2C19_phenotype"]
    poor = phenotype == "Poor Metabolizer"
    assert poor.any() and np.all(cpic["dose_mg"][poor] == 5.0) and set(cpic["regimen"][poor]) == {"CPIC: dose adjusted"}
    switched = np.isin(phenotype, ["Rapid Metabolizer", "Ultrarapid Metabolizer"])
    assert switched.any() and set(cpic["drug"][switched]) == {"sertraline"} and np.all(cpic["dose_mg"][switched] == 50.0)
    assert set(cpic["drug"][~switched]) == {"escitalopram"}


def test_genotype_guided_arm_runs_the_optimiser_once_per_stratum() -> None:
    plan = plan_of(TRIAL)
    arms.guided_regimen.cache_clear()
    table, _ = simulate_chunk(plan, 0, 0, 1200)
    guided = by_arm(table, "guided")
    strata = set(guided["CYP2C19_phenotype"])
    assert arms.guided_regimen.cache_info().misses == len(strata)  # escitalopram's model uses no covariates
    for phenotype in strata:  # one regimen per stratum, the optimiser's
        rows = guided["CYP2C19_phenotype"] == phenotype
        assert len(set(zip(guided["dose_mg"][rows], guided["interval_h"][rows]))) == 1


def test_guided_strata_bin_the_covariates_the_model_uses() -> None:
    model = drug_model("lansoprazole")  # allometric weight on clearances and volumes
    assert arms.relevant_covariates(model, "30 mg") == ("weight_kg",)
    assert arms.relevant_covariates(drug_model("escitalopram"), "10 mg") == ()
    assert arms.relevant_covariates(drug_model("warfarin"), "5 mg") == ("age_years",)


def test_inclusion_criteria_filter_patients_and_chunks_agree() -> None:
    data = dict(TRIAL, population={"size": 1200, "mix": {"european": 1.0}, "inclusion": {
        "sex": ["F"], "weight_kg": [50, 90], "phenotypes": {"CYP2C19": ["Normal Metabolizer", "Intermediate Metabolizer"]}}})
    plan = plan_of(data)
    whole, counts = simulate_chunk(plan, 0, 0, 1200)
    assert 0 < counts["enrolled"] < 1200
    label = by_arm(whole, "label")
    assert set(label["sex"]) == {"F"} and label["weight_kg"].min() >= 50 and label["weight_kg"].max() <= 90
    assert set(label["CYP2C19_phenotype"]) <= {"Normal Metabolizer", "Intermediate Metabolizer"}
    first, _ = simulate_chunk(plan, 0, 0, 500)
    second, _ = simulate_chunk(plan, 0, 500, 700)
    joined = pa.concat_tables([first, second]).to_pandas().sort_values(["arm", "patient_id"]).reset_index(drop=True)
    expected = whole.to_pandas().sort_values(["arm", "patient_id"]).reset_index(drop=True)
    assert joined.equals(expected)


def test_efficacy_proxy_for_a_prodrug() -> None:
    """Clopidogrel: active-metabolite Css,avg at least 80% of a normal metabolizer's on 75 mg/day."""
    ends = drug_endpoints("clopidogrel")
    model = drug_model("clopidogrel")
    assert ends.main_output == "metabolite"
    assert ends.efficacy_css_mg_l == pytest.approx(reference_target(model, PatientFactors()).low)
    typical = {k: np.full(2, v) for k, v in model.individualise(PatientFactors()).parameters.items()}
    got = exposure(model, typical, np.array([75.0, 0.7 * 75.0]), 24.0, 28, ends.outputs)
    values = endpoint_values(ends, got, ["efficacy_proxy"])["efficacy"]
    assert values.tolist() == [True, False]


def test_replicates_draw_fresh_populations() -> None:
    assert population_seed(42, 0) == 42
    assert len({population_seed(42, r) for r in range(5)}) == 5
    data = dict(TRIAL, replicates=2)
    plan = plan_of(data)
    a, _ = simulate_chunk(plan, 0, 0, 200)
    b, _ = simulate_chunk(plan, 1, 0, 200)
    assert not np.array_equal(by_arm(a, "label")["age"], by_arm(b, "label")["age"])


def test_engine_path_drugs_are_solved_in_batches_fixed_by_patient_index(tmp_path) -> None:
    """Voriconazole (saturable elimination, ODE path): the solver shares a step size across its
    batch, so batches follow population indices and chunks are aligned to them."""
    import yaml

    from pgxtwin.population.endpoints import ENGINE_BATCH
    from pgxtwin.population.trial import prepare

    sourced = ["Normal Metabolizer", "Intermediate Metabolizer", "Likely Intermediate Metabolizer",
               "Poor Metabolizer", "Likely Poor Metabolizer"]
    data = {"name": "vori", "seed": 3, "duration_days": 2,
            "population": {"size": 600, "mix": {"european": 1.0}, "inclusion": {"phenotypes": {"CYP2C19": sourced}}},
            "arms": [{"name": "label", "kind": "standard", "drug": "voriconazole"}],
            "endpoints": ["target_attainment", "time_in_window", "adverse_reaction"]}
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(data))
    plan, chunk = prepare(path, chunk_size=300)
    assert chunk == 2 * ENGINE_BATCH
    whole, _ = simulate_chunk(plan, 0, 0, 2 * ENGINE_BATCH)
    first, _ = simulate_chunk(plan, 0, 0, ENGINE_BATCH)
    second, _ = simulate_chunk(plan, 0, ENGINE_BATCH, ENGINE_BATCH)
    assert pa.concat_tables([first, second]).equals(whole)
    label = by_arm(whole, "label")
    window = load_drug("voriconazole").therapeutic_window
    assert np.array_equal(label["target_attained"], (label["trough_mg_l"] >= window.low * (1 - 1e-9)) & (label["trough_mg_l"] <= window.high * (1 + 1e-9)))


def test_comedications_phenoconvert_in_every_arm() -> None:
    """Half the population takes fluvoxamine (a CYP2C19 inhibitor in the library): their escitalopram
    parameters are those of the drug model with that co-medication, so their exposure on the label dose
    is higher than the same phenotype's without it, and the guided arm doses them as phenoconverted."""
    data = dict(TRIAL, population={"size": 1200, "mix": {"european": 1.0}, "comedication_prevalence": {"fluvoxamine": 0.5}})
    table, _ = simulate_chunk(plan_of(data), 0, 0, 1200)
    label, guided = by_arm(table, "label"), by_arm(table, "guided")
    taking = label["comedications"] == "fluvoxamine"
    assert 0.4 < taking.mean() < 0.6 and set(label["comedications"]) == {"", "fluvoxamine"}
    normal = label["CYP2C19_phenotype"] == "Normal Metabolizer"
    model = drug_model("escitalopram")
    nm = GeneInput.from_text("CYP2C19", "Normal Metabolizer")
    without = model.individualise(PatientFactors(genes={"CYP2C19": nm})).parameters["cl"]
    with_inhibitor = model.individualise(PatientFactors(genes={"CYP2C19": nm}, comedications=("fluvoxamine",))).parameters["cl"]
    assert with_inhibitor < without
    # the same individual variability in both groups: the geometric-mean exposure ratio is the clearance ratio
    ratio = np.exp(np.log(label["css_avg_mg_l"][normal & taking]).mean() - np.log(label["css_avg_mg_l"][normal & ~taking]).mean())
    assert ratio == pytest.approx(without / with_inhibitor, rel=0.1)
    # the guided arm's strata carry the co-medication to the optimiser (for escitalopram both groups
    # of normal metabolizers still get the 20 mg maximum: the inhibitor raises their attainment)
    plan = plan_of(data)
    cohort = arms.Cohort.from_table(generate_chunk(population_spec(plan, 0), 0, 1200), plan.genes)
    index, strata = arms.genotype_strata(model, cohort)
    assert {comeds for _, comeds in strata} == {(), ("fluvoxamine",)}
    assert np.array_equal(np.array([strata[i][1] == ("fluvoxamine",) for i in index]), taking)
    assert np.array_equal(guided["dose_mg"], [arms.guided_regimen("escitalopram", strata[i], ())[0] for i in index])


def test_unknown_comedication_is_refused_naming_the_key() -> None:
    data = dict(TRIAL, population={"size": 10, "mix": {"european": 1.0}, "comedication_prevalence": {"aspirin": 0.1}})
    with pytest.raises(PgxInputError, match=r"population\.comedication_prevalence\.aspirin: not a perpetrator drug"):
        plan_of(data)

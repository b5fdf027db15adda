"""Virtual populations: reproducibility regardless of chunking, Hardy–Weinberg genotypes through
the knowledge base's phenotype rule, published phenotype frequencies, cited covariate
distributions, Parquet output, the CLI command and its refusals."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri
from typer.testing import CliRunner

from pgxtwin.cli import app
from pgxtwin.errors import PgxInputError
from pgxtwin.knowledge.frequencies import allele_frequencies
from pgxtwin.knowledge.phenotypes import phenotype_of
from pgxtwin.pk.drug_model import GeneInput, PatientFactors, gene_status
from pgxtwin.population.covariates import body_model
from pgxtwin.population.generator import (
    PopulationSpec,
    excluded_genes,
    generate_chunk,
    schema,
    write_population,
)
from pgxtwin.twin.renal import cockcroft_gault_crcl

HERE = Path(__file__).parent
N_LARGE = 200_000
BODY_YAML = Path(__file__).parents[2] / "src" / "pgxtwin" / "knowledge" / "data" / "body_measures.yaml"

EU_EA = PopulationSpec(mix={"european": 0.6, "east_asian": 0.4}, seed=7)
WITH_COMEDICATIONS = PopulationSpec(
    mix={"european": 0.6, "east_asian": 0.4}, seed=7, comedication_prevalence={"fluoxetine": 0.2, "omeprazole": 0.5}
)


@lru_cache(maxsize=None)
def _frame(group: str, genes: tuple[str, ...] | None = None):
    """A large one-group population as a pandas frame (cached across tests)."""
    return generate_chunk(PopulationSpec(mix={group: 1.0}, genes=genes, seed=11), 0, N_LARGE).to_pandas()


def _column_arrays(table: pa.Table) -> dict[str, tuple]:
    """Every column's raw content, bit for bit (floats as their bytes, categories as codes)."""
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            out[name] = (col.indices.to_numpy().tobytes(), tuple(col.dictionary.to_pylist()))
        else:
            out[name] = (col.to_numpy().tobytes(),)
    return out


# --- reproducibility -------------------------------------------------------------------------


def test_chunking_does_not_change_any_patient():
    whole = generate_chunk(EU_EA, 0, 1000)
    parts = pa.concat_tables([generate_chunk(EU_EA, 0, 300), generate_chunk(EU_EA, 300, 700)])
    assert _column_arrays(whole) == _column_arrays(parts)


@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(0, 10**12),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    spec=st.sampled_from([EU_EA, WITH_COMEDICATIONS]),
)
def test_any_split_at_any_offset_gives_the_same_patients(start, cuts, spec):
    size = sum(cuts)
    whole = generate_chunk(spec, start, size)
    pieces, at = [], start
    for cut in cuts:
        pieces.append(generate_chunk(spec, at, cut))
        at += cut
    assert _column_arrays(whole) == _column_arrays(pa.concat_tables(pieces))
    assert whole.column("patient_id").to_pylist() == list(range(start, start + size))


def test_seed_changes_the_population_and_same_seed_repeats_it():
    a = generate_chunk(EU_EA, 0, 500)
    b = generate_chunk(PopulationSpec(mix=dict(EU_EA.mix), seed=8), 0, 500)
    assert _column_arrays(a) == _column_arrays(generate_chunk(EU_EA, 0, 500))
    assert not np.array_equal(a.column("weight_kg").to_numpy(), b.column("weight_kg").to_numpy())


def test_a_gene_is_the_same_whichever_other_genes_are_generated():
    one = generate_chunk(PopulationSpec(mix=dict(EU_EA.mix), genes=("CYP2C19",), seed=7), 0, 2000)
    two = generate_chunk(PopulationSpec(mix=dict(EU_EA.mix), genes=("CYP2C9", "CYP2C19"), seed=7), 0, 2000)
    for name in ("CYP2C19_diplotype", "CYP2C19_phenotype", "group", "age", "crcl_ml_min"):
        assert one.column(name).to_pylist() == two.column(name).to_pylist()


# --- schema ------------------------------------------------------------------------------------


def test_columns_and_types():
    spec = PopulationSpec(mix={"european": 1.0}, genes=("CYP2C19", "CYP2C9"))
    s = schema(spec)
    assert s.names == [
        "patient_id", "group", "age", "sex", "weight_kg", "height_cm", "serum_creatinine_mg_dl", "crcl_ml_min",
        "comedications", "CYP2C19_diplotype", "CYP2C19_phenotype", "CYP2C9_diplotype", "CYP2C9_phenotype",
    ]
    for name in ("group", "sex", "comedications", "CYP2C19_diplotype", "CYP2C19_phenotype"):
        assert pa.types.is_dictionary(s.field(name).type)
    table = generate_chunk(spec, 0, 100)
    assert table.schema.equals(s)
    assert set(table.column("group").to_pylist()) == {"european"}
    assert set(table.column("sex").to_pylist()) <= {"F", "M"}
    assert set(table.column("comedications").to_pylist()) == {""}  # no prevalences given: no defaults
    assert b"CPIC" in s.metadata[b"pgxtwin.population"]


def test_default_genes_are_those_with_data_for_every_group_in_the_mix():
    assert [c for c in schema(EU_EA).names if c.endswith("_phenotype")] == [
        "CYP2C19_phenotype", "CYP2C9_phenotype", "CYP2D6_phenotype", "CYP3A5_phenotype",
        "DPYD_phenotype", "NUDT15_phenotype", "SLCO1B1_phenotype", "TPMT_phenotype",
    ]
    african = PopulationSpec(mix={"european": 0.5, "sub_saharan_african": 0.5})
    assert "CYP3A5_phenotype" not in schema(african).names
    assert "sub_saharan_african" in excluded_genes(african)["CYP3A5"]
    assert "sub_saharan_african" in excluded_genes(african)["CYP2D6"]


def test_group_proportions_follow_the_mix():
    groups = generate_chunk(EU_EA, 0, 50_000).column("group").to_pylist()
    share = groups.count("east_asian") / len(groups)
    assert abs(share - 0.4) < 4 * math.sqrt(0.4 * 0.6 / len(groups))


# --- genotypes and phenotypes -----------------------------------------------------------------


def _expected_phenotypes(gene: str, group: str) -> dict[str, float]:
    """Hardy–Weinberg phenotype frequencies from CPIC's allele frequencies and phenotype_of."""
    freqs = allele_frequencies(gene, group)
    out: dict[str, float] = {}
    for a, pa_ in zip(freqs.alleles, freqs.frequencies):
        for b, pb in zip(freqs.alleles, freqs.frequencies):
            name = phenotype_of(gene, a, b).phenotype
            out[name] = out.get(name, 0.0) + pa_ * pb
    return out


@pytest.mark.parametrize(
    "gene, group",
    [
        *((gene, group) for gene in ("CYP2C19", "CYP2C9") for group in ("european", "east_asian", "sub_saharan_african", "oceanian")),
        *(("CYP2D6", group) for group in ("european", "east_asian", "oceanian", "near_eastern")),
    ],
)
def test_phenotype_frequencies_match_hardy_weinberg_expectation(gene, group):
    genes = ("CYP2C19", "CYP2C9", "CYP2D6") if gene == "CYP2D6" else ("CYP2C19", "CYP2C9")
    observed = _frame(group, genes)[f"{gene}_phenotype"].value_counts(normalize=True)
    expected = _expected_phenotypes(gene, group)
    for phenotype, p in expected.items():
        se = math.sqrt(p * (1 - p) / N_LARGE)
        assert abs(observed.get(phenotype, 0.0) - p) <= 4.5 * se + 1e-9, (phenotype, observed.get(phenotype), p)
    assert set(observed[observed > 0].index) <= set(expected)


def test_cyp2c19_poor_metabolizers_about_2_percent_european_13_percent_east_asian():
    assert 0.02 < _expected_phenotypes("CYP2C19", "european")["Poor Metabolizer"] < 0.03
    assert 0.12 < _expected_phenotypes("CYP2C19", "east_asian")["Poor Metabolizer"] < 0.14
    eu = (_frame("european", ("CYP2C19", "CYP2C9"))["CYP2C19_phenotype"] == "Poor Metabolizer").mean()
    ea = (_frame("east_asian", ("CYP2C19", "CYP2C9"))["CYP2C19_phenotype"] == "Poor Metabolizer").mean()
    assert 0.02 < eu < 0.03 and 0.12 < ea < 0.14


def test_copy_number_diplotypes_are_drawn_and_scored():
    frame = _frame("oceanian", ("CYP2C19", "CYP2C9", "CYP2D6"))
    duplicated = frame["CYP2D6_diplotype"].str.contains("x")
    # CPIC: *1x2 has frequency 0.1189 in Oceanian chromosomes, so ~22% of people carry a duplication
    assert 0.2 < duplicated.mean() < 0.3
    um = frame.loc[frame["CYP2D6_diplotype"] == "*1/*1x2", "CYP2D6_phenotype"]
    assert len(um) > 1000 and set(um) == {"Ultrarapid Metabolizer"}


def test_diplotypes_agree_with_phenotypes_through_the_knowledge_base():
    frame = generate_chunk(EU_EA, 0, 3000).to_pandas()
    for gene in ("CYP2C19", "CYP2C9", "CYP2D6", "CYP3A5"):
        pairs = frame[[f"{gene}_diplotype", f"{gene}_phenotype"]].drop_duplicates()
        for diplotype, phenotype in pairs.itertuples(index=False):
            a, b = diplotype.split("/")
            assert phenotype_of(gene, a, b).phenotype == phenotype


def _published():
    return yaml.safe_load((HERE / "published_phenotype_frequencies.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("entry", _published()["frequencies"], ids=lambda e: f"{e['gene']}-{e['group']}-{e['phenotype']}")
def test_phenotype_frequencies_match_published(entry):
    known_sources = _published()["sources"]
    assert entry["sources"] and set(entry["sources"]) <= set(known_sources)
    frame = _frame(entry["group"])
    observed = (frame[f"{entry['gene']}_phenotype"] == entry["phenotype"]).mean()
    low, high = entry["low_percent"] / 100, entry["high_percent"] / 100
    se = math.sqrt(observed * (1 - observed) / N_LARGE)
    if "n" in entry:  # one cohort: its own sampling error too
        se = math.hypot(se, math.sqrt(low * (1 - low) / entry["n"]))
    assert low - 4 * se <= observed <= high + 4 * se, (observed, low, high)


# --- covariates --------------------------------------------------------------------------------


def _body_yaml():
    return yaml.safe_load(BODY_YAML.read_text(encoding="utf-8"))


def _band_range(band: str) -> tuple[float, float]:
    low, _, high = band.rstrip("+").partition("-")
    return float(low), (float(high) + 1.0 if high else 120.0)


@pytest.mark.parametrize("band", list(_body_yaml()["height_cm"]["F"]))
def test_height_and_bmi_reproduce_the_published_percentiles_of_each_age_band_and_sex(band):
    frame = generate_chunk(PopulationSpec(mix={"european": 1.0}, genes=(), seed=5, age_range=_band_range(band)), 0, 80_000).to_pandas()
    data = _body_yaml()
    for sex in ("F", "M"):
        rows = frame[frame["sex"] == sex]
        for name, values in (
            ("height_cm", rows["height_cm"].to_numpy()),
            ("bmi_kg_m2", rows["weight_kg"].to_numpy() / (rows["height_cm"].to_numpy() / 100) ** 2),
        ):
            published = data[name][sex][band]
            shown = [(p, v) for p, v in zip(data[name]["percentiles"], published) if v is not None]
            got = np.percentile(values, [p for p, _ in shown])
            # ~40,000 draws per sex: a percentile's sampling error is under 0.15 cm / 0.15 kg/m²
            assert np.allclose(got, [v for _, v in shown], atol=0.3), (name, sex, got, published)


def test_body_size_changes_with_age_band_as_published():
    old = generate_chunk(PopulationSpec(mix={"european": 1.0}, genes=(), seed=5, age_range=(80.0, 90.0)), 0, 20_000).to_pandas()
    young = generate_chunk(PopulationSpec(mix={"european": 1.0}, genes=(), seed=5, age_range=(20.0, 30.0)), 0, 20_000).to_pandas()
    for sex in ("F", "M"):
        # NCHS 2021-2023: median height 156.9 (80+) vs 163.3 cm (20-29) in women, 169.9 vs 176.1 in men
        assert young[young.sex == sex].height_cm.median() - old[old.sex == sex].height_cm.median() > 5.0


@pytest.mark.parametrize("sex", ["F", "M"])
def test_serum_creatinine_reproduces_the_published_mean_and_tail(sex):
    frame = _frame("european")
    scr = frame.loc[frame["sex"] == sex, "serum_creatinine_mg_dl"].to_numpy()
    published = _body_yaml()["serum_creatinine_mg_dl"]
    # the fit is exact before truncation at the 99.9th percentile, which lowers the mean slightly
    assert scr.mean() == pytest.approx(published[sex]["mean"], abs=0.01)
    tail = (scr >= published["threshold_mg_dl"]).mean()
    target = published[sex]["fraction_at_or_above_threshold"]
    assert abs(tail - target) <= 4 * math.sqrt(target * (1 - target) / len(scr))
    mu, sd = body_model().creatinine_log_mean, body_model().creatinine_log_sd
    i = "FM".index(sex)
    assert math.exp(mu[i] + sd[i] * ndtri(0.5)) == pytest.approx(np.median(scr), rel=0.01)


def test_age_is_uniform_on_the_range_and_sexes_are_even():
    frame = generate_chunk(PopulationSpec(mix={"latino": 1.0}, age_range=(30.0, 50.0), seed=3), 0, 40_000).to_pandas()
    assert frame["age"].between(30.0, 50.0).all()
    assert frame["age"].mean() == pytest.approx(40.0, abs=4 * 20 / math.sqrt(12 * 40_000))
    assert abs((frame["sex"] == "F").mean() - 0.5) < 4 * math.sqrt(0.25 / 40_000)


def test_creatinine_clearance_is_cockcroft_gault_of_the_row():
    frame = generate_chunk(EU_EA, 0, 200).to_pandas()
    for row in frame.itertuples():
        expected = cockcroft_gault_crcl(row.age, row.weight_kg, row.serum_creatinine_mg_dl, row.sex)
        assert row.crcl_ml_min == pytest.approx(expected, rel=1e-12)


def test_virtual_patients_are_valid_patient_factors():
    # creatinine clearance is left out: Cockcroft–Gault on total body weight exceeds
    # PatientFactors' 300 mL/min bound for about 9 in 10,000 virtual adults (young, heavy, low SCr)
    frame = generate_chunk(EU_EA, 0, 500).to_pandas()
    for row in frame.itertuples():
        patient = PatientFactors(weight_kg=row.weight_kg, height_cm=row.height_cm, age_years=row.age, sex=row.sex)
        assert patient.bsa_m2 is not None and 1.0 < patient.bsa_m2 < 3.6
    extremes = _frame("european")
    assert extremes.weight_kg.between(20.0, 300.0).all() and extremes.height_cm.between(130.0, 210.0).all()


# --- co-medications -----------------------------------------------------------------------------


def test_comedications_are_taken_with_the_given_prevalence_independently():
    frame = generate_chunk(WITH_COMEDICATIONS, 0, 40_000).to_pandas()
    taken = frame["comedications"].str.split(";")
    for drug, p in (("fluoxetine", 0.2), ("omeprazole", 0.5)):
        share = taken.apply(lambda names, d=drug: d in names).mean()
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / len(frame))
    both = (frame["comedications"] == "fluoxetine;omeprazole").mean()
    assert abs(both - 0.1) < 4 * math.sqrt(0.09 / len(frame))
    # the co-medication streams are their own: genotypes and covariates are those without them
    plain = generate_chunk(EU_EA, 0, 40_000)
    for name in ("CYP2D6_diplotype", "weight_kg", "group"):
        assert generate_chunk(WITH_COMEDICATIONS, 0, 40_000).column(name).to_pylist() == plain.column(name).to_pylist()


def test_prevalence_zero_and_one_are_exact():
    spec = PopulationSpec(mix={"latino": 1.0}, genes=(), comedication_prevalence={"paroxetine": 1.0, "rifampin": 0.0})
    assert set(generate_chunk(spec, 0, 5000).column("comedications").to_pylist()) == {"paroxetine"}


def test_a_generated_comedication_phenoconverts_the_patient():
    frame = generate_chunk(WITH_COMEDICATIONS, 0, 2000).to_pandas()
    row = frame[(frame.CYP2D6_phenotype == "Normal Metabolizer") & frame.comedications.str.contains("fluoxetine")].iloc[0]
    patient = PatientFactors(
        genes={"CYP2D6": GeneInput.from_text("CYP2D6", row.CYP2D6_diplotype)},
        comedications=tuple(row.comedications.split(";")),
    )
    # fluoxetine is a strong CYP2D6 inhibitor in the library: a normal metabolizer acts as a poor one
    assert gene_status("CYP2D6", patient).effective_phenotype == "Poor Metabolizer"


def test_copy_number_diplotypes_are_valid_patient_inputs():
    given = GeneInput.from_text("CYP2D6", "*1x2/*4")
    assert (given.phenotype, given.activity_score) == ("Normal Metabolizer", 2.0)


# --- Parquet -----------------------------------------------------------------------------------


def test_write_population_streams_chunks_to_parquet(tmp_path):
    target = tmp_path / "pop.parquet"
    seen = []
    write_population(EU_EA, 2500, target, chunk_size=1000, progress=seen.append)
    assert seen == [1000, 1000, 500]
    read = pq.read_table(target)
    assert read.num_rows == 2500
    assert read.column("CYP2C19_phenotype").to_pylist() == generate_chunk(EU_EA, 0, 2500).column("CYP2C19_phenotype").to_pylist()
    assert read.column("crcl_ml_min").to_pylist() == generate_chunk(EU_EA, 0, 2500).column("crcl_ml_min").to_pylist()
    assert [p.name for p in tmp_path.iterdir()] == ["pop.parquet"]


def test_write_population_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "pop.parquet"
    target.write_bytes(b"previous")

    def stop(_done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_population(EU_EA, 5000, target, chunk_size=1000, progress=stop)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["pop.parquet"]


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, option, reason",
    [
        (PopulationSpec(mix={"european": 0.6, "east_asian": 0.3}), "--mix", "sum to 0.9"),
        (PopulationSpec(mix={"european": 0.5, "atlantean": 0.5}), "--mix", "unknown group"),
        (PopulationSpec(mix={}), "--mix", "no groups"),
        (PopulationSpec(mix={"european": 1.5, "east_asian": -0.5}), "--mix", ">= 0"),
        (PopulationSpec(mix={"european": 0.5, "sub_saharan_african": 0.5}, genes=("CYP3A5",)), "--genes", "sub_saharan_african"),
        (PopulationSpec(mix={"european": 1.0}, genes=("CYP2B6",)), "--genes", "CYP2B6"),
        (PopulationSpec(mix={"sub_saharan_african": 1.0}, genes=("CYP2D6",)), "--genes", "*149"),
        (PopulationSpec(mix={"european": 1.0}, comedication_prevalence={"aspirin": 0.1}), "--comedication-prevalence", "aspirin"),
        (PopulationSpec(mix={"european": 1.0}, comedication_prevalence={"fluoxetine": 1.5}), "--comedication-prevalence", "[0, 1]"),
        (
            PopulationSpec(mix={"european": 1.0}, comedication_prevalence={"fluoxetine": 0.1, "Fluoxetine": 0.2}),
            "--comedication-prevalence",
            "twice",
        ),
        (PopulationSpec(mix={"european": 1.0}, genes=("CYP2C19", "CYP2C19")), "--genes", "twice"),
        (PopulationSpec(mix={"european": 1.0}, seed=-1), "--seed", "2**64"),
        (PopulationSpec(mix={"european": 1.0}, age_range=(10.0, 50.0)), "--age-range", "18"),
    ],
)
def test_bad_specs_are_refused_in_one_line(spec, option, reason):
    with pytest.raises(PgxInputError) as info:
        schema(spec)
    message = str(info.value)
    assert message.startswith(option) and reason in message and "\n" not in message


def test_mix_within_tolerance_is_accepted():
    assert schema(PopulationSpec(mix={"european": 0.6, "east_asian": 0.4 + 5e-7}))


def test_n_below_one_is_refused(tmp_path):
    with pytest.raises(PgxInputError, match="--n"):
        write_population(EU_EA, 0, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_writes_the_population(tmp_path):
    target = tmp_path / "pop.parquet"
    result = CliRunner().invoke(
        app, ["population", "--n", "3000", "--mix", "european=0.6,east_asian=0.4", "--seed", "7", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(target)
    assert table.num_rows == 3000
    assert table.column("CYP2C19_diplotype").to_pylist() == generate_chunk(EU_EA, 0, 3000).column("CYP2C19_diplotype").to_pylist()


def test_cli_restricts_genes(tmp_path):
    target = tmp_path / "pop.parquet"
    result = CliRunner().invoke(
        app, ["population", "--n", "10", "--mix", "european=1", "--genes", "cyp2c19,CYP2C9", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert [c for c in pq.read_schema(target).names if c.endswith("_phenotype")] == ["CYP2C19_phenotype", "CYP2C9_phenotype"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--mix", "european=0.6,east_asian=0.5"], "--mix"),
        (["--mix", "european"], "--mix"),
        (["--mix", "european=1", "--n", "0"], "--n"),
        (["--mix", "european=0.5,sub_saharan_african=0.5", "--genes", "CYP3A5"], "--genes"),
        (["--mix", "european=1", "--age-range", "old"], "--age-range"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, args, fragment):
    target = tmp_path / "x.parquet"
    base = ["population", "--n", "5", "-o", str(target)]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code != 0
    assert fragment in result.output and "Traceback" not in result.output
    assert not target.exists()


@settings(max_examples=50, deadline=None)
@given(
    mix=st.dictionaries(
        st.sampled_from(["european", "east_asian", "latino", "oceanian"]),
        st.floats(0.0, 1.0, allow_nan=False),
        min_size=1,
    )
)
def test_mix_option_round_trips(mix):
    from pgxtwin.cli_population import parse_mix

    text = ",".join(f"{group}={fraction!r}" for group, fraction in mix.items())
    assert parse_mix(text) == mix


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_mix_option_never_fails_with_anything_but_a_named_input_error(text):
    from pgxtwin.cli_population import parse_mix

    try:
        parsed = parse_mix(text)
    except PgxInputError as exc:
        assert str(exc).startswith("--mix")
    else:
        assert all(isinstance(v, float) for v in parsed.values())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["height_cm"]["F"].pop("20-29"), "same age bands"),
        (lambda d: d["bmi_kg_m2"]["M"]["30-39"].reverse(), "increasing"),
        (lambda d: [d[v][s].update({"80": d[v][s].pop("80+")}) for v in ("height_cm", "bmi_kg_m2") for s in "FM"], "LOW+"),
    ],
)
def test_body_file_validator_refuses_inconsistent_tables(mutate, message):
    from pydantic import ValidationError

    from pgxtwin.population.covariates import _BodyFile

    data = _body_yaml()
    mutate(data)
    with pytest.raises(ValidationError, match=message):
        _BodyFile.model_validate(data)

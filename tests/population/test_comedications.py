"""Optional co-medication prevalence (issue 6): the ``--comedication-prevalence`` option and the
trial file's ``population.comedication_prevalence`` key, with their one-line refusals."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pgxtwin.cli import app
from pgxtwin.cli_population import parse_comedications
from pgxtwin.errors import PgxInputError
from pgxtwin.population.trial_spec import parse_trial

TRIAL = {
    "name": "t",
    "seed": 1,
    "duration_days": 28,
    "population": {"size": 100, "mix": {"european": 1.0}},
    "arms": [{"name": "label", "kind": "standard", "drug": "escitalopram"}],
    "endpoints": ["target_attainment"],
}


def test_cli_writes_the_comedications_column(tmp_path):
    target = tmp_path / "pop.parquet"
    args = ["population", "--n", "20000", "--mix", "european=1", "--genes", "CYP2D6", "-o", str(target)]
    result = CliRunner().invoke(app, [*args, "--comedication-prevalence", "Paroxetine=0.25"])
    assert result.exit_code == 0, result.output
    frame = pq.read_table(target).to_pandas()
    share = (frame["comedications"] == "paroxetine").mean()
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / len(frame))
    assert set(frame["comedications"]) == {"", "paroxetine"}


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("omeprazole", "is not drug=fraction"),
        ("omeprazole=lots", "not a number"),
        ("omeprazole=0.1,omeprazole=0.2", "given twice"),
        ("vitamin c=0.1", "not a perpetrator drug"),
        ("omeprazole=-0.1", "[0, 1]"),
    ],
)
def test_cli_bad_prevalence_is_one_line_and_nonzero(tmp_path, value, fragment):
    target = tmp_path / "x.parquet"
    result = CliRunner().invoke(
        app, ["population", "--n", "5", "--mix", "european=1", "-o", str(target), "--comedication-prevalence", value]
    )
    assert result.exit_code != 0
    assert "--comedication-prevalence" in result.output and fragment in result.output
    assert "Traceback" not in result.output and not target.exists()


@settings(max_examples=50, deadline=None)
@given(
    prevalence=st.dictionaries(
        st.sampled_from(["omeprazole", "fluoxetine", "st. john's wort"]), st.floats(0.0, 1.0, allow_nan=False), min_size=1
    )
)
def test_prevalence_option_round_trips(prevalence):
    text = ",".join(f"{drug}={share!r}" for drug, share in prevalence.items())
    assert parse_comedications(text) == prevalence


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_prevalence_option_never_fails_with_anything_but_a_named_input_error(text):
    try:
        parse_comedications(text)
    except PgxInputError as exc:
        assert str(exc).startswith("--comedication-prevalence")


def test_trial_file_takes_a_comedication_prevalence():
    data = {**TRIAL, "population": {**TRIAL["population"], "comedication_prevalence": {"omeprazole": 0.1}}}
    assert parse_trial(data, "trial.yaml").population.comedication_prevalence == {"omeprazole": 0.1}
    assert parse_trial(TRIAL, "trial.yaml").population.comedication_prevalence == {}


def test_trial_file_refuses_a_prevalence_outside_zero_one_naming_the_key():
    data = {**TRIAL, "population": {**TRIAL["population"], "comedication_prevalence": {"omeprazole": 1.5}}}
    with pytest.raises(PgxInputError) as info:
        parse_trial(data, "trial.yaml")
    message = str(info.value)
    assert "population.comedication_prevalence" in message and "[0, 1]" in message and "\n" not in message

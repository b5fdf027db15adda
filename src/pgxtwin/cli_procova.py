"""``pgxtwin trial analyse``: a two-arm trial's treatment effect with the twin's predicted control outcome
as prognostic covariate (PROCOVA; see :mod:`pgxtwin.population.procova`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .cli_common import JsonOpt, fail, out_console
from .errors import PgxInputError


def analyse(
    trial: Annotated[Path, typer.Argument(help="CSV: participant_id, arm, outcome, and prognostic_score or the"
                                               " twin's columns (GENE_phenotype, GENE_diplotype, age, sex, weight_kg,"
                                               " height_cm, crcl_ml_min, comedications)")],
    drug: Annotated[Optional[str], typer.Option(help="control regimen's drug: the twin predicts each participant's"
                                                     " control outcome")] = None,
    dose: Annotated[Optional[str], typer.Option(help="control dose, e.g. '75 mg' (default: the library's standard)")] = None,
    every: Annotated[Optional[str], typer.Option(help="control dosing interval, e.g. 24h (default: standard)")] = None,
    days: Annotated[float, typer.Option(help="days of control dosing; the metric is over the last interval")] = 14.0,
    metric: Annotated[Optional[str], typer.Option(help="auc_tau, cmax, cmin or css_avg (default auc_tau)")] = None,
    analyte: Annotated[Optional[str], typer.Option(help="analyte (default: the drug's main one)")] = None,
    control_arm: Annotated[str, typer.Option("--control-arm", help="label of the control arm in column arm")] = "control",
    log: Annotated[bool, typer.Option("--log", help="analyse ln(outcome) on ln(score): for exposures (log-normal);"
                                                    " the effect is then a ratio")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Treatment effect of a two-arm trial adjusted for the twin's prognostic score (PROCOVA)."""
    from .population.procova import ControlRegimen, analyse_trial, read_trial, report

    try:
        regimen = None
        if drug is not None:
            regimen = ControlRegimen.resolve(drug, dose, every, days, metric or "auc_tau", analyte)
        elif any(v is not None for v in (dose, every, metric, analyte)):
            raise PgxInputError("--dose, --every, --metric and --analyte describe the twin's control regimen: give --drug too")
        data = read_trial(trial, regimen=regimen, control_arm=control_arm)
        result = analyse_trial(data, log=log)
    except PgxInputError as exc:
        fail(str(exc))
    summary = report(data, result)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    ratio = result.scale == "log"
    table = Table(
        title=f"{trial.name}: {data.treatment_arm} vs {data.control_arm}, n={result.n} "
              f"({result.n_treatment} + {result.n_control}), {'ln(outcome)' if ratio else 'outcome'}",
        title_justify="left",
    )
    table.add_column("Analysis")
    table.add_column("Effect", justify="right")
    table.add_column(f"{result.level:.0%} CI", justify="right")
    if ratio:
        table.add_column("Ratio", justify="right")
        table.add_column(f"Ratio {result.level:.0%} CI", justify="right")
    table.add_column("SE (HC3)", justify="right")
    table.add_column("p", justify="right")
    for label, key in (("PROCOVA (twin-adjusted)", "effect"), ("Unadjusted", "unadjusted_effect")):
        e = summary[key]
        cells = [label, f"{e['estimate']:.4g}", f"{e['ci_low']:.4g} to {e['ci_high']:.4g}"]
        if ratio:
            cells += [f"{e['ratio']:.4g}", f"{e['ratio_ci_low']:.4g} to {e['ratio_ci_high']:.4g}"]
        cells += [f"{e['se']:.3g}", f"{e['p_value']:.3g}"]
        table.add_row(*cells)
    out_console.print(table)
    out_console.print(f"prognostic score: {data.score_origin}", highlight=False)
    n_formula = result.n_equivalent_unadjusted
    out_console.print(
        f"ρ (score vs outcome, control arm) = {result.rho_control:.3f}; variance factor 1 − ρ² = {result.variance_reduction:.3f};"
        f" same power unadjusted needs n ≈ {'∞' if n_formula is None else f'{n_formula:.0f}'} (n / (1 − ρ²), Schuler 2021)"
        f" or {result.n_equivalent_empirical:.0f} (n · SE²unadjusted / SE²adjusted here)",
        highlight=False,
    )
    for note in data.notes:
        out_console.print(f"[yellow]note:[/] {note}", highlight=False)

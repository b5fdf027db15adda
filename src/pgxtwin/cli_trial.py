"""``pgxtwin trial ...``: in-silico trials on virtual populations (Dask; see pgxtwin.population.trial)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli_common import err_console, fail, out_console
from .errors import PgxInputError

trial_app = typer.Typer(no_args_is_help=True, help="In-silico trials: arms x virtual patients, on Dask.")


def _print_summary(summary, config, title: str) -> None:
    from .population.trial_report import wide_table

    header, rows = wide_table(summary, config)
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name, justify="right" if name == "n" else "left")
    for row in rows:
        table.add_row(*row)
    out_console.print(table)
    out_console.print("95% intervals: Wilson score for proportions, Student t for means.", style="dim")


@trial_app.command("run")
def run(
    trial: Annotated[Path, typer.Argument(help="trial YAML file")],
    output: Annotated[Path, typer.Option("-o", "--output", help="results folder (replaced when the run completes)")],
    workers: Annotated[Optional[int], typer.Option("--workers", help="local Dask worker processes (1 thread each; default: CPU count)")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="existing Dask scheduler, e.g. tcp://HOST:8786")] = None,
    chunk_size: Annotated[Optional[int], typer.Option("--chunk-size", help="patients per task (default 262144)")] = None,
) -> None:
    """Run a trial: per-patient Parquet, summary by arm x phenotype, plots and an HTML page."""
    from .population.trial_spec import load_trial

    try:
        for option, value in (("--chunk-size", chunk_size), ("--workers", workers)):
            if value is not None and value < 1:
                raise PgxInputError(f"{option}: must be at least 1 (got {value})")
        spec = load_trial(trial)  # the file's own mistakes, before the simulation modules load
        from .population.trial import run_trial  # checks the rest before the cluster starts

        total = spec.population.size * spec.replicates
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("patients screened", total=total)
            result = run_trial(trial, output, workers=workers, scheduler=scheduler, chunk_size=chunk_size,
                               progress=lambda done, _total: bar.update(task, completed=done))
    except PgxInputError as exc:
        fail(str(exc))
        return
    execution = result.manifest["execution"]
    counts = result.manifest["counts"]
    _print_summary(result.summary, result.config, result.manifest["trial"]["name"])
    err_console.print(
        f"{counts['screened']:,} screened, {counts['enrolled']:,} enrolled, {counts['rows']:,} patient-arm rows in"
        f" {execution['seconds']:.1f} s ({execution['patients_per_second']:,.0f} patients/s); results in {result.folder}",
        highlight=False,
    )


@trial_app.command("report")
def report(
    results: Annotated[Path, typer.Argument(help="results folder of `pgxtwin trial run`")],
) -> None:
    """Recompute the summary, plots and HTML page from the Parquet results, and print the summary."""
    from .population.trial_report import report as build_report

    try:
        summary, config = build_report(results)
    except PgxInputError as exc:
        fail(str(exc))
        return
    _print_summary(summary, config, f"{results}")
    err_console.print(f"summary.csv, summary.json, plots/ and report.html rewritten in {results}", highlight=False)

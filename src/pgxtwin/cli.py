"""``pgxtwin`` command line (Typer + Rich).

A user's mistake (bad file, unknown gene, malformed value) is reported as one line naming the
file/field and the reason, with a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import io
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .atomic import atomic_write
from .cli_common import (
    AgeOpt, CrclOpt, DiplotypeOpt, GenotypeOpt, HeightOpt, JsonOpt, PhenotypeOpt, SexOpt, WeightOpt, WithOpt,
    err_console, fail, out_console,
)
from .errors import PgxInputError
from .knowledge.drugs import resolve_drug

if TYPE_CHECKING:
    from .genomics.result import CallResult
    from .pk.drug_model import PatientFactors

app = typer.Typer(add_completion=False, no_args_is_help=True, help="pgxtwin: pharmacogenomic digital twin.")


@app.callback()
def _root() -> None:
    """pgxtwin: pharmacogenomic digital twin."""


class Assembly(str, Enum):
    GRCh38 = "GRCh38"
    GRCh37 = "GRCh37"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _call_one_file(args: tuple[str, str, Optional[str], list, Optional[list[str]]]) -> tuple[str, list[str], Optional[str]]:
    """Worker: call one VCF; returns (path, JSON results, one-line error or None)."""
    results: list[str] = []
    error = None
    for kind, text in _stream_file(args):
        if kind == "error":
            error = text
        else:
            results.append(text)
    return args[0], results, error


def _stream_file(args: tuple[str, str, Optional[str], list, Optional[list[str]]]):
    """Results of one VCF as they come: ("result", json) per sample, or one ("error", message)."""
    from .genomics.caller import call_vcf

    path, assembly, sample, outside, genes = args
    try:
        for result in call_vcf(path, assembly=assembly, sample=sample, outside_calls=outside, genes=genes):
            yield "result", result.model_dump_json()
    except PgxInputError as exc:
        yield "error", str(exc)


def _count_results(path: str, sample: Optional[str]) -> int:
    """Samples a file will give (for the progress bar); 1 when the header cannot be read."""
    if sample is not None:
        return 1
    from .genomics.vcf import VcfFile

    try:
        vcf = VcfFile(path)
    except PgxInputError:
        return 1
    try:
        return len(vcf.samples)
    finally:
        vcf.close()


def _outcomes(tasks: list, jobs: int):
    """("result", json) and ("error", message) events, streamed in file order."""
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for _, results, error in pool.map(_call_one_file, tasks):
                for text in results:
                    yield "result", text
                if error is not None:
                    yield "error", error
    else:
        for task in tasks:
            yield from _stream_file(task)


def _render_table(result: dict, all_genes: bool) -> Table:
    from .knowledge.alleles import gene_definition

    table = Table(title=f"{result['sample']}  ({Path(result['source']).name}, {result['assembly']})", title_justify="left")
    for column in ("Gene", "Status", "Diplotype", "Phenotype", "Activity", "Missing"):
        table.add_column(column, no_wrap=True)
    table.add_column("Notes", overflow="fold")
    colours = {"called": "green", "outside_call": "cyan", "ambiguous": "yellow", "partial": "yellow", "no_call": "red"}
    for gene, res in result["genes"].items():
        has_rule = res["status"] == "outside_call" or gene_definition(gene, result["assembly"]).phenotype_method
        if not all_genes and not has_rule:
            continue
        scores = res["scores"] or [0] * len(res["diplotypes"])
        top = [d for d, s in zip(res["diplotypes"], scores) if s == scores[0]] if res["status"] != "partial" else res["diplotypes"]
        diplotype = ", ".join(top[:3]) + (f" (+{len(res['diplotypes']) - min(3, len(top))} more)" if len(res["diplotypes"]) > min(3, len(top)) else "")
        if res["detected_alleles"]:
            diplotype = "alleles: " + ", ".join(res["detected_alleles"])
        score = res["activity_score"]
        table.add_row(
            gene,
            f"[{colours[res['status']]}]{res['status']}[/]",
            diplotype or "-",
            res["phenotype"],
            "-" if score is None else f"{score:g}",
            str(len(res["missing_positions"])) if res["missing_positions"] else "",
            "; ".join(n for n in res["notes"] if not n.startswith("structural alleles")),
        )
    kb = result["knowledge_base"]
    table.caption = f"knowledge base {kb['version']}"
    return table


@app.command()
def call(
    vcf: Annotated[list[Path], typer.Argument(help="VCF file(s), plain or bgzipped (index used when present)")],
    sample: Annotated[Optional[str], typer.Option(help="call only this sample")] = None,
    assembly: Annotated[Assembly, typer.Option(help="genome assembly of the VCF")] = Assembly.GRCh38,
    outside_calls: Annotated[Optional[Path], typer.Option("--outside-calls", help="TSV: gene, diplotype [, phenotype]")] = None,
    gene: Annotated[Optional[list[str]], typer.Option("--gene", help="only these genes (repeatable)")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="table or json (JSON Lines for several results)")] = OutputFormat.table,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="write here instead of standard output")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="processes, one file each")] = 1,
    all_genes: Annotated[bool, typer.Option("--all-genes", help="table: also genes without a phenotype rule")] = False,
) -> None:
    """Call star-allele diplotypes and CPIC phenotypes from germline VCFs."""
    from .genomics.outside_calls import read_outside_calls

    outside = []
    if outside_calls is not None:
        try:
            outside = read_outside_calls(outside_calls)
        except PgxInputError as exc:
            fail(str(exc))
    tasks = [(str(p), assembly.value, sample, outside, gene) for p in vcf]
    lines: list[str] = []
    failures = 0
    progress = Progress(
        TextColumn("calling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    )
    stream = output is None and output_format is OutputFormat.json
    with progress:
        total = sum(_count_results(str(p), sample) for p in vcf) if err_console.is_terminal else None
        bar = progress.add_task("call", total=total)
        for kind, text in _outcomes(tasks, jobs):
            progress.advance(bar)
            if kind == "error":
                failures += 1
                err_console.print(f"[bold red]error:[/] {text}", highlight=False, soft_wrap=True)
            elif output_format is OutputFormat.json:
                if stream:
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
                else:
                    lines.append(text)
            elif output is None:
                out_console.print(_render_table(json.loads(text), all_genes))
            else:
                lines.append(text)
    if output is not None:
        if output_format is OutputFormat.json:
            body = lines[0] + "\n" if len(lines) == 1 else "".join(line + "\n" for line in lines)
        else:
            capture = Console(record=True, width=160, file=io.StringIO())
            for text in lines:
                capture.print(_render_table(json.loads(text), all_genes))
            body = capture.export_text()
        atomic_write(output, body)
    if failures:
        raise typer.Exit(1)


def _parse_assignments(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        if "=" not in item:
            fail(f"{option} {item!r}: expected GENE=VALUE, e.g. CYP2C19=\"Poor Metabolizer\"")
        gene, value = item.split("=", 1)
        out[gene.strip().upper()] = value.strip().strip('"')
    return out


def _load_call(path: Optional[Path]) -> CallResult | None:
    from .genomics.result import read_call_result

    return None if path is None else read_call_result(path)


def _hla(call: CallResult | None) -> dict[str, str]:
    """Typed HLA diplotypes (outside calls) of a call result."""
    if call is None:
        return {}
    return {g: r.diplotypes[0] for g, r in call.genes.items() if g.startswith("HLA-") and r.diplotypes}


def _patient(
    call: CallResult | None, phenotype: Optional[list[str]], diplotype: Optional[list[str]],
    weight: Optional[float], height: Optional[float], age: Optional[float], sex: Optional[str],
    crcl: Optional[float], with_: Optional[list[str]],
) -> PatientFactors:
    from .pk.drug_model import GeneInput, PatientFactors, gene_inputs

    genes = gene_inputs(call.genes) if call is not None else {}
    for gene, text in _parse_assignments(phenotype, "--phenotype").items():
        genes[gene] = GeneInput.from_text(gene, text)
    for gene, text in _parse_assignments(diplotype, "--diplotype").items():
        if "/" not in text:
            fail(f"--diplotype {gene}={text!r}: expected a diplotype such as *1/*3")
        genes[gene] = GeneInput.from_text(gene, text)
    return PatientFactors(
        weight_kg=weight, height_cm=height, age_years=age, sex=sex.upper() if sex else None,
        crcl_ml_min=crcl, genes=genes, comedications=tuple(with_ or ()),
    )


@app.command()
def simulate(
    drug: Annotated[str, typer.Argument(help="drug name (see pgxtwin drugs)")],
    dose: Annotated[str, typer.Option(help="e.g. '75 mg', '0.1 mg/kg', '5 mg/m2'")],
    every: Annotated[str, typer.Option(help="dosing interval, e.g. 24h, 12 h")] = "24h",
    days: Annotated[float, typer.Option(help="days of dosing")] = 14.0,
    genotype: GenotypeOpt = None,
    phenotype: PhenotypeOpt = None,
    diplotype: DiplotypeOpt = None,
    weight: WeightOpt = None,
    height: HeightOpt = None,
    age: AgeOpt = None,
    sex: SexOpt = None,
    crcl: CrclOpt = None,
    with_: WithOpt = None,
    n: Annotated[int, typer.Option(help="virtual patients (1 = typical patient)")] = 1,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    times: Annotated[Optional[str], typer.Option(help="hours, comma-separated, instead of the default grid")] = None,
    as_json: JsonOpt = False,
    plot: Annotated[Optional[Path], typer.Option(help="write a PNG plot here")] = None,
) -> None:
    """Simulate a regimen for a typical patient or a virtual population."""
    import numpy as np

    from .pk.scenarios import parse_every, simulate_regimen

    name = resolve_drug(drug)
    patient = _patient(_load_call(genotype), phenotype, diplotype, weight, height, age, sex, crcl, with_)
    grid = None
    if times is not None:
        try:
            grid = np.array([float(t) for t in times.split(",") if t.strip()])
        except ValueError:
            fail(f"--times {times!r}: expected hours separated by commas")
    try:
        sim = simulate_regimen(name, patient, dose=dose, every_h=parse_every(every), days=days, n=n, seed=seed, times_h=grid)
    except PgxInputError:
        raise  # as it is: main() names its field by the option
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    summary = sim.summary()
    if plot is not None:
        from .report.plots import concentration_plot

        concentration_plot(sim, plot)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"{sim.drug}: {dose} every {every} for {days:g} days, n={n}", title_justify="left")
    table.add_column("Analyte")
    table.add_column("Metric (last interval)")
    table.add_column("Median", justify="right")
    table.add_column("5th-95th percentile", justify="right")
    for analyte, values in summary["metrics"].items():
        for metric, q in values.items():
            table.add_row(analyte, metric, f"{q['median']:.4g}", f"{q['p05']:.4g} - {q['p95']:.4g}")
    out_console.print(table)
    for gene, status in summary["phenotypes"].items():
        out_console.print(f"{gene}: {status['genotype_phenotype'] or 'not given'}"
                          + (f" -> {status['phenotype']}" if status["co_medications"] else ""))
    for note in summary["notes"]:
        out_console.print(f"[yellow]note:[/] {note}")
    if plot is not None:
        out_console.print(f"plot written to {plot}")


@app.command()
def evaluate(
    drug: Annotated[str, typer.Argument(help="drug name")],
    dose: Annotated[str, typer.Option(help="e.g. '75 mg'")],
    every: Annotated[str, typer.Option(help="dosing interval, e.g. 24h")] = "24h",
    genotype: GenotypeOpt = None,
    phenotype: PhenotypeOpt = None,
    diplotype: DiplotypeOpt = None,
    weight: WeightOpt = None,
    height: HeightOpt = None,
    age: AgeOpt = None,
    sex: SexOpt = None,
    crcl: CrclOpt = None,
    with_: WithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a prescription: genotype risks, CPIC recommendation, predicted exposure, verdict."""
    from .knowledge.drugs import UnknownDrug
    from .pk.scenarios import parse_every
    from .twin.evaluate import evaluate_prescription

    call = _load_call(genotype)
    patient = _patient(call, phenotype, diplotype, weight, height, age, sex, crcl, with_)
    try:
        result = evaluate_prescription(drug, dose, parse_every(every), patient, hla=_hla(call))
    except UnknownDrug as exc:
        raise PgxInputError(str(exc)) from None
    except PgxInputError:
        raise  # as it is: main() names its field by the option
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), default=float) + "\n")
        return
    colour = {"ok": "green", "adjust_dose": "yellow", "avoid": "red", "insufficient_data": "magenta"}[result.verdict]
    out_console.print(f"[bold]{result.drug}[/] {dose} every {every}: [bold {colour}]{result.verdict}[/]")
    for reason in result.reasons:
        out_console.print(f"  - {reason}", highlight=False)
    for item in result.missing:
        out_console.print(f"  - missing: {item}", highlight=False)
    if result.suggested_regimen is not None:
        best = result.suggested_regimen.best
        out_console.print(f"  suggested: {best.dose_mg:g} mg every {best.interval_h:g} h"
                          f" (probability of target attainment {best.pta:.0%})")


@app.command()
def estimate(
    drug: Annotated[str, typer.Argument(help="drug name")],
    doses: Annotated[Path, typer.Option(help="CSV: time_h,amount_mg")],
    observations: Annotated[Path, typer.Option(help="CSV: time_h,concentration_mg_per_l[,blq]")],
    genotype: GenotypeOpt = None,
    phenotype: PhenotypeOpt = None,
    diplotype: DiplotypeOpt = None,
    weight: WeightOpt = None,
    height: HeightOpt = None,
    age: AgeOpt = None,
    sex: SexOpt = None,
    crcl: CrclOpt = None,
    with_: WithOpt = None,
    analyte: Annotated[Optional[str], typer.Option(help="measured analyte (default: the drug's main one)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Bayesian (MAP + Laplace) individual parameters from measured levels; predicts the next trough."""
    from .twin.estimation import estimate as run_estimate, read_doses_csv, read_observations_csv

    name = resolve_drug(drug)
    patient = _patient(_load_call(genotype), phenotype, diplotype, weight, height, age, sex, crcl, with_)
    dose_rows = read_doses_csv(doses)
    obs_rows = read_observations_csv(observations, dose_rows)
    try:
        result = run_estimate(name, patient, dose_rows, obs_rows, analyte)
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    out = result.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(out) + "\n")
        return
    table = Table(title=f"{name}: individual parameters ({len(obs_rows)} observations)", title_justify="left")
    for column in ("Parameter", "Prior", "Estimate", "90% interval"):
        table.add_column(column, justify="right" if column != "Parameter" else "left")
    for pname, p in out["parameters"].items():
        table.add_row(pname, f"{p['prior']:.4g}", f"{p['estimate']:.4g}", f"{p['p05']:.4g} - {p['p95']:.4g}")
    out_console.print(table)
    pred = out["prediction"]
    out_console.print(
        f"next trough: {pred['next_trough_mg_per_l']:.4g} mg/L (90% interval {pred['p05']:.4g} - {pred['p95']:.4g})"
    )
    for note in out.get("notes", []):
        out_console.print(f"[yellow]note:[/] {note}", highlight=False)


@app.command("exposure-ratio")
def exposure_ratio_cmd(
    drug: Annotated[str, typer.Argument(help="drug name")],
    gene: Annotated[str, typer.Option(help="gene, e.g. CYP2C19")],
    test: Annotated[str, typer.Option(help="phenotype or diplotype of the test group")],
    reference: Annotated[str, typer.Option(help="phenotype or diplotype of the reference group")],
    metric: Annotated[str, typer.Option(help="auc, cl, css, cmax or cmin")] = "auc",
    analyte: Annotated[Optional[str], typer.Option(help="analyte (default: the drug's main one)")] = None,
    design: Annotated[str, typer.Option(help="single_dose or steady_state")] = "single_dose",
    with_: Annotated[Optional[list[str]], typer.Option("--with", help="co-medication of the test group")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Predicted typical-patient exposure of one genotype group relative to another."""
    from .pk.scenarios import exposure_ratio

    if metric not in ("auc", "cl", "css", "cmax", "cmin"):
        fail(f"--metric {metric!r}: expected auc, cl, css, cmax or cmin")
    if design not in ("single_dose", "steady_state"):
        fail(f"--design {design!r}: expected single_dose or steady_state")
    name = resolve_drug(drug)
    try:
        result = exposure_ratio(
            name, gene.upper(), test, reference, metric=metric, analyte=analyte, design=design,  # type: ignore[arg-type]
            with_drugs=tuple(with_ or ()),
        )
    except ValueError as exc:
        raise PgxInputError(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    else:
        out_console.print(
            f"{result.drug} {result.metric} ({result.analyte}, {result.design}, {result.regimen}):"
            f" {result.test} / {result.reference} = [bold]{result.ratio:.3g}[/]"
        )


@app.command()
def drugs(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the drug library with its model structure, genes and sources."""
    from .knowledge.drugs import drug_names, load_drug

    rows = []
    for name in drug_names():
        drug = load_drug(name)
        genes = sorted({e.gene for e in drug.genotype_effects})
        sources = sorted({p.source for p in drug.parameters.values()})
        rows.append({"drug": name, "structure": drug.model.structure, "genes": genes, "cpic_genes": drug.cpic_genes,
                     "analytes": [a.name for a in drug.model.analytes], "sources": sources})
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title=f"Drug library ({len(rows)} drugs)", title_justify="left")
    for column in ("Drug", "Model", "Genotype effects", "Parameter sources"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["drug"], row["structure"], ", ".join(row["genes"]) or "-", "; ".join(row["sources"]))
    out_console.print(table)


@app.command()
def report(
    patient_id: Annotated[str, typer.Argument(help="the twin's patient id")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write")],
    plots: Annotated[Optional[Path], typer.Option(help="also export the plots as PNG files into this folder")] = None,
) -> None:
    """One self-contained HTML report of the twin: genotype, phenotypes, evaluations, plots."""
    from .cli_twin import write_report

    write_report(patient_id, output, plots)


def _register_subcommands() -> None:
    from .cli_import import export, import_bundle
    from .cli_population import population
    from .cli_procova import analyse
    from .cli_serve import serve
    from .cli_trial import trial_app
    from .cli_twin import twin_app

    trial_app.command("analyse")(analyse)
    app.add_typer(twin_app, name="twin")
    app.add_typer(trial_app, name="trial")
    app.command()(population)
    app.command()(serve)
    app.command("import")(import_bundle)
    app.command()(export)


_register_subcommands()


def main() -> None:
    """Entry point: one-line errors for user mistakes, never a traceback."""
    from .pk.scenarios import RegimenError

    try:
        app()
    except PgxInputError as exc:
        # a regimen value is named by its command-line option (--dose, --weight)
        message = exc.naming(lambda name: f"--{name}") if isinstance(exc, RegimenError) else str(exc)
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""``pgxtwin`` command line (Typer + Rich).

A user's mistake (bad file, unknown gene, malformed value) is reported as one line naming the
file/field and the reason, with a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import PgxInputError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="pgxtwin: pharmacogenomic digital twin.")
err_console = Console(stderr=True)
# tables stay readable when piped (Rich would otherwise wrap at 80 columns)
out_console = Console() if sys.stdout.isatty() else Console(width=160)


@app.callback()
def _root() -> None:
    """pgxtwin: pharmacogenomic digital twin."""


class Assembly(str, Enum):
    GRCh38 = "GRCh38"
    GRCh37 = "GRCh37"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _call_one_file(args: tuple[str, str, Optional[str], list, Optional[list[str]]]) -> tuple[str, list[str], Optional[str]]:
    """Worker: call one VCF; returns (path, JSON results, one-line error or None)."""
    from .genomics.caller import call_vcf

    path, assembly, sample, outside, genes = args
    try:
        results = [r.model_dump_json() for r in call_vcf(path, assembly=assembly, sample=sample, outside_calls=outside, genes=genes)]
        return path, results, None
    except PgxInputError as exc:
        return path, [], str(exc)


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


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        console=err_console, transient=True, disable=len(tasks) < 2 or not err_console.is_terminal,
    )
    stream = output is None and output_format is OutputFormat.json
    with progress:
        bar = progress.add_task("call", total=len(tasks))
        if jobs > 1 and len(tasks) > 1:
            pool = ProcessPoolExecutor(max_workers=jobs)
            outcomes = pool.map(_call_one_file, tasks)
        else:
            pool = None
            outcomes = map(_call_one_file, tasks)
        try:
            for path, results, error in outcomes:
                progress.advance(bar)
                if error is not None:
                    failures += 1
                    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
                    continue
                for text in results:
                    if output_format is OutputFormat.json:
                        if stream:
                            sys.stdout.write(text + "\n")
                            sys.stdout.flush()
                        else:
                            lines.append(text)
                    else:
                        table = _render_table(json.loads(text), all_genes)
                        if output is None:
                            out_console.print(table)
                        else:
                            lines.append(text)
        finally:
            if pool is not None:
                pool.shutdown()
    if output is not None:
        if output_format is OutputFormat.json:
            body = lines[0] + "\n" if len(lines) == 1 else "".join(line + "\n" for line in lines)
        else:
            capture = Console(record=True, width=160, file=open(os.devnull, "w"))
            for text in lines:
                capture.print(_render_table(json.loads(text), all_genes))
            body = capture.export_text()
        _atomic_write(output, body)
    if failures:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: one-line errors for user mistakes, never a traceback."""
    try:
        app()
    except PgxInputError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

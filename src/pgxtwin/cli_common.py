"""Pieces shared by the command modules (``cli``, ``cli_twin``): consoles, one-line failures,
the options that describe a patient."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console


err_console = Console(stderr=True)
# tables stay readable when piped (Rich would otherwise wrap at 80 columns)
out_console = Console() if sys.stdout.isatty() else Console(width=160)


def fail(message: str, code: int = 2) -> None:
    """A user's mistake: one line on standard error and a non-zero exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# Options shared by the commands that describe a patient (simulate, evaluate, estimate).
GenotypeOpt = Annotated[Optional[Path], typer.Option("--genotype", help="pgxtwin call JSON result")]
PhenotypeOpt = Annotated[Optional[list[str]], typer.Option("--phenotype", help='GENE="Poor Metabolizer" (repeatable)')]
DiplotypeOpt = Annotated[Optional[list[str]], typer.Option("--diplotype", help='GENE="*1/*3" (repeatable)')]
WeightOpt = Annotated[Optional[float], typer.Option("--weight", help="kg")]
HeightOpt = Annotated[Optional[float], typer.Option("--height", help="cm")]
AgeOpt = Annotated[Optional[float], typer.Option("--age", help="years")]
SexOpt = Annotated[Optional[str], typer.Option("--sex", help="F or M")]
CrclOpt = Annotated[Optional[float], typer.Option("--crcl", help="creatinine clearance, mL/min")]
WithOpt = Annotated[Optional[list[str]], typer.Option("--with", help="co-medication (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]



"""``pgxtwin population``: write a virtual population (genotypes, phenotypes, covariates) to
Parquet.  The lead registers :func:`population` as a command of the main Typer app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cli_common import err_console, fail, out_console
from .errors import PgxInputError


def parse_mix(text: str) -> dict[str, float]:
    """``european=0.6,east_asian=0.4`` -> {group: fraction}; errors name ``--mix``."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise PgxInputError(f"--mix: {part.strip()!r} is not group=fraction (e.g. european=0.6,east_asian=0.4)")
        try:
            fraction = float(value)
        except ValueError:
            raise PgxInputError(f"--mix: fraction of {name} is not a number: {value.strip()!r}") from None
        if name in mix:
            raise PgxInputError(f"--mix: group {name} given twice")
        mix[name] = fraction
    return mix


def parse_genes(text: str) -> tuple[str, ...]:
    """``CYP2C19,cyp2c9`` -> ("CYP2C19", "CYP2C9"); errors name ``--genes``."""
    genes = tuple(g.strip().upper() for g in text.split(","))
    if not all(genes):
        raise PgxInputError(f"--genes: empty gene name in {text!r} (e.g. CYP2C19,CYP2C9)")
    return genes


def parse_age_range(text: str) -> tuple[float, float]:
    """``18-85`` -> (18.0, 85.0) years; errors name ``--age-range``."""
    low, sep, high = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return float(low), float(high)
    except ValueError:
        raise PgxInputError(f"--age-range: {text!r} is not LOW-HIGH in years (e.g. 18-85)") from None


def population(
    n: Annotated[int, typer.Option("--n", help="number of virtual patients")],
    mix: Annotated[str, typer.Option("--mix", help="CPIC groups and fractions, e.g. european=0.6,east_asian=0.4")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet file to write")],
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same population)")] = 0,
    genes: Annotated[
        Optional[str], typer.Option("--genes", help="genes to genotype, e.g. CYP2C19,CYP2C9 (default: all with data for the mix)")
    ] = None,
    age_range: Annotated[str, typer.Option("--age-range", help="adult ages in years, LOW-HIGH")] = "18-85",
) -> None:
    """Generate a virtual population: CPIC allele frequencies per biogeographic group,
    Hardy-Weinberg diplotypes, knowledge-base phenotypes, NHANES-based covariates."""
    from .population.generator import PopulationSpec, excluded_genes, schema, write_population

    try:
        spec = PopulationSpec(
            mix=parse_mix(mix),
            genes=None if genes is None else parse_genes(genes),
            seed=seed,
            age_range=parse_age_range(age_range),
        )
        columns = schema(spec).names
        left_out = excluded_genes(spec) if spec.genes is None else {}
        if n < 1:
            raise PgxInputError(f"--n: must be at least 1, not {n}")
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("patients", total=n)
            write_population(spec, n, output, progress=lambda done: bar.advance(task, done))
    except PgxInputError as exc:
        fail(str(exc))
        return
    gene_columns = [c.removesuffix("_phenotype") for c in columns if c.endswith("_phenotype")]
    out_console.print(f"wrote {n} patients to {output} (genes: {', '.join(gene_columns) or 'none'})", highlight=False)
    for gene, reason in left_out.items():
        out_console.print(f"note: {gene} left out: {reason}", highlight=False)

"""``pgxtwin population``: write a virtual population (genotypes, phenotypes, covariates) to
Parquet.  The lead registers :func:`population` as a command of the main Typer app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cli_common import err_console, fail, out_console
from .errors import PgxInputError


def _parse_fractions(text: str, option: str, what: str, example: str) -> dict[str, float]:
    """``a=0.6,b=0.4`` -> {a: 0.6, b: 0.4} (names lower-cased); errors name ``option``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise PgxInputError(f"{option}: {part.strip()!r} is not {what}=fraction (e.g. {example})")
        try:
            fraction = float(value)
        except ValueError:
            raise PgxInputError(f"{option}: fraction of {name} is not a number: {value.strip()!r}") from None
        if name in out:
            raise PgxInputError(f"{option}: {what} {name} given twice")
        out[name] = fraction
    return out


def parse_mix(text: str) -> dict[str, float]:
    """``european=0.6,east_asian=0.4`` -> {group: fraction}; errors name ``--mix``."""
    return _parse_fractions(text, "--mix", "group", "european=0.6,east_asian=0.4")


def parse_comedications(text: str) -> dict[str, float]:
    """``omeprazole=0.1,fluoxetine=0.05`` -> {drug: prevalence}; errors name
    ``--comedication-prevalence``."""
    return _parse_fractions(text, "--comedication-prevalence", "drug", "omeprazole=0.1,fluoxetine=0.05")


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
    comedication_prevalence: Annotated[
        Optional[str],
        typer.Option(
            "--comedication-prevalence",
            help="fraction of patients taking each perpetrator drug, e.g. omeprazole=0.1 (your figures; no defaults)",
        ),
    ] = None,
) -> None:
    """Generate a virtual population: CPIC allele frequencies per biogeographic group,
    Hardy-Weinberg diplotypes, knowledge-base phenotypes, NHANES-based covariates by age band
    and sex, and optional co-medications (column ``comedications``)."""
    from .population.generator import PopulationSpec, excluded_genes, schema, write_population

    try:
        spec = PopulationSpec(
            mix=parse_mix(mix),
            genes=None if genes is None else parse_genes(genes),
            seed=seed,
            age_range=parse_age_range(age_range),
            comedication_prevalence=None if comedication_prevalence is None else parse_comedications(comedication_prevalence),
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

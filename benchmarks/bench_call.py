"""Benchmark ``pgxtwin.genomics.caller.call_vcf`` (figures only, no asserts).

    .venv/bin/python benchmarks/bench_call.py            # full run
    .venv/bin/python benchmarks/bench_call.py --quick    # small smoke run

Figures (targets in brackets):
1. one sample, every callable gene, after start-up (imports and caches warmed by a first call
   on another file)                                                        [< 0.3 s]
2. samples per second on a 1,000-sample VCF of the pharmacogene loci        [>= 500 /s, 2 cores]
3. whole-genome-like single-sample bgzipped + tabix-indexed VCF (~2.5 M records) [< 2 s]
4. PyPGx 0.27 allele prediction on the same (phased) input, if it runs without Beagle/Java.

Generated inputs are cached outside the repository (``$PGXTWIN_BENCH_CACHE`` or
``$TMPDIR/pgxtwin-bench-cache``); delete that folder to regenerate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.genomics import vcfgen  # noqa: E402

PYPGX_GENES = ("CYP2C19", "CYP2C9", "TPMT")


def _time(fn, repeat: int = 1) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _line(label: str, value: str, target: str = "") -> None:
    print(f"{label:<62} {value:>14}  {target}")


def bench_single_sample(call_vcf, repeat: int) -> None:
    warm = vcfgen.cached(
        "single_warmup.vcf", lambda p: vcfgen.write_population_vcf(p, 1, seed=1000)[0]
    )
    t0 = time.perf_counter()
    list(call_vcf(warm))
    first = time.perf_counter() - t0
    _line("first call in this process (imports done, caches cold)", f"{first:.3f} s")
    times = []
    for k in range(repeat):
        fresh = vcfgen.cached(
            f"single_{k}.vcf", lambda p, k=k: vcfgen.write_population_vcf(p, 1, seed=2000 + k)[0]
        )
        t0 = time.perf_counter()
        [result] = list(call_vcf(fresh))
        times.append(time.perf_counter() - t0)
    n_genes = len(result.genes)
    _line(
        f"1 sample x {n_genes} genes, fresh file after warm-up (median of {repeat})",
        f"{statistics.median(times):.3f} s",
        "[target < 0.3 s]",
    )


def bench_population(call_vcf, n_samples: int) -> Path:
    for label, bgzip in (("plain VCF", False), ("bgzip + tabix", True)):
        path = vcfgen.cached(
            f"pop_{n_samples}_{'gz' if bgzip else 'plain'}.vcf",
            lambda p, bgzip=bgzip: vcfgen.write_population_vcf(p, n_samples, seed=42, bgzip=bgzip)[0],
        )
        t0 = time.perf_counter()
        count = sum(1 for _ in call_vcf(path))
        elapsed = time.perf_counter() - t0
        _line(
            f"{count} samples x all genes, unphased, {label}",
            f"{count / elapsed:,.0f} /s",
            f"({elapsed:.2f} s) [target >= 500 /s]",
        )
    return path


def bench_genome(call_vcf, n_filler: int) -> None:
    path = vcfgen.cached(
        f"genome_{n_filler}.vcf", lambda p: vcfgen.write_genome_like_vcf(p, n_filler=n_filler, seed=5)
    )
    size = path.stat().st_size / 2**20
    records = n_filler  # filler count requested (a few duplicates removed) + ~1,000 defining loci
    times = _time(lambda: list(call_vcf(path)), repeat=3)
    _line(
        f"whole-genome-like VCF (~{records / 1e6:.1f} M records, {size:.0f} MiB, indexed)",
        f"{min(times):.3f} s",
        f"(best of 3; {', '.join(f'{t:.2f}' for t in times)}) [target < 2 s]",
    )


def bench_pypgx(call_vcf, n_samples: int, genes: tuple[str, ...]) -> None:
    """PyPGx's chip pipeline skips Beagle when the input is fully phased: time its allele
    prediction (import_variants + predict_alleles) against ours on the same phased file."""
    path = vcfgen.cached(
        f"pypgx_{n_samples}_phased.vcf",
        lambda p: vcfgen.write_population_vcf(p, n_samples, seed=42, phased=True, bgzip=True, genes=genes)[0],
    )
    try:
        from pypgx.api import genotype, utils  # noqa: F401
    except Exception as exc:  # pragma: no cover - environment dependent
        _line("PyPGx allele prediction", "skipped", f"(cannot import pypgx: {exc!r})")
        return
    t0 = time.perf_counter()
    ours = list(call_vcf(path, genes=list(genes)))
    ours_t = time.perf_counter() - t0
    pypgx_t = 0.0
    for gene in genes:
        try:
            t0 = time.perf_counter()
            imported = utils.import_variants(gene, str(path), assembly="GRCh38", platform="Chip")
            if imported.type != "VcfFrame[Consolidated]":
                _line("PyPGx allele prediction", "skipped",
                      f"(input not seen as fully phased ({imported.type}): would need Beagle/Java)")
                return
            utils.predict_alleles(imported)
            pypgx_t += time.perf_counter() - t0
        except Exception as exc:
            _line("PyPGx allele prediction", "skipped", f"({gene}: {type(exc).__name__}: {exc})")
            traceback.print_exc(limit=2)
            return
    _line(
        f"PyPGx import_variants+predict_alleles, {n_samples} phased samples x {len(genes)} genes",
        f"{pypgx_t:.2f} s",
        f"(pgxtwin full call on the same file: {ours_t:.3f} s; ratio PyPGx/pgxtwin = {pypgx_t / ours_t:,.0f}x)",
    )
    # PyPGx's next step (genotype.call_genotypes) is not timed: report whether it runs here
    try:
        alleles = utils.predict_alleles(utils.import_variants(genes[0], str(path), assembly="GRCh38", platform="Chip"))
        genotype.call_genotypes(alleles=alleles)
        note = "runs"
    except Exception as exc:
        import pandas

        note = f"fails here: {type(exc).__name__}: {exc} (pandas {pandas.__version__})"
    _line("PyPGx genotype.call_genotypes (diplotypes; not timed)", "", note)
    assert ours  # keep the result alive for the timing above


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--no-pypgx", action="store_true", help="skip the PyPGx comparison")
    args = parser.parse_args()

    n_samples = 100 if args.quick else 1000
    n_filler = 200_000 if args.quick else 2_500_000
    repeat = 3 if args.quick else 7
    pypgx_samples, pypgx_genes = (10, PYPGX_GENES[:1]) if args.quick else (100, PYPGX_GENES)

    print(f"# cache: {vcfgen.cache_dir()}  cores: {os.cpu_count()}  python: {sys.version.split()[0]}")
    t0 = time.perf_counter()
    from pgxtwin.genomics.caller import call_vcf

    _line("import pgxtwin.genomics.caller", f"{time.perf_counter() - t0:.3f} s")
    bench_single_sample(call_vcf, repeat)
    bench_population(call_vcf, n_samples)
    bench_genome(call_vcf, n_filler)
    if args.no_pypgx:
        _line("PyPGx allele prediction", "skipped", "(--no-pypgx)")
    else:
        bench_pypgx(call_vcf, pypgx_samples, pypgx_genes)


if __name__ == "__main__":
    main()

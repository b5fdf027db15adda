"""Shared fixtures for the genomics tests: VCF writing (``vcfgen``) and one-sample calling."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pgxtwin.genomics.caller import call_vcf

from . import vcfgen

_counter = itertools.count()


@pytest.fixture(scope="session")
def vcf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder (usable from hypothesis tests, unlike ``tmp_path``)."""
    return tmp_path_factory.mktemp("vcfs")


@pytest.fixture(scope="session")
def make_vcf(vcf_dir: Path):
    """``make_vcf(samples, **write_vcf_options) -> Path`` with a fresh file name each time."""

    def make(samples, *, name: str | None = None, **options) -> Path:
        stem = name or f"t{next(_counter):05d}"
        return vcfgen.write_vcf(vcf_dir / f"{stem}.vcf", samples, **options)

    return make


def call_one(path, **options):
    """The single CallResult of a (one-sample or ``sample=``) call."""
    results = list(call_vcf(path, **options))
    assert len(results) == 1, [r.sample for r in results]
    return results[0]

"""The project's cited corrections to pypgx's allele tables (``data/overlay.yaml``)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Assembly = Literal["GRCh38", "GRCh37"]
OVERLAY_RESOURCE = "overlay.yaml"


class _Correction(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    gene: str
    assembly: Assembly
    variant: str = Field(pattern=r"^[0-9XYMT]+-\d+-[ACGT]+-[ACGT]+$")
    source: str = Field(min_length=20)


class AddCoreVariant(_Correction):
    """The variant belongs to every non-structural allele of the gene except ``except_``."""

    kind: Literal["add_core_variant"]
    except_: list[str] = Field(alias="except")


class VariantSynonym(_Correction):
    """``synonym`` is another representation (other VCF position / alignment) of ``variant``."""

    kind: Literal["variant_synonym"]
    synonym: str = Field(pattern=r"^[0-9XYMT]+-\d+-[ACGT]+-[ACGT]+$")


class OptionalVariant(_Correction):
    """``allele`` may or may not carry ``variant`` (an IUPAC ambiguity code in CPIC's table)."""

    kind: Literal["optional_variant"]
    allele: str


class AddAllele(_Correction):
    """An allele CPIC defines that pypgx lacks: its single core ``variant``, function and value."""

    kind: Literal["add_allele"]
    allele: str
    function: str
    activity_value: float | None


class FullySpecified(_Correction):
    """``allele`` states a base at every defining position (``variant`` names the one that
    distinguishes it from the reference allele); affects ranking only."""

    kind: Literal["fully_specified"]
    allele: str


Correction = AddCoreVariant | VariantSynonym | OptionalVariant | AddAllele | FullySpecified


class Overlay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal[1]
    corrections: list[Correction]

    def for_gene(self, gene: str, assembly: str) -> list[Correction]:
        return [c for c in self.corrections if c.gene == gene and c.assembly == assembly]


def overlay_bytes() -> bytes:
    return resources.files("pgxtwin.knowledge.data").joinpath(OVERLAY_RESOURCE).read_bytes()


@lru_cache(maxsize=1)
def load_overlay() -> Overlay:
    """Parse and validate the overlay (pydantic: a malformed entry fails loudly at start-up)."""
    return Overlay.model_validate(yaml.safe_load(overlay_bytes()))


def overlay_digest() -> str:
    return hashlib.sha256(overlay_bytes()).hexdigest()

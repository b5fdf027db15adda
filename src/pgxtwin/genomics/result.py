"""The call result: the JSON contract other tools rely on (pydantic models)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from ..errors import PgxInputError

Status = Literal["called", "ambiguous", "partial", "no_call", "outside_call"]


class AlleleInfo(BaseModel):
    name: str
    function: str | None
    activity_value: float | None


class GeneResult(BaseModel):
    status: Status
    diplotypes: list[str] = Field(description="canonical diplotypes, best first (all that fit the data)")
    scores: list[int] = Field(default_factory=list, description="definition score of each diplotype")
    ranking_rule: str | None = None
    phenotype: str
    activity_score: float | None
    alleles: list[AlleleInfo]
    detected_alleles: list[str] = Field(default_factory=list, description="unphased allele list (DPYD)")
    missing_positions: list[str]
    unexpected_variants: list[str]
    notes: list[str]


class KnowledgeBaseVersion(BaseModel):
    source: str
    pypgx_version: str
    tables_sha256: str
    overlay_sha256: str
    version: str = Field(description="short id: pypgx version + first 12 hex of a digest of both")


class CallResult(BaseModel):
    source: str
    sample: str
    assembly: str
    knowledge_base: KnowledgeBaseVersion
    genes: dict[str, GeneResult]


def read_call_result(path: str | Path) -> CallResult:
    """The first result of a ``pgxtwin call --format json`` file (JSON Lines: one per sample)."""
    try:
        first = Path(path).read_text(encoding="utf-8").splitlines()[0]
        return CallResult.model_validate_json(first)
    except (OSError, UnicodeDecodeError, IndexError, ValidationError) as exc:
        raise PgxInputError(f"not a pgxtwin call result ({exc.__class__.__name__})", source=str(path)) from None

"""Locate and read the tables that ship with the PyPI package ``pypgx`` (MIT licence).

Only pypgx's *data* is used: ``pypgx/api/data/*.csv``.  Importing ``pypgx`` costs about
two seconds (it pulls in pandas, matplotlib and fuc), so the folder is found through the
import system's finder without executing the package.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
from functools import lru_cache
from pathlib import Path

PYPGX_DISTRIBUTION = "pypgx"
TABLE_NAMES = (
    "allele-table.csv",
    "variant-table.csv",
    "gene-table.csv",
    "diplotype-table.csv",
    "equation-table.csv",
    "phenotype-table.csv",
    "cpic-table.csv",
    "recommendation-table.csv",
)


class KnowledgeBaseMissing(RuntimeError):
    """pypgx's tables are not installed."""


@lru_cache(maxsize=1)
def pypgx_data_dir() -> Path:
    """Folder holding pypgx's CSV tables, found without importing ``pypgx``.

    ``find_spec`` on a top-level name resolves the package's location but does not run
    its ``__init__``.
    """
    spec = importlib.util.find_spec(PYPGX_DISTRIBUTION)
    if spec is None or not spec.submodule_search_locations:
        raise KnowledgeBaseMissing("the 'pypgx' package is not installed (pip install pypgx)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "api" / "data"
    if not (folder / "allele-table.csv").is_file():
        raise KnowledgeBaseMissing(f"pypgx is installed but its tables are missing from {folder}")
    return folder


@lru_cache(maxsize=1)
def pypgx_version() -> str:
    """Installed pypgx version (from package metadata, no import)."""
    return importlib.metadata.version(PYPGX_DISTRIBUTION)


@lru_cache(maxsize=None)
def read_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of one pypgx table as dictionaries; ``'N/A'`` cells are kept as-is."""
    if name not in TABLE_NAMES:
        raise KeyError(f"unknown pypgx table {name!r}")
    with open(pypgx_data_dir() / name, newline="", encoding="utf-8") as handle:
        return tuple(csv.DictReader(handle))


def tables_digest() -> str:
    """SHA-256 over the pypgx tables this project reads (name + bytes, in a fixed order)."""
    digest = hashlib.sha256()
    folder = pypgx_data_dir()
    for name in TABLE_NAMES:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()

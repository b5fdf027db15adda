"""The drug library: one YAML file per drug (``library/``), enzyme activities per phenotype
(``enzymes/``) and co-medication effects (``interactions.yaml``), all schema-validated."""

from __future__ import annotations

from ...errors import PgxInputError

import difflib
import hashlib
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import ValidationError

from .schema import Drug, EnzymeActivity, Interactions, Perpetrator

__all__ = [
    "Drug", "EnzymeActivity", "Perpetrator", "UnknownDrug", "drug_names", "enzyme_activity",
    "library_digest", "load_drug", "perpetrators", "resolve_drug",
]


class UnknownDrug(PgxInputError, KeyError):
    """A drug name that is not in the library (a user's mistake); ``suggestions`` lists the nearest names."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
        super().__init__(f"unknown drug {name!r}{hint}")

    def __str__(self) -> str:
        return self.args[0]


def _folder(name: str):
    return resources.files(__name__).joinpath(name)


def _load_yaml(path) -> object:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _validate(model, path):
    try:
        return model.model_validate(_load_yaml(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path.name}: {where}: {first['msg']}") from None


@lru_cache(maxsize=1)
def _library() -> dict[str, Drug]:
    drugs: dict[str, Drug] = {}
    for path in sorted(_folder("library").iterdir(), key=lambda p: p.name):
        if path.name.endswith(".yaml"):
            drug = _validate(Drug, path)
            if path.name != f"{drug.name}.yaml":
                raise ValueError(f"{path.name}: file name must be {drug.name}.yaml")
            drugs[drug.name] = drug
    return drugs


def drug_names() -> tuple[str, ...]:
    return tuple(sorted(_library()))


def resolve_drug(name: str) -> str:
    """Library name for ``name`` (case-insensitive, synonyms allowed) or :class:`UnknownDrug`."""
    key = name.strip().lower()
    library = _library()
    if key in library:
        return key
    for drug in library.values():
        if key in (s.lower() for s in drug.synonyms):
            return drug.name
    names = list(library) + [s.lower() for d in library.values() for s in d.synonyms]
    raise UnknownDrug(name, difflib.get_close_matches(key, names, n=3, cutoff=0.6))


def load_drug(name: str) -> Drug:
    return _library()[resolve_drug(name)]


@lru_cache(maxsize=None)
def enzyme_activity(gene: str) -> EnzymeActivity | None:
    path = _folder("enzymes").joinpath(f"{gene}.yaml")
    return _validate(EnzymeActivity, path) if path.is_file() else None


@lru_cache(maxsize=1)
def perpetrators() -> tuple[Perpetrator, ...]:
    path = _folder("").joinpath("interactions.yaml")
    if not path.is_file():
        return ()
    return tuple(_validate(Interactions, path).perpetrators)


def library_digest() -> str:
    """SHA-256 over every file of the library (recorded with simulations, like the KB version)."""
    digest = hashlib.sha256()
    for folder in ("library", "enzymes"):
        for path in sorted(_folder(folder).iterdir(), key=lambda p: p.name):
            if path.name.endswith(".yaml"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    extra = _folder("").joinpath("interactions.yaml")
    if extra.is_file():
        digest.update(extra.read_bytes())
    return digest.hexdigest()

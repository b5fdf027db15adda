"""Every sourced number of a drug file, for the tests that check each one names its source."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from pgxtwin.knowledge.drugs.schema import Sourced


def sourced_numbers(obj: object, path: str) -> Iterator[tuple[str, Sourced]]:
    """Every :class:`Sourced` number inside a pydantic model, with where it sits."""
    if isinstance(obj, Sourced):
        yield path, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from sourced_numbers(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from sourced_numbers(value, f"{path}[{key}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from sourced_numbers(value, f"{path}[{i}]")

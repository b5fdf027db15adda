"""Errors raised for a user's mistake: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class PgxInputError(ValueError):
    """Bad input from a user (file, field or value), with a message that names it and the reason."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(f"{where}{message}")

"""Errors of the twin store."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked (its message says why)."""


class UnknownTwinError(StoreError, LookupError):
    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        super().__init__(f"no twin for patient {patient_id!r}")


class TwinExistsError(StoreError):
    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        super().__init__(f"a twin for patient {patient_id!r} already exists")


class VersionNotFoundError(StoreError, LookupError):
    def __init__(self, patient_id: str, version: int, current: int) -> None:
        self.patient_id, self.version, self.current = patient_id, version, current
        super().__init__(f"twin {patient_id!r} has no version {version} (versions 0..{current})")


class ConcurrentWriteError(StoreError):
    """An append whose ``expected_version`` is not the twin's current version: someone else wrote first.

    Nothing was written; re-read the twin (``state_at``), re-decide, and append with the new version."""

    def __init__(self, patient_id: str, expected_version: int, current_version: int | None) -> None:
        self.patient_id = patient_id
        self.expected_version = expected_version
        self.current_version = current_version
        now = "unknown" if current_version is None else str(current_version)
        super().__init__(
            f"twin {patient_id!r} is at version {now}, not the expected version {expected_version}: "
            "another write came first; nothing was written (re-read the twin and retry)"
        )

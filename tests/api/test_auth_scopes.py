"""SMART scope rules of REST principals (api/auth.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgxtwin.api.auth import Principal


def _p(scopes: str, patient: str | None = None) -> Principal:
    return Principal("sub", "iss", frozenset(scopes.split()), patient)


def test_v1_and_v2_scopes() -> None:
    assert _p("user/*.read").may("read", "p1")
    assert not _p("user/*.read").may("write", "p1")
    assert _p("user/*.write").may("write", "p1")
    assert _p("system/*.read").may("read", None)
    assert _p("user/*.*").may("write", "p1")
    assert _p("user/*.rs").may("read", "p1") and not _p("user/*.rs").may("write", "p1")
    assert _p("user/*.cud").may("write", "p1")
    assert _p("user/Observation.read").may("read", "p1", "Observation")
    assert not _p("user/Observation.read").may("read", "p1", "Patient")


def test_patient_scoped_token_is_limited_to_its_patient() -> None:
    token = _p("patient/*.read", patient="p1")
    assert token.may("read", "p1")
    assert not token.may("read", "p2")
    assert not token.may("read", None)  # listing across patients
    assert not _p("patient/*.read").may("read", "p1")  # no patient claim: nothing


@given(st.lists(st.text(min_size=0, max_size=30), max_size=5))
def test_unrecognised_scopes_grant_nothing(scopes: list[str]) -> None:
    garbage = [s for s in scopes if not s.startswith(("user/", "system/", "patient/"))]
    principal = Principal("s", "i", frozenset(garbage), "p1")
    assert not principal.may("read", "p1") and not principal.may("write", "p1")

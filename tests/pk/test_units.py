import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgxtwin.pk.units import Dose, DoseBasis, parse_dose, parse_duration


@pytest.mark.parametrize(
    ("text", "amount", "basis"),
    [
        ("75 mg", 75.0, DoseBasis.ABSOLUTE),
        ("1 g", 1000.0, DoseBasis.ABSOLUTE),
        ("500 ug", 0.5, DoseBasis.ABSOLUTE),
        ("500 µg", 0.5, DoseBasis.ABSOLUTE),
        ("500 mcg", 0.5, DoseBasis.ABSOLUTE),
        ("0.1 mg/kg", 0.1, DoseBasis.PER_KG),
        ("5 mg/m2", 5.0, DoseBasis.PER_M2),
        ("5 mg/m²", 5.0, DoseBasis.PER_M2),
        ("2 g/m^2", 2000.0, DoseBasis.PER_M2),
        ("10 ug/kg", 0.01, DoseBasis.PER_KG),
    ],
)
def test_parse_dose(text: str, amount: float, basis: DoseBasis) -> None:
    dose = parse_dose(text)
    assert dose.basis is basis
    assert dose.amount == pytest.approx(amount, rel=1e-12)


def test_relative_doses_resolve_to_mg() -> None:
    assert parse_dose("0.1 mg/kg").to_mg(weight_kg=70) == pytest.approx(7.0)
    assert parse_dose("5 mg/m2").to_mg(bsa_m2=1.8) == pytest.approx(9.0)
    assert parse_dose("75 mg").to_mg() == 75.0
    with pytest.raises(ValueError, match="weight_kg"):
        parse_dose("0.1 mg/kg").to_mg()
    with pytest.raises(ValueError, match="bsa_m2"):
        parse_dose("5 mg/m2").to_mg(weight_kg=70)
    with pytest.raises(ValueError, match="positive"):
        Dose(1.0, DoseBasis.PER_KG).to_mg(weight_kg=-3)


@pytest.mark.parametrize(("text", "hours"), [("24h", 24.0), ("12 h", 12.0), ("1 d", 24.0), ("30 min", 0.5), ("90 s", 0.025)])
def test_parse_duration(text: str, hours: float) -> None:
    assert parse_duration(text) == pytest.approx(hours)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "non-empty"),
        ("abc", "cannot be parsed"),
        ("75", "no unit"),
        ("-5 mg", "must be positive"),
        ("0 mg", "must be positive"),
        ("5 mg/L", "dimension"),
        ("12 h", "dimension"),
        ("5 %", "dimension"),
        ("nan mg", "finite"),
        ("75 mg mg", "dimension"),
    ],
)
def test_parse_dose_errors_name_input_and_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as err:
        parse_dose(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(("text", "reason"), [("75 mg", "dimension"), ("-1 h", "must be positive"), ("soon", "cannot be parsed")])
def test_parse_duration_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


_MASS_UNITS = {"mg": 1.0, "g": 1000.0, "ug": 1e-3, "µg": 1e-3, "mcg": 1e-3}


@given(
    value=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    unit=st.sampled_from(sorted(_MASS_UNITS)),
    per=st.sampled_from(["", "/kg", "/m2"]),
)
def test_parse_dose_roundtrip(value: float, unit: str, per: str) -> None:
    dose = parse_dose(f"{value!r} {unit}{per}")
    expected_basis = {"": DoseBasis.ABSOLUTE, "/kg": DoseBasis.PER_KG, "/m2": DoseBasis.PER_M2}[per]
    assert dose.basis is expected_basis
    assert math.isclose(dose.amount, value * _MASS_UNITS[unit], rel_tol=1e-9)


@given(st.text(max_size=12))
def test_parse_dose_never_crashes_otherwise(text: str) -> None:
    try:
        dose = parse_dose(text)
    except ValueError:
        return
    assert dose.amount > 0 and math.isfinite(dose.amount)

"""Dosing histories: single events, regular regimens (optionally at steady state) and irregular EHR records.

Times in h, amounts in mg. A history is shared by every patient of a batch; per-patient histories are
passed to the engine as a sequence of histories (one per patient), and per-patient dose scaling
(mg/kg, mg/m²) as the engine's ``amount_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from pgxtwin.pk.units import DoseBasis, parse_dose, parse_duration

__all__ = ["DoseTable", "DosingEvent", "DosingHistory", "RegularRegimen", "Route"]


class Route(str, Enum):
    """Administration route: where a dose enters the model."""

    ORAL = "oral"  # first-order absorption from a depot, with bioavailability F and lag time tlag
    IV_BOLUS = "iv_bolus"  # instantly into the central compartment
    IV_INFUSION = "iv_infusion"  # zero-order into the central compartment over duration_h


def _finite_nonneg(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what}={value!r} must be finite")
    if v < 0:
        raise ValueError(f"{what}={value!r} must not be negative")
    return v


@dataclass(frozen=True, slots=True)
class DosingEvent:
    """One administration: ``amount_mg`` at ``time_h``; infusions run over ``duration_h`` (> 0).

    A zero amount is allowed (an EHR record of a missed dose); negative amounts and times are not.
    """

    time_h: float
    amount_mg: float
    route: Route = Route.ORAL
    duration_h: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "time_h", _finite_nonneg(self.time_h, "time_h"))
        object.__setattr__(self, "amount_mg", _finite_nonneg(self.amount_mg, "amount_mg"))
        try:
            object.__setattr__(self, "route", Route(self.route))
        except ValueError:
            raise ValueError(f"route={self.route!r} must be one of {[r.value for r in Route]}") from None
        duration = _finite_nonneg(self.duration_h, "duration_h")
        if self.route is Route.IV_INFUSION and duration <= 0:
            raise ValueError(f"infusion at t={self.time_h} h needs duration_h > 0, got {duration}")
        if self.route is not Route.IV_INFUSION and duration != 0:
            raise ValueError(f"duration_h={duration} is only meaningful for iv_infusion, not {self.route.value}")
        object.__setattr__(self, "duration_h", duration)


@dataclass(frozen=True, slots=True)
class RegularRegimen:
    """``n_doses`` of ``amount_mg`` every ``interval_h`` from ``start_h``.

    With ``steady_state`` the patient is taken to have received the same dose every ``interval_h``
    indefinitely before ``start_h`` (NONMEM's SS=1), so the listed doses continue a steady state.
    """

    start_h: float
    interval_h: float
    n_doses: int
    amount_mg: float
    route: Route
    duration_h: float
    steady_state: bool


def _hours(value: float | str) -> float:
    return parse_duration(value) if isinstance(value, str) else float(value)


def _mg(value: float | str) -> float:
    if isinstance(value, str):
        dose = parse_dose(value)
        if dose.basis is not DoseBasis.ABSOLUTE:
            raise ValueError(
                f"dose {value!r} is relative ({dose.basis.value}); resolve it with Dose.to_mg() or pass "
                "per-patient factors as simulate(..., amount_scale=...)"
            )
        return dose.amount
    return float(value)


class DosingHistory:
    """An immutable, time-sorted sequence of :class:`DosingEvent`.

    Build with :meth:`regular`, :meth:`from_records` or :meth:`from_events`; combine with ``+``.
    """

    __slots__ = ("_events", "_regimen")

    def __init__(self, events: Sequence[DosingEvent], regimen: RegularRegimen | None = None) -> None:
        if not all(isinstance(e, DosingEvent) for e in events):
            raise TypeError("DosingHistory expects DosingEvent items")
        # Stable sort keeps the record order of simultaneous doses.
        self._events: tuple[DosingEvent, ...] = tuple(sorted(events, key=lambda e: e.time_h))
        self._regimen = regimen

    @classmethod
    def regular(
        cls,
        dose_mg: float | str,
        interval_h: float | str,
        n_doses: int,
        start_h: float = 0.0,
        route: Route | str = Route.ORAL,
        duration_h: float | str = 0.0,
        steady_state: bool = False,
    ) -> DosingHistory:
        """``n_doses`` of ``dose_mg`` every ``interval_h`` hours from ``start_h``.

        ``dose_mg`` and ``interval_h`` also accept strings ("75 mg", "12 h"). ``steady_state`` makes the
        regimen continue an infinitely long identical regimen before ``start_h``.
        """
        interval = _hours(interval_h)
        duration = _hours(duration_h)
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval_h={interval_h!r} must be positive")
        if int(n_doses) != n_doses or n_doses < 1:
            raise ValueError(f"n_doses={n_doses!r} must be a positive integer")
        n = int(n_doses)
        amount = _mg(dose_mg)
        events = [DosingEvent(start_h + k * interval, amount, Route(route), duration) for k in range(n)]
        if steady_state and duration > interval:
            raise ValueError(f"steady state needs infusions no longer than the interval ({duration} h > {interval} h)")
        regimen = RegularRegimen(events[0].time_h, interval, n, events[0].amount_mg, events[0].route, duration, steady_state)
        return cls(events, regimen)

    @classmethod
    def from_records(
        cls,
        times_h: Sequence[float],
        amounts_mg: Sequence[float],
        route: Route | str | Sequence[Route | str] = Route.ORAL,
        duration_h: float | Sequence[float] = 0.0,
    ) -> DosingHistory:
        """Irregular history (e.g. from an EHR): one record per administration, in any order.

        Missed doses are simply absent (or recorded with amount 0); changed doses are different amounts.
        ``route``/``duration_h`` are a single value or one per record.
        """
        times = np.asarray(times_h, dtype=float).ravel()
        amounts = np.asarray(amounts_mg, dtype=float).ravel()
        if times.shape != amounts.shape:
            raise ValueError(f"times_h has {times.size} records but amounts_mg has {amounts.size}")
        routes = [route] * times.size if isinstance(route, (str, Route)) else list(route)
        durations = np.broadcast_to(np.asarray(duration_h, dtype=float), times.shape)
        if len(routes) != times.size:
            raise ValueError(f"route has {len(routes)} entries for {times.size} records")
        events = []
        for i, (t, a, r, d) in enumerate(zip(times, amounts, routes, durations, strict=True)):
            try:
                events.append(DosingEvent(t, a, Route(r), d))
            except ValueError as exc:
                raise ValueError(f"record {i} (t={t} h, amount={a} mg): {exc}") from None
        return cls(events)

    @classmethod
    def from_events(cls, events: Sequence[DosingEvent]) -> DosingHistory:
        """History from explicit events (sorted on construction)."""
        return cls(list(events))

    @property
    def events(self) -> tuple[DosingEvent, ...]:
        return self._events

    @property
    def regimen(self) -> RegularRegimen | None:
        """The regular regimen this history was built from, if any (enables closed-form shortcuts)."""
        return self._regimen

    @property
    def steady_state(self) -> bool:
        return self._regimen is not None and self._regimen.steady_state

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[DosingEvent]:
        return iter(self._events)

    def __add__(self, other: DosingHistory) -> DosingHistory:
        if self.steady_state or other.steady_state:
            raise ValueError("a steady-state regimen cannot be merged with other events")
        return DosingHistory(self._events + other._events)

    def __repr__(self) -> str:
        if self._regimen is not None:
            r = self._regimen
            ss = ", steady_state" if r.steady_state else ""
            return f"DosingHistory.regular({r.amount_mg} mg {r.route.value} q{r.interval_h} h x{r.n_doses} from {r.start_h} h{ss})"
        return f"DosingHistory({len(self)} events)"


@dataclass(frozen=True, slots=True)
class DoseTable:
    """Array form of the dosing of a batch, as the engine consumes it.

    ``amounts`` is (B, E) mg with B = 1 (shared) or N (per patient); events are the union over patients,
    so a patient without a given event has amount 0 there.
    """

    times: np.ndarray  # (E,) h
    amounts: np.ndarray  # (B, E) mg
    routes: tuple[Route, ...]  # (E,)
    durations: np.ndarray  # (E,) h, 0 except for infusions

    @classmethod
    def build(cls, dosing: DosingHistory | Sequence[DosingHistory], n: int) -> DoseTable:
        histories = [dosing] if isinstance(dosing, DosingHistory) else list(dosing)
        if not isinstance(dosing, DosingHistory):
            if len(histories) != n:
                raise ValueError(f"{len(histories)} dosing histories given for {n} patients")
            if any(h.steady_state for h in histories):
                raise ValueError("steady_state needs one DosingHistory shared by the whole batch")
        keys: dict[tuple[float, Route, float], int] = {}
        for h in histories:
            for e in h.events:
                keys.setdefault((e.time_h, e.route, e.duration_h), len(keys))
        order = sorted(keys, key=lambda k: k[0])
        col = {k: j for j, k in enumerate(order)}
        amounts = np.zeros((len(histories), len(order)))
        for i, h in enumerate(histories):
            for e in h.events:
                amounts[i, col[(e.time_h, e.route, e.duration_h)]] += e.amount_mg
        return cls(
            times=np.array([k[0] for k in order], dtype=float),
            amounts=amounts,
            routes=tuple(k[1] for k in order),
            durations=np.array([k[2] for k in order], dtype=float),
        )

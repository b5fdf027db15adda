"""Batched PK/PD simulation engine: pure computation in mg, L, h and mg/L.

Typical use::

    from pgxtwin.pk import DosingHistory, OneCompartment, simulate, metrics
    dosing = DosingHistory.regular("75 mg", "24 h", n_doses=28)
    res = simulate(OneCompartment(), {"cl": cl, "v": v, "ka": 1.2}, dosing, times_h)
    res["parent"]  # (N, T) mg/L
"""

from pgxtwin.pk import metrics
from pgxtwin.pk._ode import OdeOptions
from pgxtwin.pk.dosing import DosingEvent, DosingHistory, RegularRegimen, Route
from pgxtwin.pk.engine import SimulationResult, simulate, simulate_chunks
from pgxtwin.pk.models import (
    EffectCompartment,
    IndirectResponse,
    LinearPKModel,
    MichaelisMenten,
    Model,
    NonlinearPKModel,
    OneCompartment,
    ParamSpec,
    ParentMetabolite,
    PDModel,
    SumExp,
    TurnoverType,
    TwoCompartment,
    WarfarinINR,
)
from pgxtwin.pk.units import Dose, DoseBasis, parse_dose, parse_duration

__all__ = [
    "Dose",
    "DoseBasis",
    "DosingEvent",
    "DosingHistory",
    "EffectCompartment",
    "IndirectResponse",
    "LinearPKModel",
    "MichaelisMenten",
    "Model",
    "NonlinearPKModel",
    "OdeOptions",
    "OneCompartment",
    "PDModel",
    "ParamSpec",
    "ParentMetabolite",
    "RegularRegimen",
    "Route",
    "SimulationResult",
    "SumExp",
    "TurnoverType",
    "TwoCompartment",
    "WarfarinINR",
    "metrics",
    "parse_dose",
    "parse_duration",
    "simulate",
    "simulate_chunks",
]

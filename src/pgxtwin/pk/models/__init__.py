"""Model structures: one per module, abstract family bases in :mod:`.base`."""

from pgxtwin.pk.models.base import LinearPKModel, Model, NonlinearPKModel, ParamSpec, PDModel, SumExp
from pgxtwin.pk.models.effect_compartment import EffectCompartment
from pgxtwin.pk.models.indirect_response import IndirectResponse, TurnoverType, WarfarinINR
from pgxtwin.pk.models.michaelis_menten import MichaelisMenten
from pgxtwin.pk.models.one_compartment import OneCompartment
from pgxtwin.pk.models.parent_metabolite import ParentMetabolite
from pgxtwin.pk.models.two_compartment import TwoCompartment

__all__ = [
    "EffectCompartment",
    "IndirectResponse",
    "LinearPKModel",
    "MichaelisMenten",
    "Model",
    "NonlinearPKModel",
    "OneCompartment",
    "PDModel",
    "ParamSpec",
    "ParentMetabolite",
    "SumExp",
    "TurnoverType",
    "TwoCompartment",
    "WarfarinINR",
]

"""Parent -> metabolite chain (prodrug activation: clopidogrel -> active thiol, codeine -> morphine).

A fraction fm of the parent's clearance forms the metabolite, which has its own one-compartment
disposition (CLm, Vm). Both steps are linear, so the metabolite's impulse response is the parent's
convolved with e^{-(CLm/Vm) s}, scaled by fm·CL/Vm: closed form by superposition, plus the ODE form.
"""

from __future__ import annotations

import torch

from pgxtwin.pk.dosing import Route
from pgxtwin.pk.models.base import Array, LinearPKModel, Params, ParamSpec, SumExp, namespace
from pgxtwin.pk.models.one_compartment import OneCompartment

__all__ = ["ParentMetabolite"]

FM = ParamSpec("fm", "-", "fraction of parent clearance forming the metabolite", lower_inclusive=True, upper=1.0)
CLM = ParamSpec("cl_m", "L/h", "metabolite clearance")
VM = ParamSpec("v_m", "L", "metabolite volume of distribution")


class ParentMetabolite(LinearPKModel):
    """Any linear parent model (default one-compartment) plus a one-compartment metabolite.

    Analytes "parent" and "metabolite" (mg/L; metabolite amounts are in parent-mass equivalents, so
    scale by the molecular-weight ratio outside if needed).
    """

    analytes = ("parent", "metabolite")

    def __init__(self, parent: LinearPKModel | None = None) -> None:
        self.parent = parent or OneCompartment()
        if len(self.parent.analytes) != 1:
            raise ValueError("the parent model must have a single analyte")
        self.state_names = self.parent.state_names + ("metabolite",)

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        return (*self.parent.parameters, FM, CLM, VM)

    @property
    def routes(self) -> frozenset[Route]:
        return self.parent.routes

    def clearance(self, p: Params) -> Array:
        return self.parent.clearance(p)

    def oral(self, p: Params) -> tuple[Array, Array, Array]:
        return self.parent.oral(p)

    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]:
        cp = self.parent.central_response(p, route)
        km = p["cl_m"] / p["v_m"]
        cm = cp.convolve(SumExp.single(namespace(km).ones_like(km), km)).scale(p["fm"] * self.parent.clearance(p) / p["v_m"])
        return {"parent": cp, "metabolite": cm}

    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        xp_, am = x[:, :-1], x[:, -1]
        formation = p["fm"] * self.parent.elimination_rate(xp_, p)
        dam = formation - p["cl_m"] / p["v_m"] * am
        return torch.cat([self.parent.rhs(xp_, p), dam[:, None]], dim=1)

    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        return self.parent.observe(x[..., :-1], p) | {"metabolite": x[..., -1] / p["v_m"]}

    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        # parent leaving by other routes + metabolite cleared: what leaves the (parent + metabolite) system
        return (1 - p["fm"]) * self.parent.elimination_rate(x[:, :-1], p) + p["cl_m"] * x[:, -1] / p["v_m"]

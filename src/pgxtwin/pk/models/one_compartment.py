"""Linear one-compartment model: IV bolus, zero-order infusion or first-order oral absorption.

C(s) after 1 mg IV = e^{-k s}/V with k = CL/V; oral: F·ka/(V(ka-k))·(e^{-k s} - e^{-ka s}).
"""

from __future__ import annotations

import torch

from pgxtwin.pk.dosing import Route
from pgxtwin.pk.models.base import ABSORPTION, Array, LinearPKModel, Params, ParamSpec, SumExp

__all__ = ["OneCompartment"]

CL = ParamSpec("cl", "L/h", "clearance")
V = ParamSpec("v", "L", "volume of distribution")


class OneCompartment(LinearPKModel):
    """dA/dt = -CL/V·A (+ inputs); C = A/V. Parameters: cl, v (+ ka, f, tlag for oral)."""

    analytes = ("parent",)
    state_names = ("central",)

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        return (CL, V, *ABSORPTION)

    def clearance(self, p: Params) -> Array:
        return p["cl"]

    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]:
        iv = SumExp.single(1 / p["v"], p["cl"] / p["v"])
        if route is Route.ORAL:
            ka, f, _ = self.oral(p)
            # absorbed flux per mg dosed, F·ka·e^{-ka s}, fed through the IV response
            iv = SumExp.single(f * ka, ka).convolve(iv)
        return {"parent": iv}

    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        return -(p["cl"] / p["v"])[:, None] * x

    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        return {"parent": x[..., 0] / p["v"]}

    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        return p["cl"] * x[:, 0] / p["v"]

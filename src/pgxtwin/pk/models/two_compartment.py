"""Linear two-compartment model (central + peripheral), IV bolus / infusion / first-order oral.

Micro-constants k10 = CL/V1, k12 = Q/V1, k21 = Q/V2; macro-constants α > β are the roots of
λ² - (k10+k12+k21)λ + k10·k21 = 0 and C(s) after 1 mg IV = [(α-k21)e^{-αs} + (k21-β)e^{-βs}] / (V1(α-β)).
"""

from __future__ import annotations

import torch

from pgxtwin.pk.dosing import Route
from pgxtwin.pk.models.base import ABSORPTION, Array, LinearPKModel, Params, ParamSpec, SumExp, namespace

__all__ = ["TwoCompartment"]

CL = ParamSpec("cl", "L/h", "clearance from the central compartment")
V1 = ParamSpec("v1", "L", "central volume")
Q = ParamSpec("q", "L/h", "inter-compartmental clearance")
V2 = ParamSpec("v2", "L", "peripheral volume")


class TwoCompartment(LinearPKModel):
    """States: central and peripheral amounts (mg). Parameters: cl, v1, q, v2 (+ ka, f, tlag for oral)."""

    analytes = ("parent",)
    state_names = ("central", "peripheral")

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        return (CL, V1, Q, V2, *ABSORPTION)

    def clearance(self, p: Params) -> Array:
        return p["cl"]

    @staticmethod
    def macro_constants(p: Params) -> tuple[Array, Array]:
        """Disposition rate constants (α, β) in 1/h, α > β > 0."""
        xp = namespace(*p.values())
        k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
        s = k10 + k12 + k21
        alpha = 0.5 * (s + xp.sqrt(s * s - 4 * k10 * k21))
        return alpha, k10 * k21 / alpha  # β via the product of roots: no cancellation when β ≪ α

    def impulse_response(self, p: Params, route: Route) -> dict[str, SumExp]:
        xp = namespace(*p.values())
        alpha, beta = self.macro_constants(p)
        k21 = p["q"] / p["v2"]
        d = p["v1"] * (alpha - beta)
        iv = SumExp(
            xp.stack([(alpha - k21) / d, (k21 - beta) / d], axis=1),
            xp.stack([alpha, beta], axis=1),
        )
        if route is Route.ORAL:
            ka, f, _ = self.oral(p)
            iv = SumExp.single(f * ka, ka).convolve(iv)
        return {"parent": iv}

    def rhs(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
        a1, a2 = x[:, 0], x[:, 1]
        return torch.stack([-(k10 + k12) * a1 + k21 * a2, k12 * a1 - k21 * a2], dim=1)

    def observe(self, x: Array, p: Params) -> dict[str, Array]:
        return {"parent": x[..., 0] / p["v1"]}

    def elimination_rate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        return p["cl"] * x[:, 0] / p["v1"]

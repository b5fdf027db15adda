"""Batched adaptive explicit Runge–Kutta solvers on torch tensors or numpy arrays (see ``base.py`` for the design)."""

from __future__ import annotations

from pgxtwin.pk._solver.base import AbstractERK, AbstractSolver, ButcherTableau, Solution
from pgxtwin.pk._solver.dopri5 import Dopri5
from pgxtwin.pk._solver.tsit5 import Tsit5

__all__ = ["SOLVERS", "AbstractERK", "AbstractSolver", "ButcherTableau", "Dopri5", "Solution", "Tsit5"]

#: solvers by the method names OdeOptions accepts
SOLVERS: dict[str, type[AbstractSolver]] = {"dopri5": Dopri5, "tsit5": Tsit5}

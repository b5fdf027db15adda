"""Shared fixtures: small, fixed parameter sets (float64) for each model."""

import numpy as np
import pytest

from pgxtwin.pk import OdeOptions

# tight tolerances so closed form vs ODE comparisons test the equations, not the solver
TIGHT = OdeOptions(rtol=1e-9, atol=1e-11)

ONE_CPT = {"cl": np.array([5.0, 3.0, 12.0]), "v": np.array([50.0, 40.0, 90.0]), "ka": np.array([1.2, 0.7, 2.5]), "f": np.array([0.8, 1.0, 0.5]), "tlag": 0.4}
TWO_CPT = {"cl": np.array([5.0, 3.0]), "v1": np.array([20.0, 40.0]), "q": np.array([10.0, 4.0]), "v2": np.array([60.0, 80.0]), "ka": np.array([1.2, 0.7]), "f": 0.8, "tlag": 0.4}
METABOLITE = {"fm": 0.3, "cl_m": 8.0, "v_m": 30.0}


@pytest.fixture
def one_cpt() -> dict:
    return dict(ONE_CPT)


@pytest.fixture
def two_cpt() -> dict:
    return dict(TWO_CPT)

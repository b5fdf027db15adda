import numpy as np
import pytest
import torch

from pgxtwin.pk import metrics


def test_auc_trapezoid_is_exact_for_piecewise_linear_curves() -> None:
    t = np.array([0.0, 1.0, 3.0, 4.0])
    c = np.array([[0.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(metrics.auc(t, c), [6.0, 4.0])
    np.testing.assert_allclose(metrics.auc(t, c, start=1.0, end=3.0), [4.0, 2.0])
    np.testing.assert_allclose(metrics.cmax(t, c), [2.0, 1.0])
    np.testing.assert_allclose(metrics.cmin(t, c, start=1.0), [0.0, 1.0])
    with pytest.raises(ValueError, match="not one of the output times"):
        metrics.auc(t, c, start=0.5)


def test_time_in_window_uses_linear_crossings() -> None:
    t = np.array([0.0, 10.0, 20.0])
    c = np.array([[0.0, 10.0, 0.0]])  # up and down through the window [2, 6]
    w = metrics.time_in_window(t, c, low=2.0, high=6.0)
    np.testing.assert_allclose(w.below_h, [4.0])
    np.testing.assert_allclose(w.within_h, [8.0])
    np.testing.assert_allclose(w.above_h, [8.0])
    np.testing.assert_allclose(w.fraction_within, [0.4])
    flat = metrics.time_in_window(t, np.full((1, 3), 3.0), 2.0, 6.0)
    np.testing.assert_allclose(flat.within_h, [20.0])


def test_time_in_window_torch_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 24, 25)
    c = rng.uniform(0, 5, size=(4, 25))
    a = metrics.time_in_window(t, c, 1.0, 3.0)
    b = metrics.time_in_window(torch.as_tensor(t), torch.as_tensor(c), 1.0, 3.0)
    np.testing.assert_allclose(b.within_h.numpy(), a.within_h, rtol=1e-12)
    np.testing.assert_allclose(a.below_h + a.within_h + a.above_h, 24.0)


def test_exposure_over_one_interval() -> None:
    t = np.linspace(0, 48, 49)
    c = (2.0 + np.sin(2 * np.pi * t / 24))[None, :]
    m = metrics.exposure(t, c, tau_h=24.0, start=24.0, window=(1.5, 2.5))
    np.testing.assert_allclose(m.css_avg, [2.0], rtol=1e-12)
    np.testing.assert_allclose(m.cmax, [3.0], rtol=1e-12)
    np.testing.assert_allclose(m.cmin, [1.0], rtol=1e-12)
    assert 0 < float(m.window.fraction_within[0]) < 1

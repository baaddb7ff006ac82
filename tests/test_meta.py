"""The random-effects pool of a shift measured in several bridges (desweep.meta), on values worked by hand."""

import math

import numpy as np
import pytest

from desweep.meta import random_effects


def test_dersimonian_laird_by_hand():
    # y = 1, 2, 4 with unit variances: fixed mean 7/3, Q = 14/3, C = 3 - 3/3 = 2, tau2 = (14/3 - 2) / 2 = 4/3
    pooled = random_effects(np.array([[1.0], [2.0], [4.0]]), np.ones((3, 1)))
    assert pooled.mean[0] == pytest.approx(7 / 3)
    assert pooled.q[0] == pytest.approx(14 / 3)
    assert pooled.tau2[0] == pytest.approx(4 / 3)
    assert pooled.se[0] == pytest.approx(math.sqrt((1 + 4 / 3) / 3))
    assert pooled.se_prediction[0] == pytest.approx(math.sqrt((1 + 4 / 3) / 3 + 4 / 3))
    assert pooled.i2[0] == pytest.approx((14 / 3 - 2) / (14 / 3))
    assert pooled.q_pvalue[0] == pytest.approx(math.exp(-14 / 3 / 2))  # chi2 with 2 df
    assert pooled.n_units[0] == 3


def test_precise_but_disagreeing_bridges_give_a_wide_prediction():
    # shifts of 0, 0 and 3 log2, each measured to +-0.03: a fixed-effect mean would be 1.00 +- 0.017
    pooled = random_effects(np.array([[0.0], [0.0], [3.0]]), np.full((3, 1), 0.03**2))
    assert pooled.mean[0] == pytest.approx(1.0)
    assert pooled.tau2[0] == pytest.approx(3.0, rel=1e-3)
    assert pooled.se[0] == pytest.approx(1.0, rel=1e-3)
    assert pooled.se_prediction[0] == pytest.approx(2.0, rel=1e-3)
    assert pooled.q_pvalue[0] < 1e-10


def test_agreeing_bridges_have_no_heterogeneity():
    pooled = random_effects(np.array([[0.5, 1.0], [0.5, 1.0]]), np.array([[0.04, 0.01], [0.04, 0.01]]))
    np.testing.assert_allclose(pooled.tau2, [0.0, 0.0])
    np.testing.assert_allclose(pooled.i2, [0.0, 0.0])
    np.testing.assert_allclose(pooled.se, np.sqrt([0.02, 0.005]))
    np.testing.assert_allclose(pooled.se_prediction, pooled.se)
    np.testing.assert_allclose(pooled.q_pvalue, [1.0, 1.0])


def test_one_bridge_cannot_measure_heterogeneity_and_missing_units_are_left_out():
    estimates = np.array([[0.7, 0.2], [np.nan, 0.4], [np.nan, np.nan]])
    pooled = random_effects(estimates, np.full((3, 2), 0.01))
    assert pooled.mean[0] == pytest.approx(0.7)
    assert math.isnan(pooled.tau2[0]) and math.isnan(pooled.q[0]) and math.isnan(pooled.i2[0])
    assert pooled.se_prediction[0] == pytest.approx(pooled.se[0]) == pytest.approx(0.1)
    assert pooled.mean[1] == pytest.approx(0.3)
    np.testing.assert_array_equal(pooled.n_units, [1, 2])


def test_no_unit_gives_nan_and_a_zero_variance_takes_no_infinite_weight():
    empty = random_effects(np.full((2, 1), np.nan), np.ones((2, 1)))
    assert math.isnan(empty.mean[0]) and math.isnan(empty.se[0]) and empty.n_units[0] == 0
    zero = random_effects(np.array([[0.0], [2.0]]), np.array([[0.0], [0.0]]))
    assert np.isfinite(zero.mean[0]) and zero.mean[0] == pytest.approx(1.0)
    assert zero.tau2[0] == pytest.approx(2.0)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        random_effects(np.zeros((2, 3)), np.zeros((3, 2)))

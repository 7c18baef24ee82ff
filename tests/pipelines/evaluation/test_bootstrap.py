"""Percentile-bootstrap intervals: exact on constant data, honest on noise, paired by user."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.bootstrap import bootstrap_mean, paired_difference


def test_constant_values_give_a_point_interval() -> None:
    interval = bootstrap_mean(np.full(50, 0.25))
    assert (interval.mean, interval.low, interval.high) == (0.25, 0.25, 0.25)


def test_the_interval_holds_the_mean_and_narrows_with_more_users() -> None:
    rng = np.random.default_rng(1)
    small, large = bootstrap_mean(rng.random(50)), bootstrap_mean(rng.random(5000))
    assert small.low < small.mean < small.high
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_a_constant_paired_gain_is_exact_even_when_users_vary_a_lot() -> None:
    base = np.random.default_rng(2).random(200)
    diff = paired_difference(base + 0.1, base)
    assert (
        diff.mean == pytest.approx(0.1) and diff.low == pytest.approx(0.1) and diff.high == pytest.approx(0.1)
    )


def test_same_seed_same_interval_and_bad_input_is_refused() -> None:
    values = np.random.default_rng(3).random(100)
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    with pytest.raises(ValueError, match="aligned"):
        paired_difference(values, values[:-1])
    with pytest.raises(ValueError, match="at least one user"):
        bootstrap_mean(np.array([]))

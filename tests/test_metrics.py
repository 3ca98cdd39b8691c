"""The threshold helpers that make every reported score and the calibration."""

import numpy as np
import pytest
import torch

from landslide.metrics import calibrate, f1_at, f1_optimal_threshold


def brute_force_best_f1(probs: np.ndarray, targets: np.ndarray) -> float:
    return max(f1_at(probs, targets, t) for t in np.unique(probs))


def test_f1_at_counts_by_hand():
    probs = np.array([0.9, 0.6, 0.4, 0.2, 0.7])
    targets = np.array([1, 0, 1, 0, 1])
    # at 0.5: predicted 0.9, 0.6, 0.7 -> tp 2, fp 1, fn 1 -> F1 = 4 / 6
    assert f1_at(probs, targets, 0.5) == pytest.approx(4 / 6)
    assert f1_at(probs, targets, 0.95) == 0.0
    assert f1_at(np.zeros(3), np.zeros(3), 0.5) == 0.0


def test_optimal_threshold_matches_a_brute_force_search_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        targets = rng.integers(0, 2, 60)
        probs = np.round(np.clip(targets * 0.3 + rng.random(60) * 0.7, 0, 1), 2)  # rounded: many ties
        threshold, best = f1_optimal_threshold(probs, targets)
        assert best == pytest.approx(brute_force_best_f1(probs, targets))
        assert f1_at(probs, targets, threshold) == pytest.approx(best)


def test_optimal_threshold_without_positives():
    assert f1_optimal_threshold(np.array([0.1, 0.9]), np.array([0, 0])) == (0.5, 0.0)


def test_calibration_sends_the_threshold_to_one_half_monotonically():
    probs = torch.linspace(0, 1, 101)
    out = calibrate(probs, 0.2)
    assert float(calibrate(torch.tensor([0.2]), 0.2)) == pytest.approx(0.5)
    assert float(out[0]) == 0.0 and float(out[-1]) == pytest.approx(1.0)
    assert bool((out[1:] >= out[:-1]).all())
    decisions_before = probs >= 0.2
    assert torch.equal(out >= 0.5, decisions_before)  # the fold's decisions are unchanged

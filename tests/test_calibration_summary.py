"""The release's logged metrics: Kendall tau and Pearson r against scipy, the rest against loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from rac_losses.metrics import (
    calibration_summary,
    expected_calibration_error,
    kendall_tau,
    pearson_r,
    rank_violation_rate,
)

rows = st.lists(st.tuples(st.sampled_from([i / 10 for i in range(11)] + [0.35, 0.95]), st.booleans(), st.integers(0, 3)), min_size=2, max_size=40)


def ece_loop(conf, acc, bins=10):
    """Right-closed equal-width bins, the first closed at 0."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        inside = [(c, a) for c, a in zip(conf, acc) if (edges[b] < c or (b == 0 and c >= 0)) and c <= edges[b + 1]]
        if inside:
            total += len(inside) / len(conf) * abs(np.mean([a for _, a in inside]) - np.mean([c for c, _ in inside]))
    return total


@settings(max_examples=200, deadline=None)
@given(rows)
def test_correlations_equal_scipy(data):
    conf, acc, _ = map(np.array, zip(*data))
    with pytest.warns(RuntimeWarning) if len(set(conf)) < 2 or len(set(acc)) < 2 else _nothing():
        tau, r = kendall_tau(conf, acc), pearson_r(conf, acc)
    expected_tau = scipy.stats.kendalltau(conf, acc.astype(float))[0]
    if math.isnan(expected_tau):
        assert math.isnan(tau) and math.isnan(r)
    else:
        assert tau == pytest.approx(expected_tau, abs=1e-12)
        assert r == pytest.approx(scipy.stats.pearsonr(conf, acc.astype(float))[0], abs=1e-12)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@settings(max_examples=200, deadline=None)
@given(rows, st.lists(st.sampled_from([-1.0, float("nan")]), max_size=5))
def test_summary_equals_loops(data, missing):
    conf, acc, group = (list(x) for x in zip(*data))
    all_conf = conf + missing
    all_acc = acc + [True] * len(missing)
    all_group = group + [0] * len(missing)
    out = calibration_summary(np.array(all_conf), np.array(all_acc), group=np.array(all_group), format_ok=np.ones(len(all_conf)))
    c, a = np.array(conf), np.array(acc, dtype=float)
    assert out["count"] == len(conf) and out["format_rate"] == 1.0
    assert out["ece"] == pytest.approx(ece_loop(conf, a))
    assert out["brier"] == pytest.approx(np.mean((c - a) ** 2))
    assert out["overconfidence_rate"] == pytest.approx(np.mean((a < 0.5) & (c > 0.5)))
    assert out["underconfidence_rate"] == pytest.approx(np.mean((a > 0.5) & (c < 0.5)))
    high = c >= 0.8
    assert out["high_conf_error_ratio"] == pytest.approx(np.mean(a[high] < 0.5) if high.any() else 0.0)
    assert out["conf_p50"] == pytest.approx(np.percentile(c, 50))
    pairs = [(i, j) for i in range(len(c)) for j in range(i + 1, len(c)) if group[i] == group[j]]
    if pairs:
        bad = sum((c[i] - c[j]) * (a[i] - a[j]) < 0 for i, j in pairs)
        assert out["rank_violation_rate"] == pytest.approx(bad / len(pairs))
        assert rank_violation_rate(c, a, np.array(group)) == pytest.approx(bad / len(pairs))
    else:
        assert "rank_violation_rate" not in out
    if len(conf) < 5:
        assert out["kendall_tau"] == 0.0 and out["pearson_r"] == 0.0


def test_stated_confidences_on_bin_edges_follow_the_release():
    # 0.8 falls in (0.7, 0.8] for the release, in [0.8, 0.9) for the torchmetrics convention
    conf, acc = [0.75, 0.8], [1, 0]
    assert expected_calibration_error(conf, acc, n_bins=10, strategy="uniform_right") == pytest.approx(abs(0.5 - 0.775))
    assert expected_calibration_error(conf, acc, n_bins=10) == pytest.approx(0.5 * 0.25 + 0.5 * 0.8)


def test_summary_without_any_confidence_and_errors():
    assert calibration_summary([-1.0, -1.0], [1, 0]) == {"count": 0.0}
    with pytest.raises(ValueError, match="confidence must lie in"):
        calibration_summary([1.5], [1])
    with pytest.raises(ValueError, match="correct must hold only 0 and 1"):
        calibration_summary([0.5], [0.5])
    with pytest.raises(ValueError, match=r"group must have shape \[2\]"):
        calibration_summary([0.5, 0.4], [1, 0], group=[0])

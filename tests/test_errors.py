"""Bad input to the losses raises TypeError/ValueError naming the argument, expected and received."""

from __future__ import annotations

import pytest
import torch

from rac_losses import corruption_partners, pairwise_corruption_loss, ranking_group_loss, ranking_partners

N = 4
GOOD = dict(confidence=torch.zeros(N), values=torch.tensor([0.0, 1.0, 0.0, 1.0]), key=torch.tensor([1, 1, 2, 2]))
FUNCTIONS = [
    (ranking_group_loss, "reward", "group"),
    (ranking_partners, "reward", "group"),
    (pairwise_corruption_loss, "severity", "pair"),
    (corruption_partners, "severity", "pair"),
]


def _call(fn, values_name, key_name, *, confidence=None, values=None, key=None, **kwargs):
    confidence = GOOD["confidence"] if confidence is None else confidence
    values = GOOD["values"] if values is None else values
    key = GOOD["key"] if key is None else key
    return fn(confidence, values, key, **kwargs)


CASES = [
    (dict(confidence=torch.zeros(N, 1)), ValueError, r"confidence must have shape \[\*\], got \(4, 1\)"),
    (dict(confidence=torch.zeros(N, dtype=torch.long)), TypeError, "confidence must be a floating-point tensor"),
    (dict(confidence=[0.0] * N), TypeError, "confidence must be a torch.Tensor, got list"),
    (dict(values=torch.zeros(N + 1)), ValueError, r"{values} must have shape \[4\], got \(5,\)"),
    (dict(values=torch.zeros(N, 2)), ValueError, r"{values} must have shape \[4\], got \(4, 2\)"),
    (dict(key=torch.tensor([1.0, 1.0, 2.0, 2.0])), TypeError, "{key} must be an integer tensor"),
    (dict(key=torch.tensor([1, 1, 2])), ValueError, r"{key} must have shape \[4\], got \(3,\)"),
    (dict(values=torch.tensor([0.0, float("inf"), 0.0, 1.0])), ValueError, "{values} must be finite"),
    (dict(confidence=torch.tensor([0.0, float("nan"), 0.0, 1.0])), ValueError, "confidence must be finite"),
    (dict(valid=torch.ones(N + 1, dtype=torch.bool)), ValueError, r"valid must have shape \[4\], got \(5,\)"),
    (dict(key=torch.tensor([1, 1, 2, 2], device="meta")), ValueError, "{key} is on meta but confidence is on cpu"),
    (dict(reduction="none"), ValueError, "unknown reduction 'none'; expected one of 'mean', 'sum'"),
]


@pytest.mark.parametrize("fn,values_name,key_name", FUNCTIONS)
@pytest.mark.parametrize("overrides,error,pattern", CASES)
def test_bad_rows_raise(fn, values_name, key_name, overrides, error, pattern):
    with pytest.raises(error, match=pattern.format(values=values_name, key=key_name)):
        _call(fn, values_name, key_name, **overrides)


def test_non_finite_values_on_invalid_rows_are_allowed():
    reward = torch.tensor([0.0, float("nan"), 0.0, 1.0])
    valid = torch.tensor([True, False, True, True])
    assert torch.isfinite(ranking_group_loss(torch.zeros(N), reward, GOOD["key"], valid=valid))


@pytest.mark.parametrize("fn", [ranking_group_loss, pairwise_corruption_loss])
@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(link="relu"), "unknown link 'relu'; expected one of 'logistic', 'hinge', 'squared_hinge'"),
        (dict(scale=0.0), "scale must be a finite number > 0"),
        (dict(scale=float("inf")), "scale must be a finite number > 0"),
        (dict(margin=-0.5), "margin must be a finite number >= 0"),
    ],
)
def test_bad_loss_options(fn, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(GOOD["confidence"], GOOD["values"], GOOD["key"], **kwargs)


@pytest.mark.parametrize("fn", [ranking_group_loss, pairwise_corruption_loss])
@pytest.mark.parametrize("kwargs", [dict(scale=True), dict(margin="0.1"), dict(scale=None)])
def test_non_number_options_raise_type_error(fn, kwargs):
    (name,) = kwargs
    with pytest.raises(TypeError, match=f"{name} must be a number"):
        fn(GOOD["confidence"], GOOD["values"], GOOD["key"], **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(pair_weight="gap"), ValueError, "unknown pair_weight 'gap'; expected one of 'uniform', 'reward_gap'"),
        (dict(tie_tolerance=-1.0), ValueError, "tie_tolerance must be a finite number >= 0"),
    ],
)
def test_bad_ranking_options(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ranking_group_loss(GOOD["confidence"], GOOD["values"], GOOD["key"], **kwargs)


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(severity_margin=-0.1), ValueError, "severity_margin must be a finite number >= 0"),
        (dict(detach_clean="yes"), TypeError, "detach_clean must be a bool"),
    ],
)
def test_bad_pairwise_options(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        pairwise_corruption_loss(GOOD["confidence"], GOOD["values"], GOOD["key"], **kwargs)


def test_negative_severity_raises():
    with pytest.raises(ValueError, match="severity must be >= 0"):
        pairwise_corruption_loss(GOOD["confidence"], torch.tensor([0, -1, 0, 1]), GOOD["key"])


def test_reward_gap_overflow_raises_instead_of_nan():
    reward = torch.tensor([3e38, -3e38, 0.0, 1.0])
    with pytest.raises(ValueError, match="reward gaps overflow torch.float32 with pair_weight='reward_gap'"):
        ranking_group_loss(GOOD["confidence"], reward, torch.zeros(N, dtype=torch.long), pair_weight="reward_gap")
    # uniform weights only need the order of the rewards: finite
    assert torch.isfinite(ranking_group_loss(GOOD["confidence"], reward, torch.zeros(N, dtype=torch.long)))


def test_bool_reward_raises():
    with pytest.raises(TypeError, match="reward must be a real-valued tensor"):
        ranking_group_loss(GOOD["confidence"], torch.tensor([True, False, True, False]), GOOD["key"])


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        ranking_group_loss(GOOD["confidence"], GOOD["values"], GOOD["key"], None, "hinge")  # type: ignore[misc]

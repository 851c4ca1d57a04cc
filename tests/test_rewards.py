"""Reward-side forms: verbalized confidence parsing, Brier reward, consistency rewards vs loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from rac_losses.rewards import (
    brier_reward,
    corruption_consistency_reward,
    parse_verbalized_confidence,
    rank_consistency_reward,
    strip_verbalized_confidence,
    verbalized_reward,
)
from strategies import batches


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The answer is 4. <confidence>0.8</confidence>", 0.8),
        ("<confidence> 85% </confidence>", 0.85),
        ("<CONFIDENCE>1</CONFIDENCE>", 1.0),
        ("<confidence>.5</confidence>", 0.5),
        ("<confidence>0.2</confidence> then <confidence>0.9</confidence>", 0.9),  # the last tag counts
        ("<confidence>0.9</confidence> then <confidence>high</confidence>", None),  # last tag malformed
        ("<confidence>85</confidence>", None),  # > 1 without % is ambiguous
        ("<confidence>120%</confidence>", None),
        ("<confidence>-0.1</confidence>", None),
        ("no tag at all", None),
        ("<confidence>0.7", None),
        ("", None),
    ],
)
def test_parse_verbalized_confidence(text, expected):
    got = parse_verbalized_confidence(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        parse_verbalized_confidence(b"<confidence>0.5</confidence>")


@given(st.floats(0, 1), st.sampled_from([0, 1, True, False, 0.5]))
def test_brier_reward_scalar(conf, correct):
    assert brier_reward(conf, correct) == pytest.approx(1 - (float(correct) - conf) ** 2)


def test_brier_reward_tensor_and_errors():
    conf = torch.tensor([0.0, 0.3, 1.0])
    correct = torch.tensor([True, False, True])
    torch.testing.assert_close(brier_reward(conf, correct), torch.tensor([0.0, 0.91, 1.0]))
    with pytest.raises(ValueError, match="confidence must be a number in"):
        brier_reward(1.5, 1)
    with pytest.raises(ValueError, match="correct must have the shape of confidence"):
        brier_reward(conf, correct[:2])
    with pytest.raises(TypeError, match="both be tensors"):
        brier_reward(conf, 1)
    with pytest.raises(ValueError, match="confidence must lie in"):
        brier_reward(conf * 2, correct)


def _loop_pairs(b, key, better):
    n = len(b.confidence)
    out = []
    for i in range(n):
        pairs = []
        for j in range(n):
            if i == j or not (b.valid[i] and b.valid[j]) or key[i] != key[j]:
                continue
            s = better(i, j)
            if s:
                pairs.append((j, s))
        out.append(pairs)
    return out


@given(batches())
def test_rank_consistency_equals_loop(b):
    sign = lambda i, j: int(b.reward[i] > b.reward[j]) - int(b.reward[i] < b.reward[j])  # noqa: E731
    want = reference.consistency(b.confidence, _loop_pairs(b, b.group, lambda i, j: int(sign(i, j))))
    got = rank_consistency_reward(b.confidence, b.reward, b.group, valid=b.valid)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


@given(batches())
def test_corruption_consistency_equals_loop(b):
    s = b.severity
    want = reference.consistency(b.confidence, _loop_pairs(b, b.group, lambda i, j: int((s[i] < s[j]).item()) - int((s[i] > s[j]).item())))
    got = corruption_consistency_reward(b.confidence, b.severity, b.group, valid=b.valid)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_consistency_extremes():
    reward = torch.tensor([0.0, 1.0, 2.0])
    group = torch.zeros(3, dtype=torch.long)
    assert rank_consistency_reward(torch.tensor([0.1, 0.2, 0.3]), reward, group).tolist() == [1.0, 1.0, 1.0]
    assert rank_consistency_reward(torch.tensor([0.3, 0.2, 0.1]), reward, group).tolist() == [-1.0, -1.0, -1.0]


@pytest.mark.parametrize(
    "text, correct, confidence",
    [
        ("x=3 <confidence>0.8</confidence>", 1.0, 0.8),
        ("x=3 <confidence>80%</confidence>", 0.0, 0.8),
        ("<confidence>0.1</confidence> then <confidence>0.9</confidence>", 1, 0.9),
        ("no tag at all", 1.0, None),
        ("<confidence>very</confidence>", 0.0, None),
        ("<confidence>1.5</confidence>", 1.0, None),
    ],
)
def test_verbalized_reward_is_correctness_plus_brier(text, correct, confidence):
    r = verbalized_reward(text, correct)
    assert r.confidence == confidence and r.correct == float(correct)
    expected_brier = 0.0 if confidence is None else 1.0 - (correct - confidence) ** 2
    assert r.brier == pytest.approx(expected_brier) and r.score == pytest.approx(correct + expected_brier)


def test_verbalized_reward_never_pays_for_leaving_the_tag_out():
    for correct in (0.0, 1.0):
        missing = verbalized_reward("answer", correct).score
        assert all(verbalized_reward(f"answer <confidence>{c}</confidence>", correct).score >= missing for c in (0, 0.3, 0.5, 1))


@pytest.mark.parametrize("text, correct, err", [(3, 1.0, TypeError), ("a", 1.5, ValueError), ("a", "1", ValueError)])
def test_verbalized_reward_bad_input(text, correct, err):
    with pytest.raises(err):
        verbalized_reward(text, correct)


def test_strip_verbalized_confidence_removes_every_tag_and_nothing_else():
    text = "x = 5 <confidence>0.9</confidence>\nso \\boxed{5}<CONFIDENCE> 80% </CONFIDENCE>."
    assert strip_verbalized_confidence(text) == "x = 5 \nso \\boxed{5}."
    assert strip_verbalized_confidence("no tag <confidence>0.9") == "no tag <confidence>0.9"
    assert parse_verbalized_confidence(strip_verbalized_confidence(text)) is None
    with pytest.raises(TypeError, match="text must be a str"):
        strip_verbalized_confidence(None)

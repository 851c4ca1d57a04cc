"""The verl reward hook on a handful of responses, against hand-computed values.

gsm8k (0/1) and DAPO (a dict with ``acc`` and a ±1 score) run verl's real scorers; geo3k's scorer needs
``mathruler`` (not installed here), so its ``0.9 * accuracy + 0.1 * format`` values are fed in directly.
"""

from __future__ import annotations

import pytest

from frameworks import require

require("verl")

from rac_losses.integrations.verl import reward  # noqa: E402

KEYS = {"score", "correct", "confidence", "confidence_valid", "brier"}


def expected(correct: float, confidence: float | None) -> dict[str, float]:
    brier = 0.0 if confidence is None else 1.0 - (correct - confidence) ** 2
    return {
        "score": correct + brier,
        "correct": correct,
        "confidence": -1.0 if confidence is None else confidence,
        "confidence_valid": float(confidence is not None),
        "brier": brier,
    }


@pytest.mark.parametrize(
    ("solution", "correct", "confidence"),
    [
        ("6 * 7 = 42 #### 42 <confidence>0.9</confidence>", 1.0, 0.9),  # right and sure
        ("6 * 7 = 41 #### 41 <confidence>0.9</confidence>", 0.0, 0.9),  # wrong and sure
        ("6 * 7 = 41 #### 41 <confidence>0.2</confidence>", 0.0, 0.2),  # wrong and unsure
        ("6 * 7 = 42 #### 42 <confidence>75%</confidence>", 1.0, 0.75),  # a percentage
        ("6 * 7 = 42 #### 42", 1.0, None),  # no tag: no Brier reward
        ("6 * 7 = 42 #### 42 <confidence>high</confidence>", 1.0, None),  # malformed
        ("6 * 7 = 42 #### 42 <confidence>1.5</confidence>", 1.0, None),  # out of range
        ("6 * 7 = 42 #### 42 <confidence>0.3", 1.0, None),  # unclosed
        ("<confidence>0.1</confidence> #### 42 <confidence>0.8</confidence>", 1.0, 0.8),  # the last tag counts
    ],
)
def test_gsm8k(solution, correct, confidence):
    out = reward.compute_score("openai/gsm8k", solution, "42")
    assert out.keys() == KEYS and all(type(v) is float for v in out.values())
    assert out == pytest.approx(expected(correct, confidence), abs=1e-12)


def test_confidence_is_not_read_as_the_answer():
    # DAPO reads everything after "Answer:" on its line: the tag must be removed before scoring
    out = reward.compute_score("math_dapo", "Answer: 5 <confidence>0.6</confidence>", "5")
    assert out == pytest.approx(expected(1.0, 0.6), abs=1e-12)
    wrong = reward.compute_score("math_dapo", "Answer: 4 <confidence>0.6</confidence>", "5")
    assert wrong == pytest.approx(expected(0.0, 0.6), abs=1e-12)  # DAPO's -1 maps to incorrect


@pytest.mark.parametrize(("geo3k_score", "correct"), [(1.0, 1.0), (0.9, 1.0), (0.1, 0.0), (0.0, 0.0)])
def test_geo3k_accuracy_without_the_format_bonus(monkeypatch, geo3k_score, correct):
    seen = []

    def geo3k(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        seen.append((data_source, solution_str, ground_truth, extra_info, kwargs))
        return geo3k_score

    monkeypatch.setattr(reward, "default_compute_score", geo3k)
    out = reward.compute_score(
        "hiyouga/geometry3k", "<think>t</think> \\boxed{3}\n<confidence>0.7</confidence>", "3", {"index": 4}, extra=1
    )
    assert out == pytest.approx(expected(correct, 0.7), abs=1e-12)
    assert seen == [("hiyouga/geometry3k", "<think>t</think> \\boxed{3}\n", "3", {"index": 4}, {"extra": 1})]


def test_unknown_data_source_raises():
    with pytest.raises(NotImplementedError):
        reward.compute_score("no/such-dataset", "#### 1 <confidence>0.5</confidence>", "1")


def test_loads_through_verls_custom_reward_function_config():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    hook = {"path": "pkg://rac_losses.integrations.verl.reward", "name": "compute_score"}  # as users write it
    config = OmegaConf.create({"reward": {"custom_reward_function": hook}})
    fn = get_custom_reward_fn(config)
    # called as verl's naive reward manager calls it
    solution = "#### 42 <confidence>0.5</confidence>"
    out = fn(data_source="openai/gsm8k", solution_str=solution, ground_truth="42", extra_info={})
    assert out == pytest.approx(expected(1.0, 0.5), abs=1e-12)

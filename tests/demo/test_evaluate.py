"""evaluate: the stated, token and expected stated confidences and the release's summary, recomputed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rac_losses import stated_confidence
from rac_losses.demo.evaluate import EvalSet, evaluate
from rac_losses.demo.policy import images_to_tensor
from rac_losses.demo.task import CONFIDENCE_VALUES, generate, score_responses
from rac_losses.demo.train import TrainConfig, make_policy
from rac_losses.metrics import brier_score, calibration_summary, expected_calibration_error


def test_clean_metrics_equal_a_recomputation() -> None:
    data = EvalSet(generate(48, 9), 9)
    policy = make_policy(2, TrainConfig().policy)  # untrained: many malformed answers
    res = evaluate(policy, data, batch_size=20)["0"]
    policy.eval()
    with torch.no_grad():
        visual = policy.encode(images_to_tensor(data.batch.images))
        roll = policy.sample(visual, torch.from_numpy(data.batch.questions), None, greedy=True, keep_dist=True)
        expected = stated_confidence(roll.dist, torch.ones(48, 1, dtype=torch.long), torch.from_numpy(CONFIDENCE_VALUES).float())
    s = score_responses(roll.tokens.numpy(), roll.lengths.numpy(), data.batch.answers, data.batch.qtypes)
    shown = np.where(s.well_formed, s.confidence, 0.0)  # a malformed answer states nothing: 0
    assert 0 < res["malformed"] == pytest.approx(1 - s.well_formed.mean())
    assert res["accuracy"] == pytest.approx(s.correct.mean())
    assert res["conf"] == pytest.approx(shown.mean())
    assert res["ece"] == pytest.approx(expected_calibration_error(shown, s.correct, n_bins=15))
    assert res["ece10"] == pytest.approx(expected_calibration_error(shown, s.correct, n_bins=10, strategy="uniform_right"))
    assert res["brier"] == pytest.approx(brier_score(shown, s.correct))
    assert res["conf_tok"] == pytest.approx(roll.logprobs[:, 0].exp().double().mean().item(), rel=1e-6)
    assert res["conf_exp"] == pytest.approx(np.where(s.well_formed, expected.double().numpy(), 0.0).mean(), rel=1e-6)
    summary = calibration_summary(np.where(s.well_formed, s.confidence, -1.0), s.correct, format_ok=s.well_formed)
    assert res["summary"] == pytest.approx(summary)
    assert res["summary"]["count"] == s.well_formed.sum()  # malformed answers are left out, as the release does

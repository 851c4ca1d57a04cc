"""Evaluation on held-out clean images and on corrupted copies at severities 1..5.

The policy answers greedily (``answer confidence <eos>``). Per severity (0 = clean):

- ``accuracy``; ``malformed`` (not ``answer confidence <eos>`` with an answer of the question's type);
- the **stated** confidence (the confidence token's value; 0 for a malformed response, which is never
  correct): ``ece`` (15 equal-width bins), ``ece10`` (the paper's 10 right-closed bins), ``brier``,
  ``auroc``, ``conf``;
- the **token-probability** confidence, the answer token's probability: ``ece_tok``, ``ece10_tok``,
  ``brier_tok``, ``auroc_tok``, ``conf_tok``;
- the **expected stated** confidence (:func:`rac_losses.stated_confidence` at the confidence position, the
  quantity ``rac_loss_stated`` trains; 0 for malformed): ``ece_exp``, ``auroc_exp``, ``conf_exp``;
- ``summary``: :func:`rac_losses.metrics.calibration_summary` of the stated confidence (the release's
  logged metrics; malformed responses have no confidence and count only in its ``format_rate``);
- ``agreement``: the same answer token as on the clean image;
- ``reliability`` and ``reliability_tok``: per-bin counts, summed confidences and summed correctness, so
  curves can be pooled over seeds exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from rac_losses import stated_confidence
from rac_losses.demo.corrupt import CORRUPTIONS, corrupt_images
from rac_losses.demo.policy import TinyVLPolicy, images_to_tensor
from rac_losses.demo.task import CONFIDENCE_POSITION, CONFIDENCE_VALUES, MISSING, Batch, score_responses
from rac_losses.metrics import auroc, brier_score, calibration_summary, expected_calibration_error, reliability_curve

__all__ = ["N_BINS", "SEVERITIES", "EvalSet", "evaluate"]

N_BINS = 15
SEVERITIES = (0, 1, 2, 3, 4, 5)


class EvalSet:
    """A held-out batch and its corrupted copies: ``images[s]`` for severity ``s`` (0 = clean).

    Example ``i`` is corrupted by ``CORRUPTIONS[i % len(CORRUPTIONS)]`` at every severity (seeded by ``i``),
    so each severity holds the same mix of corruptions.
    """

    def __init__(self, batch: Batch, seed: int) -> None:
        self.batch = batch
        n = len(batch)
        kinds = np.arange(n) % len(CORRUPTIONS)
        seeds = seed * 1_000_003 + np.arange(n) + 500_000
        self.images = {0: batch.images}
        for s in SEVERITIES[1:]:
            self.images[s] = corrupt_images(batch.images, kinds, np.full(n, s), seeds)


def _curve(conf: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    c = reliability_curve(conf, correct, n_bins=N_BINS)
    count = c.bin_count.astype(np.float64)
    return {
        "count": c.bin_count.tolist(),
        "conf_sum": np.nan_to_num(c.bin_confidence * count).tolist(),
        "correct_sum": np.nan_to_num(c.bin_accuracy * count).tolist(),
    }


def _scores(conf: np.ndarray, correct: np.ndarray, suffix: str) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # AUROC is NaN when one class is absent
        a = auroc(conf, correct)
    return {
        f"ece{suffix}": expected_calibration_error(conf, correct, n_bins=N_BINS),
        f"ece10{suffix}": expected_calibration_error(conf, correct, n_bins=10, strategy="uniform_right"),
        f"auroc{suffix}": a,
        f"brier{suffix}": brier_score(conf, correct),
        f"conf{suffix}": float(conf.mean()),
    }


@torch.no_grad()
def evaluate(policy: TinyVLPolicy, data: EvalSet, batch_size: int = 500) -> dict[str, dict]:
    """Metrics per severity (keys ``"0"`` .. ``"5"``); see the module docstring."""
    policy.eval()
    dev = next(policy.parameters()).device
    b = data.batch
    questions = torch.from_numpy(b.questions).to(dev)
    values = torch.from_numpy(CONFIDENCE_VALUES).float().to(dev)
    results: dict[str, dict] = {}
    clean_answer = None
    for s in SEVERITIES:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("correct", "well", "stated", "answer", "tok", "exp")}
        for lo in range(0, len(b), batch_size):
            sl = slice(lo, lo + batch_size)
            visual = policy.encode(images_to_tensor(data.images[s][sl], dev))
            roll = policy.sample(visual, questions[sl], None, greedy=True, keep_dist=True)
            scored = score_responses(roll.tokens.cpu().numpy(), roll.lengths.cpu().numpy(), b.answers[sl], b.qtypes[sl])
            positions = torch.full((len(scored.correct), 1), CONFIDENCE_POSITION, dtype=torch.long, device=dev)
            expected = stated_confidence(roll.dist, positions, values).cpu().double().numpy()
            parts["correct"].append(scored.correct)
            parts["well"].append(scored.well_formed)
            parts["stated"].append(scored.confidence)
            parts["answer"].append(roll.tokens[:, 0].cpu().numpy())
            parts["tok"].append(roll.logprobs[:, 0].exp().cpu().double().numpy())
            parts["exp"].append(np.where(scored.well_formed, expected, 0.0))
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        correct, well, stated = cat["correct"], cat["well"], cat["stated"]
        shown = np.where(well, stated, 0.0)
        res: dict = {"accuracy": float(correct.mean()), "malformed": float(1 - well.mean())}
        res.update(_scores(shown, correct, ""))
        res.update(_scores(cat["tok"], correct, "_tok"))
        exp = _scores(cat["exp"], correct, "_exp")
        res.update({k: exp[k] for k in ("ece_exp", "auroc_exp", "conf_exp")})
        res["summary"] = calibration_summary(np.where(well, stated, MISSING), correct, format_ok=well)
        res["reliability"] = _curve(shown, correct)
        res["reliability_tok"] = _curve(cat["tok"], correct)
        if s == 0:
            clean_answer = cat["answer"]
        res["agreement"] = float((cat["answer"] == clean_answer).mean())
        results[str(s)] = res
    return results

"""Evaluation on held-out clean images and on corrupted copies at severities 1..5.

The policy answers greedily. Per severity (0 = clean):

- ``accuracy``; ``malformed`` (not exactly one valid answer token then ``<eos>``);
- confidence ``prob`` = ``sequence_confidence(..., method="prob")`` = exp(mean token log-prob) of the
  answer, the issue's headline confidence: ``ece`` (15 equal-width bins), ``auroc``, ``brier``,
  ``conf``; and the same four for the sequence probability exp(sum of token log-probs): ``ece_seq``,
  ``auroc_seq``, ``brier_seq``, ``conf_seq``;
- for corrupted images: ``agreement`` (the same response as on the clean image) and ``conf_same``: the
  ``prob`` confidence of the *clean image's* response re-scored on the corrupted image (the quantity the
  pairwise loss acts on);
- ``reliability`` and ``reliability_seq``: per-bin counts, summed confidences and summed correctness, so
  curves can be pooled over seeds exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from rac_losses import sequence_confidence
from rac_losses.demo.corrupt import CORRUPTIONS, corrupt_images
from rac_losses.demo.policy import TinyVLPolicy, images_to_tensor
from rac_losses.demo.task import Batch, score_responses
from rac_losses.metrics import auroc, brier_score, expected_calibration_error, reliability_curve

__all__ = ["N_BINS", "SEVERITIES", "EvalSet", "make_eval_set", "evaluate"]

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


def make_eval_set(batch: Batch, seed: int) -> EvalSet:
    return EvalSet(batch, seed)


def _prob(logprobs: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    return sequence_confidence(logprobs, mask, method="prob").numpy().astype(np.float64)


def _seq_prob(logprobs: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    return torch.where(mask, logprobs, 0.0).sum(1).exp().numpy().astype(np.float64)


def _curve(conf: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    c = reliability_curve(conf, correct, n_bins=N_BINS)
    count = c.bin_count.astype(np.float64)
    return {
        "count": c.bin_count.tolist(),
        "conf_sum": np.nan_to_num(c.bin_confidence * count).tolist(),
        "correct_sum": np.nan_to_num(c.bin_accuracy * count).tolist(),
    }


def _scores(conf: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # AUROC is NaN when one class is absent
        a = auroc(conf, correct)
    return {
        "ece": expected_calibration_error(conf, correct, n_bins=N_BINS),
        "auroc": a,
        "brier": brier_score(conf, correct),
        "conf": float(conf.mean()),
    }


@torch.no_grad()
def evaluate(policy: TinyVLPolicy, data: EvalSet, batch_size: int = 500) -> dict[str, dict]:
    """Metrics per severity (keys ``"0"`` .. ``"5"``); see the module docstring."""
    policy.eval()
    dev = next(policy.parameters()).device
    b = data.batch
    questions = torch.from_numpy(b.questions).to(dev)
    results: dict[str, dict] = {}
    clean_tokens = None
    for s in SEVERITIES:
        toks, masks, conf, seq, same, correct_all, well_all = [], [], [], [], [], [], []
        for lo in range(0, len(b), batch_size):
            sl = slice(lo, lo + batch_size)
            visual = policy.encode(images_to_tensor(data.images[s][sl], dev))
            roll = policy.sample(visual, questions[sl], None, greedy=True)
            roll_tokens, roll_mask = roll.tokens.cpu(), roll.mask.cpu()
            correct, well, _ = score_responses(roll_tokens.numpy(), roll.lengths.cpu().numpy(), b.answers[sl], b.qtypes[sl])
            toks.append(roll_tokens.numpy())
            masks.append(roll_mask.numpy())
            conf.append(_prob(roll.logprobs.cpu(), roll_mask))
            seq.append(_seq_prob(roll.logprobs.cpu(), roll_mask))
            correct_all.append(correct)
            well_all.append(well)
            if s > 0:  # the clean response re-scored on the corrupted image
                ct = torch.from_numpy(clean_tokens[sl]).to(dev)
                cmask = torch.from_numpy(clean_mask[sl])
                logits = policy.response_logits(visual, questions[sl], ct)  # one prefix per row
                lp = torch.log_softmax(logits.float(), -1).gather(2, ct.unsqueeze(2)).squeeze(2).cpu()
                same.append(_prob(lp, cmask))
        tokens = np.concatenate(toks)
        conf_a, seq_a = np.concatenate(conf), np.concatenate(seq)
        correct_a, well_a = np.concatenate(correct_all), np.concatenate(well_all)
        res = {"accuracy": float(correct_a.mean()), "malformed": float(1 - well_a.mean())}
        res.update(_scores(conf_a, correct_a))
        res.update({f"{k}_seq": v for k, v in _scores(seq_a, correct_a).items()})
        res["reliability"] = _curve(conf_a, correct_a)
        res["reliability_seq"] = _curve(seq_a, correct_a)
        if s == 0:
            clean_tokens, clean_mask = tokens, np.concatenate(masks)
            res["agreement"] = 1.0
            res["conf_same"] = res["conf"]
        else:
            res["agreement"] = float((tokens == clean_tokens).all(1).mean())
            res["conf_same"] = float(np.concatenate(same).mean())
        results[str(s)] = res
    return results

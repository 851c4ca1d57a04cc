"""Confidence over a question's valid answer candidates (multiple choice, closed vocabularies).

When the answers a prompt admits are known (options A-D, yes/no, a closed set of labels), the policy's
distribution *restricted to those candidates* gives a confidence that cannot be lowered by moving
probability onto malformed output: renormalising over the candidates makes it blind to the mass outside
them, so its gradient only redistributes mass among valid answers. Used as the pairwise corruption loss's
confidence, it makes the policy unsure among plausible answers on a corrupted image, instead of flipping
to a runner-up answer (what the sampled response's log-prob does) or producing malformed answers (what
the token entropy along the response does).

Typical inputs: the logits (or log-probs) of the first answer token at the answer position, gathered at
the candidate tokens, or the teacher-forced sequence log-probs of each candidate answer. Only differences
within a row matter (the renormalisation removes any per-row shift).
"""

from __future__ import annotations

import math
from typing import Final

import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_choice, check_finite, check_float_tensor, check_mask, check_same_device

__all__ = ["CANDIDATE_METHODS", "candidate_confidence"]

CANDIDATE_METHODS: Final = ("neg_entropy", "max_prob", "log_max_prob", "log_mass")


def candidate_confidence(
    candidate_scores: torch.Tensor,
    candidate_mask: torch.Tensor,
    *,
    method: str = "neg_entropy",
    normalize: bool = True,
) -> torch.Tensor:
    """Confidence of each row's distribution over its valid answer candidates.

    With ``p = softmax(candidate_scores)`` over the row's valid candidates (``candidate_mask``):

    - ``"neg_entropy"`` (default): ``sum_c p_c log p_c``, in ``[-log C, 0]`` (``C`` valid candidates);
      with ``normalize`` divided by ``log C`` so it lies in ``[-1, 0]`` whatever ``C`` (0 for ``C = 1``).
    - ``"max_prob"``: ``max_c p_c``, in ``[1/C, 1]`` (``normalize`` ignored).
    - ``"log_max_prob"``: ``log max_c p_c``, in ``[-log C, 0]`` (``normalize`` divides by ``log C``).
    - ``"log_mass"``: ``logsumexp_c candidate_scores`` over the valid candidates, *not* renormalised: with
      full-vocabulary log-probs as scores, the log of the probability that the answer is a valid candidate
      at all, in ``(-inf, 0]`` (``normalize`` ignored). It is not a confidence in the answer but an anchor:
      since the renormalised forms are blind to mass outside the candidates, a trainer that lowers them on
      corrupted inputs can add ``-log_mass`` on those rows so the policy becomes unsure *among valid
      answers* rather than leaving the answer space (answering "yes" to "how many"). Rows without a
      candidate get 0.

    Higher = more confident. Differentiable in ``candidate_scores``; computed in float32 (float64 for
    float64 input). Masked-out entries may hold anything, including ``-inf``; they get zero gradient.
    A row with no valid candidate gets 0 (``"neg_entropy"``, ``"log_max_prob"``) or 1 (``"max_prob"``) and
    no gradient; callers should mark such rows invalid in the losses.

    Args:
        candidate_scores: ``[N, C]`` float: per candidate, its log-prob, sequence log-prob or logit (only
            differences within a row matter, except for ``"log_mass"``, which needs log-probs).
        candidate_mask: ``[N, C]`` bool or 0/1: which candidates are valid answers for the row.
        method: one of ``CANDIDATE_METHODS``.
        normalize: divide the entropy forms by ``log C`` (per row).

    Returns:
        ``[N]`` float32 (float64 for float64 input).

    Raises:
        TypeError: non-tensor or non-float ``candidate_scores``, a mask that is neither bool nor 0/1,
            a non-bool ``normalize``.
        ValueError: unknown ``method`` (lists the valid ones), shapes other than the above, non-finite
            scores on valid candidates, different devices.
    """
    check_choice(method, "method", CANDIDATE_METHODS)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    candidate_scores = check_float_tensor(candidate_scores, "candidate_scores", [None, None])
    n, c = candidate_scores.shape
    candidate_mask = check_mask(candidate_mask, "candidate_mask", [n, c])
    check_same_device([("candidate_scores", candidate_scores), ("candidate_mask", candidate_mask)])
    check_finite(candidate_scores, "candidate_scores", candidate_mask)

    dtype = working_dtype(candidate_scores)
    count = candidate_mask.sum(-1)
    has_any = count > 0
    # rows without a candidate: make every slot valid (finite zeros) so nothing is NaN, then overwrite
    safe_mask = candidate_mask | ~has_any.unsqueeze(-1)
    scores = torch.where(safe_mask, candidate_scores.to(dtype), candidate_scores.new_tensor(-math.inf, dtype=dtype))
    scores = torch.where(has_any.unsqueeze(-1), scores, scores.new_zeros(()))
    logp_all = torch.log_softmax(scores, dim=-1)  # -inf on invalid candidates
    logp = torch.where(safe_mask, logp_all, logp_all.new_zeros(()))  # no -inf * 0 in the entropy
    log_c = count.clamp_min(1).to(dtype).log()
    denom = torch.where(count > 1, log_c, log_c.new_ones(()))

    if method == "log_mass":
        out = torch.logsumexp(scores, dim=-1)
        return torch.where(has_any, out, out.new_zeros(()))
    if method == "max_prob":
        out = logp_all.max(-1).values.exp()
        return torch.where(has_any, out, out.new_ones(()))
    if method == "log_max_prob":
        out = logp_all.max(-1).values
    else:
        out = (logp.exp() * logp).sum(-1)
    if normalize:
        out = out / denom
    return torch.where(has_any, out, out.new_zeros(()))

"""Sequence confidence: one number per response, higher = more confident, differentiable."""

from __future__ import annotations

from typing import Final

import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_choice, check_finite, check_float_tensor, check_mask, check_same_device

__all__ = ["CONFIDENCE_METHODS", "sequence_confidence"]

CONFIDENCE_METHODS: Final = ("mean_logprob", "prob", "neg_entropy", "topk")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(mask * values) / sum(mask)`` over the last dim, ignoring whatever masked slots hold; NaN (with
    a zero gradient) where the mask is empty."""
    total = torch.where(mask, values, values.new_zeros(())).sum(-1)
    count = mask.sum(-1)
    mean = total / count.clamp_min(1).to(values.dtype)
    return torch.where(count > 0, mean, mean.new_full((), float("nan")))


def sequence_confidence(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str = "mean_logprob",
    token_entropy: torch.Tensor | None = None,
    topk_logprobs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Confidence of each sampled response.

    Methods (``m`` = number of response tokens, masked mean over them):

    - ``"mean_logprob"``: ``sum(mask * logp) / m``, in ``(-inf, 0]``. Length-normalised.
    - ``"prob"``: ``exp(mean_logprob)``, the geometric-mean token probability, in ``(0, 1]``.
    - ``"neg_entropy"``: minus the mean token entropy (needs ``token_entropy``), in ``(-log V, 0]``.
    - ``"topk"``: DeepConf's token confidence ``-(1/k) sum_j topk_logprobs[..., j]``, mean over tokens
      (needs ``topk_logprobs``). Note it rises both when the distribution sharpens and, for small ``k``,
      when it flattens over a large vocabulary; DeepConf uses ``k`` around 20.

    A row with an empty mask has no confidence: it gets NaN (as ``torch.mean`` of nothing), with a zero
    gradient. It can therefore never be compared by accident: the comparison losses raise on a NaN
    confidence unless the row is marked invalid (``valid=mask.any(-1)``); :func:`rac_losses.rac_loss` leaves
    such rows out itself.

    Args:
        token_logprobs: ``[N, T]`` float, log-probability of each sampled token (any float dtype).
        mask: ``[N, T]`` bool or 0/1, which tokens belong to the response. Masked-out slots may hold
            anything (including ``-inf``).
        method: one of ``CONFIDENCE_METHODS``.
        token_entropy: ``[N, T]`` float per-token entropy, required by ``"neg_entropy"``.
        topk_logprobs: ``[N, T, k]`` float, the k largest log-probs per token, required by ``"topk"``.

    Returns:
        ``[N]`` float32 (float64 for float64 input), differentiable in the float inputs; NaN exactly on the
        rows whose mask is empty.

    Raises:
        TypeError: non-tensor or non-float inputs, a mask that is neither bool nor 0/1 numbers.
        ValueError: unknown ``method`` (lists the valid ones), the tensor the method needs not given,
            shapes other than the above, non-finite values under the mask, different devices.
    """
    check_choice(method, "method", CONFIDENCE_METHODS)
    token_logprobs = check_float_tensor(token_logprobs, "token_logprobs", [None, None])
    n, t = token_logprobs.shape
    mask = check_mask(mask, "mask", [n, t])
    check_same_device([("token_logprobs", token_logprobs), ("mask", mask)])
    dtype = working_dtype(token_logprobs)

    if method in ("mean_logprob", "prob"):
        check_finite(token_logprobs, "token_logprobs", mask)
        mean = _masked_mean(token_logprobs.to(dtype), mask)
        return mean if method == "mean_logprob" else mean.exp()

    if method == "neg_entropy":
        if token_entropy is None:
            raise ValueError('method="neg_entropy" needs token_entropy [N, T]; pass the per-token entropy')
        token_entropy = check_float_tensor(token_entropy, "token_entropy", [n, t])
        check_same_device([("token_logprobs", token_logprobs), ("token_entropy", token_entropy)])
        check_finite(token_entropy, "token_entropy", mask)
        return -_masked_mean(token_entropy.to(dtype), mask)

    if topk_logprobs is None:
        raise ValueError('method="topk" needs topk_logprobs [N, T, k]; pass the top-k log-probs per token')
    topk_logprobs = check_float_tensor(topk_logprobs, "topk_logprobs", [n, t, None])
    if topk_logprobs.shape[2] < 1:
        raise ValueError(f"topk_logprobs must have k >= 1 in shape [N, T, k], got {tuple(topk_logprobs.shape)}")
    check_same_device([("token_logprobs", token_logprobs), ("topk_logprobs", topk_logprobs)])
    check_finite(topk_logprobs, "topk_logprobs", mask.unsqueeze(-1))
    token_conf = -topk_logprobs.to(dtype).mean(-1)
    return _masked_mean(token_conf, mask)

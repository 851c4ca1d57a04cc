"""A differentiable *stated* confidence: the expected value the policy states at its confidence position(s).

The paper's formulation reads a confidence the model writes (``<confidence>0.85</confidence>``); as text
it has no gradient. :func:`stated_confidence` gives the same quantity as a smooth function of the logits:
at each position where the response states (a digit of) its confidence, the expected value of the token
under the policy's distribution there, summed over the digits with their place values. So this package's
losses (:func:`~rac_losses.ranking_group_loss`, :func:`~rac_losses.pairwise_corruption_loss`) can act on
the confidence the model states, the one the paper's reward acts on.

Tokenizer-free: the caller says which token ids are confidence tokens and what each is worth
(``token_values``, NaN for every other token), where the confidence tokens sit in each response
(``positions``), and what each digit position is worth (``place_values``). Examples:

- one token per confidence (11 tokens ``0.0`` ... ``1.0``): ``positions [N, 1]``, ``token_values`` the 11
  values, ``place_values=None``;
- ``0.85`` written as ``0`` ``.`` ``8`` ``5``: the positions of ``0``, ``8`` and ``5`` (``[N, 3]``),
  ``token_values`` the digits 0..9 at the digit tokens' ids, ``place_values=(1, 0.1, 0.01)``; a shorter
  number (``0.9``) masks its missing digits (``mask``).

Under teacher forcing the distribution at digit ``d`` is conditioned on the digits the response actually
wrote before it, so the result is the stated number with each digit replaced by its expectation given the
digits before it (exactly the stated number when the policy is certain of each digit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_float_tensor, check_index_tensor, check_mask, check_same_device, check_shape

__all__ = ["stated_confidence"]


def _check_values(token_values: object, d: int, v: int) -> torch.Tensor:
    """``token_values`` as a ``[D, V]`` table (a ``[V]`` one is shared by every digit position)."""
    token_values = check_float_tensor(token_values, "token_values", [None] * getattr(token_values, "ndim", 1))
    if token_values.ndim not in (1, 2):
        raise ValueError(f"token_values must have shape [V={v}] or [D={d}, V={v}], got {tuple(token_values.shape)}")
    if token_values.ndim == 1:
        check_shape(token_values, "token_values", [v])
        token_values = token_values.expand(d, v)
    else:
        check_shape(token_values, "token_values", [d, v])
    if bool(torch.isinf(token_values).any()):
        raise ValueError("token_values must be finite for confidence tokens and NaN for every other token, got inf")
    if d and not bool((~torch.isnan(token_values)).any(1).all()):
        empty = int((~(~torch.isnan(token_values)).any(1)).nonzero()[0, 0])
        raise ValueError(f"token_values has no confidence token (every value NaN) for digit position {empty}")
    return token_values


def _check_places(place_values: object, d: int) -> torch.Tensor:
    if place_values is None:
        return torch.ones(d, dtype=torch.float64)
    if isinstance(place_values, torch.Tensor):
        places = check_float_tensor(place_values, "place_values", [d]).detach().double().cpu()
    elif isinstance(place_values, Sequence) and not isinstance(place_values, str):
        if any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in place_values):
            raise TypeError(f"place_values must hold numbers, got {list(place_values)!r}")
        places = torch.tensor([float(p) for p in place_values], dtype=torch.float64)
        check_shape(places, "place_values", [d])
    else:
        raise TypeError(f"place_values must be a sequence of numbers or a float tensor, got {type(place_values).__name__}")
    if not bool(torch.isfinite(places).all()):
        raise ValueError("place_values must be finite")
    return places


def stated_confidence(
    logits: torch.Tensor,
    positions: torch.Tensor,
    token_values: torch.Tensor,
    *,
    place_values: Sequence[float] | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """The expected stated confidence of each response, differentiable in ``logits``.

    ``c_n = sum_d mask[n, d] * place_values[d] * sum_v p_{n,d}(v) * token_values[d, v]`` with ``p_{n,d}``
    the policy's distribution over the vocabulary at position ``positions[n, d]``: ``softmax(logits)``
    renormalised over the confidence tokens (``normalize=True``, the expected value *given* that a
    confidence token is written), or the full softmax (``normalize=False``: mass on other tokens counts as
    value 0, so the result falls when the policy leaves the confidence format).

    Args:
        logits: ``[N, T, V]`` float, the logits (or log-probs: the softmax is the same) predicting each
            response token; ``logits[n, t]`` is the distribution of token ``t``. Any float dtype; computed
            in float32 (float64 for float64 input). ``-inf`` entries are a masked vocabulary.
        positions: ``[N, D]`` integer, the index along ``T`` of each row's ``D`` confidence (digit)
            tokens; masked entries may hold anything (e.g. ``-1``).
        token_values: ``[V]`` or ``[D, V]`` float, the value of each token id as a confidence token (per
            digit position for ``[D, V]``), NaN for every token that is not one; at least one token per
            digit position must have a value.
        place_values: ``D`` numbers, the weight of each digit position (default all 1: one confidence
            token per row, or digits whose ``token_values`` already carry their place).
        mask: ``[N, D]`` bool or 0/1, which digits each row has (default all).
        normalize: renormalise over the confidence tokens (default) or not (see above).

    Returns:
        ``[N]`` float32 (float64 for float64 ``logits``); NaN (and no gradient) for a row without any
        unmasked digit. Gradient flows only into ``logits`` at the unmasked positions' confidence tokens
        (with ``normalize=False``, at every token of those positions).

    Raises:
        TypeError: a non-tensor, a non-float ``logits``/``token_values``, non-integer ``positions``,
            non-numeric ``place_values``.
        ValueError: wrong shapes (naming the expected and received), an unmasked position outside
            ``[0, T)``, an infinite token value, a digit position without any confidence token,
            non-finite ``place_values``, non-0/1 ``mask``, an unmasked position where every confidence
            token's logit is ``-inf`` or a logit is NaN, inputs on different devices.
    """
    logits = check_float_tensor(logits, "logits", [None, None, None])
    n, t, v = logits.shape
    positions = check_index_tensor(positions, "positions", [n, None])
    d = positions.shape[1]
    values = _check_values(token_values, d, v)
    places = _check_places(place_values, d)
    mask = torch.ones(n, d, dtype=torch.bool, device=logits.device) if mask is None else check_mask(mask, "mask", [n, d])
    check_same_device([("logits", logits), ("positions", positions), ("token_values", token_values), ("mask", mask)])
    pos = positions.long()
    outside = mask & ((pos < 0) | (pos >= t))
    if bool(outside.any()):
        row, digit = (int(i) for i in outside.nonzero()[0])
        raise ValueError(f"positions[{row}, {digit}] = {int(pos[row, digit])} is outside [0, T={t}) on an unmasked digit")

    dtype = working_dtype(logits)
    index = torch.where(mask, pos, torch.zeros_like(pos))
    picked = logits.gather(1, index.unsqueeze(2).expand(n, d, v)).to(dtype)  # [N, D, V]
    is_value = ~torch.isnan(values).to(logits.device)  # [D, V]
    worth = torch.nan_to_num(values.to(device=logits.device, dtype=dtype), nan=0.0)
    if bool(torch.isnan(picked).any(2).logical_and(mask).any()):
        raise ValueError("logits must not be NaN at an unmasked confidence position")
    scores = picked.masked_fill(~is_value, float("-inf")) if normalize else picked
    if bool(torch.isneginf(scores).all(2).logical_and(mask).any()):
        raise ValueError("every confidence token's logit is -inf at an unmasked confidence position")
    # masked digits get a harmless uniform row: their values are dropped below, with zero gradient
    scores = torch.where(mask.unsqueeze(2), scores, scores.new_zeros(()))
    expected = (torch.softmax(scores, dim=2) * worth).sum(2)  # [N, D]
    weight = places.to(device=logits.device, dtype=dtype) * mask
    out = (expected * weight).sum(1)
    return torch.where(mask.any(1), out, out.new_full((), float("nan")))

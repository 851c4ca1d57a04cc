"""sequence_confidence against a per-token loop, dtypes, masks and errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from rac_losses import CONFIDENCE_METHODS, ranking_group_loss, ranking_partners, sequence_confidence


def _inputs(seed: int, n: int = 6, t: int = 9, k: int = 4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, 17, generator=g, dtype=torch.float64)
    logp_all = logits.log_softmax(-1)
    tokens = torch.randint(0, 17, (n, t), generator=g)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    topk = logp_all.topk(k, -1).values
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = torch.arange(t) < lengths.unsqueeze(1)
    return logp.to(dtype), mask, entropy.to(dtype), topk.to(dtype)


@pytest.mark.parametrize("method", CONFIDENCE_METHODS)
@pytest.mark.parametrize("seed", range(3))
def test_equals_loop_reference_value_and_gradient(method, seed):
    logp, mask, entropy, topk = _inputs(seed)
    leaves = [x.clone().requires_grad_(True) for x in (logp, entropy, topk)]
    got = sequence_confidence(leaves[0], mask, method=method, token_entropy=leaves[1], topk_logprobs=leaves[2])
    ref_leaves = [x.clone().requires_grad_(True) for x in (logp, entropy, topk)]
    want = reference.sequence_confidence(ref_leaves[0], mask, method, ref_leaves[1], ref_leaves[2])
    torch.testing.assert_close(got, want, equal_nan=True)
    weights = torch.randn(len(got), dtype=torch.float64)
    grads = torch.autograd.grad((got * weights).nansum(), leaves, allow_unused=True)
    ref_grads = torch.autograd.grad((want * weights).nansum(), ref_leaves, allow_unused=True)
    for a, b, leaf in zip(grads, ref_grads, leaves):
        torch.testing.assert_close(a if a is not None else torch.zeros_like(leaf), b if b is not None else torch.zeros_like(leaf))


@pytest.mark.parametrize("method", CONFIDENCE_METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_float32_output_for_lower_precision_input(method, dtype):
    logp, mask, entropy, topk = _inputs(0, dtype=dtype)
    out = sequence_confidence(logp, mask, method=method, token_entropy=entropy, topk_logprobs=topk)
    assert out.dtype == torch.float32
    want = reference.sequence_confidence(logp, mask, method, entropy, topk)
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5, equal_nan=True)


@given(st.integers(1, 6), st.integers(1, 8), st.data())
def test_masked_slots_never_leak_and_empty_rows_have_no_confidence(n, t, data):
    logp, mask, entropy, _ = _inputs(data.draw(st.integers(0, 1000)), n=n, t=t)
    garbage = torch.where(mask, logp, torch.full_like(logp, float("-inf"))).requires_grad_(True)
    out = sequence_confidence(garbage, mask)
    out.nansum().backward()
    empty = ~mask.any(1)
    assert bool(torch.isfinite(out[~empty]).all()) and bool(torch.isfinite(garbage.grad).all())
    assert bool((garbage.grad[~mask] == 0).all())
    assert bool(torch.isnan(out[empty]).all())


@pytest.mark.parametrize("method", CONFIDENCE_METHODS)
def test_an_empty_row_can_never_be_ranked_by_accident(method):
    # before: an empty row scored 0 (1 for "prob"), the highest confidence there is, and ranked first
    logp, mask, entropy, topk = _inputs(0, n=3, t=4)
    mask[1] = False
    conf = sequence_confidence(logp, mask, method=method, token_entropy=entropy, topk_logprobs=topk)
    assert bool(torch.isnan(conf[1]))
    reward, group = torch.tensor([0.0, 1.0, 0.5]), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"got NaN at row 1.*valid=mask.any\(-1\)"):
        ranking_group_loss(conf, reward, group)
    with pytest.raises(ValueError, match="got NaN at row 1"):
        ranking_partners(conf, reward, group)
    loss = ranking_group_loss(conf, reward, group, valid=mask.any(-1))
    assert bool(torch.isfinite(loss))


def test_prob_is_exp_of_mean_logprob_and_in_unit_interval():
    logp, mask, _, _ = _inputs(4)
    prob = sequence_confidence(logp, mask, method="prob")
    torch.testing.assert_close(prob, sequence_confidence(logp, mask).exp())
    assert bool(((prob > 0) & (prob <= 1)).all())


def test_float_01_mask_equals_bool_mask():
    logp, mask, _, _ = _inputs(2)
    torch.testing.assert_close(sequence_confidence(logp, mask.double()), sequence_confidence(logp, mask))
    torch.testing.assert_close(sequence_confidence(logp, mask.long()), sequence_confidence(logp, mask))


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        (dict(method="entropy"), ValueError, "unknown method 'entropy'; expected one of 'mean_logprob', 'prob'"),
        (dict(method="neg_entropy"), ValueError, "needs token_entropy"),
        (dict(method="topk"), ValueError, "needs topk_logprobs"),
        (dict(method="neg_entropy", token_entropy=torch.zeros(3, 4)), ValueError, r"token_entropy must have shape \[2, 5\], got \(3, 4\)"),
        (dict(method="topk", topk_logprobs=torch.zeros(2, 5)), ValueError, r"topk_logprobs must have shape \[2, 5, \*\]"),
    ],
)
def test_method_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        sequence_confidence(torch.zeros(2, 5), torch.ones(2, 5, dtype=torch.bool), **kwargs)


@pytest.mark.parametrize(
    "logp,mask,error,pattern",
    [
        (torch.zeros(5), torch.ones(5), ValueError, r"token_logprobs must have shape \[\*, \*\], got \(5,\)"),
        (torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5), TypeError, "token_logprobs must be a floating-point tensor"),
        (torch.zeros(2, 5), torch.ones(2, 4), ValueError, r"mask must have shape \[2, 5\], got \(2, 4\)"),
        (torch.zeros(2, 5), torch.full((2, 5), 2.0), ValueError, "mask must hold only 0 and 1"),
        (torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2), ValueError, "token_logprobs must be finite"),
        ([[0.0]], torch.ones(1, 1), TypeError, "token_logprobs must be a torch.Tensor, got list"),
    ],
)
def test_bad_input(logp, mask, error, pattern):
    with pytest.raises(error, match=pattern):
        sequence_confidence(logp, mask)


def test_different_devices_raise():
    meta = torch.zeros(2, 5, device="meta")
    with pytest.raises(ValueError, match="mask is on cpu but token_logprobs is on meta"):
        sequence_confidence(meta, torch.ones(2, 5, dtype=torch.bool))

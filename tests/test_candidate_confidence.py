"""candidate_confidence: a per-row loop reference, invariances, gradients that stay on the candidates, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rac_losses.candidates import CANDIDATE_METHODS, candidate_confidence


def _reference(scores: torch.Tensor, mask: torch.Tensor, method: str, normalize: bool) -> torch.Tensor:
    out = []
    for s, m in zip(scores, mask.bool()):
        valid = s[m]
        c = valid.numel()
        if c == 0:
            out.append(torch.tensor(1.0 if method == "max_prob" else 0.0, dtype=torch.float64))
            continue
        if method == "log_mass":
            out.append(torch.log(valid.double().exp().sum()))
            continue
        p = torch.softmax(valid.double(), 0)
        if method == "max_prob":
            out.append(p.max())
            continue
        value = p.max().log() if method == "log_max_prob" else (p * p.log()).sum()
        if normalize and c > 1:
            value = value / math.log(c)
        out.append(value)
    return torch.stack(out)


def _inputs(seed: int, n: int = 7, c: int = 5):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(n, c, generator=g) < 0.7
    mask[0] = False  # a row without candidates
    mask[1] = False
    mask[1, 2] = True  # a row with one candidate
    return scores, mask


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("method", CANDIDATE_METHODS)
@pytest.mark.parametrize("seed", range(4))
def test_equals_loop_reference(method: str, normalize: bool, seed: int) -> None:
    scores, mask = _inputs(seed)
    got = candidate_confidence(scores, mask, method=method, normalize=normalize)
    torch.testing.assert_close(got, _reference(scores, mask, method, normalize))
    assert got.dtype == torch.float64


@pytest.mark.parametrize("method", CANDIDATE_METHODS)
def test_ranges(method: str) -> None:
    scores, mask = _inputs(0, n=50, c=6)
    got = candidate_confidence(scores, mask, method=method)
    if method == "max_prob":
        assert ((got > 0) & (got <= 1)).all()
    elif method == "log_mass":
        log_probs = torch.log_softmax(scores, -1)
        got = candidate_confidence(log_probs, mask, method=method)
        assert (got <= 1e-9).all()
        torch.testing.assert_close(got[2:].exp(), torch.where(mask, log_probs.exp(), 0.0).sum(1)[2:])
    else:
        assert ((got >= -1 - 1e-6) & (got <= 0)).all()


@given(st.integers(0, 10_000), st.floats(-50, 50))
def test_invariant_to_row_shift_and_to_invalid_entries(seed: int, shift: float) -> None:
    scores, mask = _inputs(seed)
    base = candidate_confidence(scores, mask)
    shifted = scores + shift * torch.arange(scores.shape[0], dtype=scores.dtype).unsqueeze(1)
    garbage = torch.where(mask, shifted, torch.full_like(scores, -math.inf))
    garbage[:, 0] = torch.where(mask[:, 0], garbage[:, 0], torch.tensor(1e30, dtype=scores.dtype))
    torch.testing.assert_close(candidate_confidence(garbage, mask), base)


@pytest.mark.parametrize("method", [m for m in CANDIDATE_METHODS if m != "log_mass"])
def test_gradient_only_moves_mass_among_valid_candidates(method: str) -> None:
    scores, mask = _inputs(1)
    scores = torch.where(mask, scores, torch.full_like(scores, -math.inf)).requires_grad_(True)
    candidate_confidence(scores, mask, method=method).sum().backward()
    grad = scores.grad
    assert torch.isfinite(grad).all()
    assert (grad[~mask] == 0).all()
    # shift invariance -> the gradient of each row sums to zero: no push onto (or off) the candidate set
    torch.testing.assert_close(grad.sum(1), torch.zeros(len(grad), dtype=grad.dtype))


def test_log_mass_gradient_raises_every_valid_candidate() -> None:
    scores, mask = _inputs(1)
    logits = scores.clone().requires_grad_(True)
    candidate_confidence(torch.log_softmax(logits, -1), mask, method="log_mass").sum().backward()
    rows = mask.any(1)
    assert (logits.grad[mask & rows.unsqueeze(1)] >= 0).all()
    assert (logits.grad[~mask & rows.unsqueeze(1)] <= 0).all()


def test_entropy_lowest_when_uniform() -> None:
    mask = torch.ones(2, 4, dtype=torch.bool)
    got = candidate_confidence(torch.tensor([[0.0, 0, 0, 0], [9.0, 0, 0, 0]]), mask)
    assert got[0] == pytest.approx(-1.0) and got[1] > -0.05
    assert got.dtype == torch.float32


def test_low_precision_input_is_computed_in_float32() -> None:
    scores, mask = _inputs(2)
    got = candidate_confidence(scores.to(torch.bfloat16), mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, candidate_confidence(scores.to(torch.bfloat16).float(), mask))


def test_accepts_integer_mask() -> None:
    scores, mask = _inputs(3)
    torch.testing.assert_close(candidate_confidence(scores, mask.int()), candidate_confidence(scores, mask))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(candidate_scores=[[0.0]]), TypeError, "candidate_scores"),
        (dict(candidate_scores=torch.zeros(2, 3, dtype=torch.long)), TypeError, "candidate_scores"),
        (dict(candidate_scores=torch.zeros(2)), ValueError, "candidate_scores"),
        (dict(candidate_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "candidate_mask"),
        (dict(candidate_mask=torch.full((2, 3), 2)), (TypeError, ValueError), "candidate_mask"),
        (dict(method="entropy"), ValueError, "neg_entropy"),
        (dict(normalize=1), TypeError, "normalize"),
        (dict(candidate_scores=torch.tensor([[0.0, math.nan, 0], [0, 0, 0]])), ValueError, "candidate_scores"),
    ],
)
def test_bad_input(kwargs: dict, error: type, match: str) -> None:
    args = dict(candidate_scores=torch.zeros(2, 3), candidate_mask=torch.ones(2, 3, dtype=torch.bool))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        candidate_confidence(args.pop("candidate_scores"), args.pop("candidate_mask"), **args)


def test_nan_on_an_invalid_candidate_is_ignored() -> None:
    scores = torch.tensor([[0.0, math.nan, 1.0]])
    mask = torch.tensor([[True, False, True]])
    assert torch.isfinite(candidate_confidence(scores, mask)).all()


"""stated_confidence: values and gradients against an explicit loop, digits, masks, invariants, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rac_losses import stated_confidence

NAN = float("nan")


def _reference(logits, positions, values, places, mask, normalize):
    """The definition, one row, digit and token at a time (autograd of this loop is the reference gradient)."""
    n, _, v = logits.shape
    d = positions.shape[1]
    table = values if values.ndim == 2 else values.expand(d, v)
    out = []
    for i in range(n):
        if not any(bool(mask[i, k]) for k in range(d)):
            out.append(torch.tensor(NAN, dtype=logits.dtype))
            continue
        total = logits.new_zeros(())
        for k in range(d):
            if not bool(mask[i, k]):
                continue
            row = logits[i, int(positions[i, k])]
            ids = [j for j in range(v) if not math.isnan(float(table[k, j]))] if normalize else list(range(v))
            denom = sum(torch.exp(row[j]) for j in ids)
            for j in ids:
                worth = 0.0 if math.isnan(float(table[k, j])) else float(table[k, j])
                total = total + places[k] * worth * torch.exp(row[j]) / denom
        out.append(total)
    return torch.stack(out)


def _case(seed: int, n=5, t=4, v=9, d=2, table_2d=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g, dtype=torch.float64)
    positions = torch.randint(0, t, (n, d), generator=g)
    values = torch.full((d, v) if table_2d else (v,), NAN, dtype=torch.float64)
    if table_2d:
        values[:, 2:7] = torch.rand(d, 5, generator=g, dtype=torch.float64)
    else:
        values[[1, 3, 4, 8]] = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    mask = torch.rand(n, d, generator=g) < 0.7
    mask[0] = True
    mask[1] = False
    places = [1.0, 0.1][:d] + [0.01] * max(0, d - 2)
    return logits, positions, values, places, mask


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("table_2d", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_equal_the_loop(seed: int, table_2d: bool, normalize: bool) -> None:
    logits, positions, values, places, mask = _case(seed, table_2d=table_2d)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = stated_confidence(a, positions, values, place_values=places, mask=mask, normalize=normalize)
    want = _reference(b, positions, values, places, mask, normalize)
    assert got.dtype == torch.float64 and got.shape == (5,)
    assert torch.isnan(got[1]) and torch.isnan(want[1])
    keep = ~torch.isnan(want)
    torch.testing.assert_close(got[keep], want[keep], rtol=1e-12, atol=1e-12)
    weights = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    (got[keep] * weights[keep]).sum().backward()
    (want[keep] * weights[keep]).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert a.grad[1].abs().sum() == 0  # a row without digits gets no gradient


def test_float32_and_half_inputs_compute_in_float32() -> None:
    logits, positions, values, places, mask = _case(3)
    want = stated_confidence(logits, positions, values, place_values=places, mask=mask)
    for dtype in (torch.float32, torch.bfloat16):
        got = stated_confidence(logits.to(dtype), positions, values.float(), place_values=places, mask=mask)
        assert got.dtype == torch.float32
        keep = ~torch.isnan(want)
        torch.testing.assert_close(got[keep].double(), want[keep], atol=2e-2 if dtype == torch.bfloat16 else 1e-6, rtol=0)


def _digit_logits(rows: list[list[int]], v: int = 12, sharp: float = 60.0) -> torch.Tensor:
    """``[N, T, V]`` logits putting (almost) all mass on token ``rows[n][t]`` at position ``t``."""
    out = torch.zeros(len(rows), max(map(len, rows)), v, dtype=torch.float64)
    for i, row in enumerate(rows):
        for j, tok in enumerate(row):
            out[i, j, tok] = sharp
    return out


DIGITS = torch.full((12,), NAN, dtype=torch.float64)
DIGITS[:10] = torch.arange(10, dtype=torch.float64)  # ids 0..9 are the digits; 10 = ".", 11 = "<eos>"
DOT, EOS = 10, 11


def test_digit_by_digit_composition() -> None:
    # "0.85", "1.0", "0.9" (no second decimal: masked), as tokens 0 . 8 5 / 1 . 0 / 0 . 9
    logits = _digit_logits([[0, DOT, 8, 5, EOS], [1, DOT, 0, EOS], [0, DOT, 9, EOS]])
    positions = torch.tensor([[0, 2, 3], [0, 2, -1], [0, 2, -1]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    got = stated_confidence(logits, positions, DIGITS, place_values=(1.0, 0.1, 0.01), mask=mask)
    torch.testing.assert_close(got, torch.tensor([0.85, 1.0, 0.9], dtype=torch.float64))
    # a split distribution at one digit gives its expectation there, the rest unchanged
    soft = logits.clone()
    soft[0, 2] = float("-inf")
    soft[0, 2, 8] = soft[0, 2, 6] = 0.0  # 8 and 6 equally likely
    torch.testing.assert_close(stated_confidence(soft, positions, DIGITS, place_values=(1.0, 0.1, 0.01), mask=mask)[0],
                               torch.tensor(0.75, dtype=torch.float64))
    # the sum over digits equals one call per digit, weighted by its place
    parts = [stated_confidence(soft, positions[:, k : k + 1], DIGITS, mask=mask[:, k : k + 1]) for k in range(3)]
    parts = [torch.nan_to_num(p) for p in parts]
    torch.testing.assert_close(stated_confidence(soft, positions, DIGITS, place_values=(1.0, 0.1, 0.01), mask=mask),
                               parts[0] + 0.1 * parts[1] + 0.01 * parts[2])


def test_masked_digits_take_no_part() -> None:
    logits, positions, values, places, mask = _case(4)
    positions = torch.where(mask, positions.clamp_max(2), positions)  # unmasked digits never read position 3
    got = stated_confidence(logits, positions, values, place_values=places, mask=mask)
    scrambled = logits.clone()
    scrambled[:, 3] = torch.randn(5, 9, dtype=torch.float64) * 100
    wild = torch.where(mask, positions, torch.full_like(positions, -7))  # masked entries may hold anything
    out = stated_confidence(scrambled, wild, values, place_values=places, mask=mask)
    torch.testing.assert_close(out, got, equal_nan=True)
    x = logits.clone().requires_grad_(True)
    torch.nan_to_num(stated_confidence(x, wild, values, place_values=places, mask=mask)).sum().backward()
    read = torch.zeros(5, 4, dtype=torch.bool)
    for i, k in mask.nonzero().tolist():
        read[i, positions[i, k]] = True
    assert x.grad[~read].abs().sum() == 0 and x.grad[read].abs().sum() > 0
    assert torch.isnan(got[1])  # a row without an unmasked digit


def test_zero_gradient_outside_confidence_tokens_when_normalized() -> None:
    logits, positions, values, places, mask = _case(5, d=1)
    x = logits.clone().requires_grad_(True)
    torch.nan_to_num(stated_confidence(x, positions, values, mask=mask)).sum().backward()
    assert x.grad[:, :, torch.isnan(values)].abs().sum() == 0


def test_normalize_false_counts_other_tokens_as_zero() -> None:
    values = torch.full((4,), NAN, dtype=torch.float64)
    values[0] = 1.0
    logits = torch.zeros(1, 1, 4, dtype=torch.float64)  # uniform over 4 tokens, one of them worth 1
    pos = torch.zeros(1, 1, dtype=torch.long)
    assert float(stated_confidence(logits, pos, values, normalize=False)) == pytest.approx(0.25)
    assert float(stated_confidence(logits, pos, values)) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 10), st.booleans())
def test_permuting_token_ids_with_their_values_changes_nothing(seed: int, n: int, v: int, normalize: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, v, generator=g, dtype=torch.float64) * 3
    positions = torch.randint(0, 3, (n, 2), generator=g)
    values = torch.rand(v, generator=g, dtype=torch.float64)
    values[torch.rand(v, generator=g) < 0.4] = NAN
    values[0] = 0.5  # at least one confidence token
    perm = torch.randperm(v, generator=g)
    a = stated_confidence(logits, positions, values, place_values=(1.0, 0.1), normalize=normalize)
    b = stated_confidence(logits[:, :, perm], positions, values[perm], place_values=(1.0, 0.1), normalize=normalize)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.data())
def test_all_mass_on_one_value_gives_that_value(seed: int, v: int, data: st.DataObject) -> None:
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(v, generator=g, dtype=torch.float64)
    hit = data.draw(st.integers(0, v - 1))
    logits = torch.randn(3, 2, v, generator=g, dtype=torch.float64)
    logits[:, 1] = float("-inf")
    logits[:, 1, hit] = data.draw(st.floats(-50, 50))
    pos = torch.ones(3, 1, dtype=torch.long)
    out = stated_confidence(logits, pos, values)
    assert torch.equal(out, values[hit].expand(3))
    assert torch.equal(stated_confidence(logits, pos, values, normalize=False), out)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(logits=torch.zeros(2, 3)), ValueError, r"logits must have shape \[\*, \*, \*\], got \(2, 3\)"),
        (dict(logits=torch.zeros(2, 3, 4, dtype=torch.long)), TypeError, "logits must be a floating-point tensor"),
        (dict(logits=[[[0.0]]]), TypeError, "logits must be a torch.Tensor"),
        (dict(positions=torch.zeros(3, 1, dtype=torch.long)), ValueError, r"positions must have shape \[2, \*\], got \(3, 1\)"),
        (dict(positions=torch.zeros(2, 1)), TypeError, "positions must be an integer tensor"),
        (dict(positions=torch.tensor([[0], [3]])), ValueError, r"positions\[1, 0\] = 3 is outside \[0, T=3\)"),
        (dict(token_values=torch.zeros(5)), ValueError, r"token_values must have shape \[4\], got \(5,\)"),
        (dict(token_values=torch.zeros(2, 4)), ValueError, r"token_values must have shape \[1, 4\], got \(2, 4\)"),
        (dict(token_values=torch.zeros(1, 1, 4)), ValueError, r"token_values must have shape \[V=4\] or \[D=1, V=4\]"),
        (dict(token_values=torch.tensor([0.0, float("inf"), NAN, NAN])), ValueError, "got inf"),
        (dict(token_values=torch.full((4,), NAN)), ValueError, "no confidence token .* digit position 0"),
        (dict(token_values=torch.arange(4)), TypeError, "token_values must be a floating-point tensor"),
        (dict(place_values=(1.0, 0.1)), ValueError, r"place_values must have shape \[1\], got \(2,\)"),
        (dict(place_values=(float("nan"),)), ValueError, "place_values must be finite"),
        (dict(place_values=("1",)), TypeError, "place_values must hold numbers"),
        (dict(place_values=1.0), TypeError, "place_values must be a sequence"),
        (dict(mask=torch.tensor([[2], [1]])), ValueError, "mask must hold only 0 and 1"),
        (dict(mask=torch.ones(2, 2, dtype=torch.bool)), ValueError, r"mask must have shape \[2, 1\], got \(2, 2\)"),
    ],
)
def test_errors_name_the_argument(kwargs: dict, error: type, message: str) -> None:
    args = dict(logits=torch.zeros(2, 3, 4), positions=torch.tensor([[0], [2]]), token_values=torch.tensor([0.0, 1.0, NAN, NAN]))
    args.update(kwargs)
    logits, positions, values = args.pop("logits"), args.pop("positions"), args.pop("token_values")
    with pytest.raises(error, match=message):
        stated_confidence(logits, positions, values, **args)


def test_impossible_confidence_and_nan_logits_raise() -> None:
    values = torch.tensor([0.0, 1.0, NAN])
    logits = torch.zeros(1, 2, 3)
    logits[0, 1, :2] = float("-inf")
    with pytest.raises(ValueError, match="every confidence token's logit is -inf"):
        stated_confidence(logits, torch.tensor([[1]]), values)
    assert float(stated_confidence(logits, torch.tensor([[0]]), values)) == pytest.approx(0.5)  # position 0 is fine
    logits[0, 0, 0] = NAN
    with pytest.raises(ValueError, match="must not be NaN"):
        stated_confidence(logits, torch.tensor([[0]]), values)
    # a masked position may hold anything
    assert torch.isnan(stated_confidence(logits, torch.tensor([[0]]), values, mask=torch.tensor([[False]])))

"""``token_stats_from_logits`` against the naive full-softmax path: values, gradients, memory, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from rac_losses.token_stats import TokenStats, default_chunk_size, token_stats_from_logits

LOW_PRECISION = (torch.bfloat16, torch.float16)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_logits(n: int, t: int, v: int, dtype: torch.dtype, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random logits whose values are distinct within each row *in ``dtype``* (so top-k indices, and thus
    top-k gradients, are unambiguous)."""
    g = torch.Generator().manual_seed(seed)
    if dtype in LOW_PRECISION:
        # a permutation of k * 0.125, exactly representable and distinct in bfloat16/float16 (|k| <= 64)
        assert v <= 128
        perm = torch.argsort(torch.rand(n * t, v, generator=g), dim=1).to(torch.float32)
        x = ((perm - v / 2) * 0.125).view(n, t, v)
    else:
        x = torch.randn(n, t, v, generator=g, dtype=torch.float64) * scale
    x = x.to(dtype)
    assert all(row.unique().numel() == v for row in x.reshape(-1, v)) if n * t else True
    return x


def make_tokens(n: int, t: int, v: int, seed: int) -> torch.Tensor:
    return torch.randint(0, v, (n, t), generator=torch.Generator().manual_seed(seed + 1))


def naive(logits: torch.Tensor, tokens: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    lp = torch.log_softmax(logits.to(_compute_dtype(logits.dtype)), dim=-1)
    tok = lp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    ent = -(lp.exp() * lp).sum(-1)
    top = lp.topk(k, dim=-1).values if k else None
    return tok, ent, top


def value_tol(dtype: torch.dtype) -> dict:
    # outputs are computed in float32 (float64 for float64) from the same inputs in both paths
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=2e-5)


def grad_tol(dtype: torch.dtype) -> dict:
    # the float32 gradients are rounded to the logits' dtype in both paths: allow one unit in the last place
    return {
        torch.float64: dict(rtol=1e-10, atol=1e-12),
        torch.float32: dict(rtol=1e-5, atol=1e-6),
        torch.bfloat16: dict(rtol=1.6e-2, atol=1e-4),
        torch.float16: dict(rtol=2e-3, atol=1e-6),
    }[dtype]


def grads(outputs, weights, x):
    loss = sum((o * w).sum() for o, w in zip(outputs, weights) if o is not None and w is not None)
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


def check_against_naive(logits, tokens, k, chunk_size, selections=None):
    """Compare values, and gradients for a random combination of all outputs and each output alone."""
    dtype = logits.dtype
    x = logits.detach().clone().requires_grad_(True)
    y = logits.detach().clone().requires_grad_(True)
    ours = token_stats_from_logits(x, tokens, topk=k, chunk_size=chunk_size)
    ref = naive(y, tokens, k)
    cd = _compute_dtype(dtype)
    n, t, _ = logits.shape
    assert isinstance(ours, TokenStats)
    assert ours.logprobs.shape == (n, t) and ours.entropy.shape == (n, t)
    assert ours.logprobs.dtype == cd and ours.entropy.dtype == cd
    if k:
        assert ours.topk_logprobs.shape == (n, t, k) and ours.topk_logprobs.dtype == cd
        assert bool((ours.topk_logprobs[..., 1:] <= ours.topk_logprobs[..., :-1]).all())
    else:
        assert ours.topk_logprobs is None
    for a, b in zip(ours, ref):
        if b is not None:
            torch.testing.assert_close(a, b, **value_tol(dtype))
    g = torch.Generator().manual_seed(123)
    weights = [torch.randn(r.shape, generator=g, dtype=cd) if r is not None else None for r in ref]
    if selections is None:
        selections = [(0, 1, 2), (0,), (1,), (2,)] if k else [(0, 1), (0,), (1,)]
    for sel in selections:
        w = [weights[i] if i in sel else None for i in range(3)]
        g_ours = grads(ours, w, x)
        g_ref = grads(ref, w, y)
        assert g_ours.dtype == dtype and g_ours.shape == logits.shape
        torch.testing.assert_close(g_ours, g_ref, **grad_tol(dtype), msg=lambda m: f"outputs {sel}: {m}")


# --------------------------------------------------------------------------------------------- values/grads


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("chunk_size", [1, 3, 5, 14, 100, None])
def test_matches_naive_all_dtypes_and_chunks(dtype, chunk_size):
    # N*T = 14 rows: 3 and 5 do not divide it, 14 is exactly one chunk, 100 is larger than N*T
    n, t, v = 2, 7, 37
    logits = make_logits(n, t, v, dtype, seed=1)
    check_against_naive(logits, make_tokens(n, t, v, 1), k=4, chunk_size=chunk_size)


@pytest.mark.parametrize("k", [0, 1, 5, 23])
def test_matches_naive_every_topk(k):
    n, t, v = 3, 4, 23
    logits = make_logits(n, t, v, torch.float32, seed=2)
    check_against_naive(logits, make_tokens(n, t, v, 2), k=k, chunk_size=5)


def test_large_and_shifted_logits_are_stable():
    n, t, v = 2, 5, 50
    logits = make_logits(n, t, v, torch.float32, seed=3, scale=40.0) + 500.0
    check_against_naive(logits, make_tokens(n, t, v, 3), k=3, chunk_size=4)
    ours = token_stats_from_logits(logits, make_tokens(n, t, v, 3))
    assert bool((ours.entropy >= -1e-5).all()) and bool((ours.entropy <= torch.log(torch.tensor(50.0)) + 1e-5).all())


def test_single_token_vocabulary():
    logits = torch.randn(2, 3, 1, requires_grad=True)
    st_ = token_stats_from_logits(logits, torch.zeros(2, 3, dtype=torch.long), topk=1)
    assert bool((st_.logprobs == 0).all()) and bool((st_.entropy.abs() < 1e-7).all())
    (st_.logprobs.sum() + st_.entropy.sum() + st_.topk_logprobs.sum()).backward()
    assert bool((logits.grad == 0).all())


def test_uniform_logits_give_log_v_entropy():
    v = 1000
    st_ = token_stats_from_logits(torch.zeros(2, 2, v, dtype=torch.bfloat16), torch.zeros(2, 2, dtype=torch.long))
    torch.testing.assert_close(st_.entropy, torch.full((2, 2), float(torch.log(torch.tensor(float(v))))))
    torch.testing.assert_close(st_.logprobs, torch.full((2, 2), -float(torch.log(torch.tensor(float(v))))))


@pytest.mark.parametrize("token_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_any_integer_token_dtype(token_dtype):
    n, t, v = 2, 3, 11
    logits = make_logits(n, t, v, torch.float32, seed=4)
    tokens = make_tokens(n, t, v, 4)
    check_against_naive(logits, tokens.to(token_dtype), k=2, chunk_size=4, selections=[(0, 1, 2)])


def test_non_contiguous_logits_slice():
    # the usual next-token slice logits[:, :-1] cannot be viewed as [N*T, V]; it is read without a copy
    n, t, v = 3, 6, 13
    full = make_logits(n, t + 1, v, torch.float32, seed=5)
    sliced = full[:, :-1]
    assert not sliced.is_contiguous()
    tokens = make_tokens(n, t, v, 5)
    for chunk in (1, 4, 5, 7, 100):
        x = full.clone().requires_grad_(True)
        ours = token_stats_from_logits(x[:, :-1], tokens, topk=3, chunk_size=chunk)
        ref = naive(sliced, tokens, 3)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b)
        y = full.clone().requires_grad_(True)
        ref_g = naive(y[:, :-1], tokens, 3)
        w = [torch.randn_like(r) for r in ref_g]
        torch.testing.assert_close(grads(ours, w, x), grads(ref_g, w, y), rtol=1e-5, atol=1e-6)
    # a permuted (non-row-major) layout
    perm = make_logits(t, n, v, torch.float32, seed=6).transpose(0, 1)
    check_against_naive(perm, tokens, k=2, chunk_size=4, selections=[(0, 1, 2)])


def test_gradcheck_float64():
    n, t, v = 2, 3, 5
    logits = make_logits(n, t, v, torch.float64, seed=7).requires_grad_(True)
    tokens = make_tokens(n, t, v, 7)

    def fn(x):
        return tuple(token_stats_from_logits(x, tokens, topk=2, chunk_size=4))

    assert torch.autograd.gradcheck(fn, (logits,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(lambda x: token_stats_from_logits(x, tokens, chunk_size=1).entropy, (logits,))


def test_no_grad_and_no_requires_grad():
    n, t, v = 2, 4, 17
    logits = make_logits(n, t, v, torch.bfloat16, seed=8)
    tokens = make_tokens(n, t, v, 8)
    ref = naive(logits, tokens, 3)
    for ctx_grad in (False, True):
        with torch.set_grad_enabled(ctx_grad):
            for x in (logits, logits.clone().requires_grad_(True)):
                ours = token_stats_from_logits(x, tokens, topk=3, chunk_size=3)
                expect_grad = ctx_grad and x.requires_grad
                for a, b in zip(ours, ref):
                    assert a.requires_grad == expect_grad
                    torch.testing.assert_close(a.detach(), b)


def test_only_logits_saved_for_backward_no_full_float32_copy():
    """Tensors saved for backward: the logits themselves (same storage) plus per-row data only."""
    n, t, v = 4, 8, 64
    logits = make_logits(n, t, v, torch.bfloat16, seed=9).requires_grad_(True)
    saved: list[torch.Tensor] = []

    def pack(x):
        saved.append(x)
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = token_stats_from_logits(logits, make_tokens(n, t, v, 9), topk=2, chunk_size=5)
    big = [s for s in saved if s.numel() >= n * t * v]
    assert len(big) == 1 and big[0].data_ptr() == logits.data_ptr() and big[0].dtype == torch.bfloat16
    assert all(s.numel() <= n * t * 2 for s in saved if s is not big[0])
    (out.logprobs.sum() + out.entropy.sum() + out.topk_logprobs.sum()).backward()
    assert logits.grad.dtype == torch.bfloat16


class _LargestTensor(TorchDispatchMode):
    """Records the largest storage (bytes) of any tensor produced by an aten op, forward and backward."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in torch.utils._pytree.tree_leaves(out):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.untyped_storage().nbytes())
        return out


def test_no_op_produces_a_full_float32_tensor():
    """No aten op in forward or backward produces a tensor as large as a float32 [N, T, V] copy; the
    largest are the bfloat16 logits / gradient (half that). The same probe flags the naive path."""
    n, t, v = 8, 64, 512
    full_f32 = n * t * v * 4
    logits = torch.randn(n, t, v, generator=torch.Generator().manual_seed(10)).to(torch.bfloat16).requires_grad_(True)
    tokens = make_tokens(n, t, v, 10)
    with _LargestTensor() as probe:
        out = token_stats_from_logits(logits, tokens, topk=2, chunk_size=16)
        (g,) = torch.autograd.grad(out.logprobs.sum() + out.entropy.sum() + out.topk_logprobs.sum(), logits)
    assert g.dtype == torch.bfloat16
    assert full_f32 // 2 <= probe.largest < full_f32
    with _LargestTensor() as naive_probe:
        ref = naive(logits, tokens, 2)
        torch.autograd.grad(ref[0].sum() + ref[1].sum() + ref[2].sum(), logits)
    assert naive_probe.largest >= full_f32


def test_empty_batch():
    logits = torch.randn(0, 3, 7, requires_grad=True)
    out = token_stats_from_logits(logits, torch.zeros(0, 3, dtype=torch.long), topk=2)
    assert out.logprobs.shape == (0, 3) and out.entropy.shape == (0, 3) and out.topk_logprobs.shape == (0, 3, 2)
    (g,) = torch.autograd.grad(out.logprobs.sum() + out.entropy.sum(), logits, allow_unused=True)
    assert g is None or g.shape == logits.shape


def test_default_chunk_size():
    assert default_chunk_size(32000) * 32000 <= 2**22
    assert default_chunk_size(10**9) == 1
    assert default_chunk_size(1) >= 1


@given(
    n=st.integers(1, 3),
    t=st.integers(1, 6),
    v=st.integers(1, 40),
    k_frac=st.floats(0, 1),
    chunk=st.integers(1, 25),
    scale=st.sampled_from([0.01, 1.0, 10.0, 60.0]),
    offset=st.floats(-200, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis_matches_naive(n, t, v, k_frac, chunk, scale, offset, seed):
    k = int(round(k_frac * v))
    logits = make_logits(n, t, v, torch.float64, seed=seed, scale=scale) + offset
    check_against_naive(logits, make_tokens(n, t, v, seed), k=k, chunk_size=chunk, selections=[(0, 1, 2)])


# --------------------------------------------------------------------------------------------------- errors


def _ok():
    return torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)


@pytest.mark.parametrize(
    "logits, tokens, kwargs, exc, words",
    [
        (torch.randn(2, 5), torch.zeros(2, dtype=torch.long), {}, ValueError, ["logits", "[*, *, *]", "(2, 5)"]),
        (torch.randn(1, 2, 3, 5), torch.zeros(1, 2, dtype=torch.long), {}, ValueError, ["logits", "(1, 2, 3, 5)"]),
        (torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(2, 3).long(), {}, TypeError, ["logits", "float"]),
        ([[[0.0]]], torch.zeros(1, 1, dtype=torch.long), {}, TypeError, ["logits", "Tensor"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), {}, ValueError, ["tokens", "[2, 3]", "(2, 4)"]),
        (torch.randn(2, 3, 5), torch.zeros(6, dtype=torch.long), {}, ValueError, ["tokens", "[2, 3]", "(6,)"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3), {}, TypeError, ["tokens", "integer", "float32"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool), {}, TypeError, ["tokens", "integer"]),
        (torch.randn(2, 3, 5), torch.full((2, 3), 5), {}, ValueError, ["tokens", "[0, 5)", "got 5"]),
        (torch.randn(2, 3, 5), torch.full((2, 3), -1), {}, ValueError, ["tokens", "[0, 5)", "got -1"]),
        (torch.randn(2, 3, 5), torch.full((2, 3), -101), {}, ValueError, ["tokens", "[0, 5)", "got -101"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"topk": -1}, ValueError, ["topk", "[0, 5]", "-1"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"topk": 6}, ValueError, ["topk", "[0, 5]", "6"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"topk": 1.0}, TypeError, ["topk", "int"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"chunk_size": 0}, ValueError, ["chunk_size", "0"]),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"chunk_size": 2.0}, TypeError, ["chunk_size"]),
        (torch.randn(2, 3, 0), torch.zeros(2, 3, dtype=torch.long), {}, ValueError, ["logits", "V", "(2, 3, 0)"]),
        (
            torch.randn(2, 3, 5),
            torch.zeros(2, 3, dtype=torch.long, device="meta"),
            {},
            ValueError,
            ["tokens", "meta", "logits", "cpu"],
        ),
    ],
)
def test_bad_input_raises(logits, tokens, kwargs, exc, words):
    with pytest.raises(exc) as info:
        token_stats_from_logits(logits, tokens, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_nan_and_positive_inf_logits_raise(bad, dtype, requires_grad):
    logits, tokens = _ok()
    logits[1, 2, 3] = bad
    logits = logits.to(dtype).requires_grad_(requires_grad)
    with pytest.raises(ValueError, match=r"logits must be free of NaN and \+inf.*\(n, t\) = \(1, 2\)"):
        token_stats_from_logits(logits, tokens, topk=2, chunk_size=2)


# --- masked vocabularies (-inf logits) and ignored positions (ignore_index) -----------------------------


def masked_reference(logits: torch.Tensor, tokens: torch.Tensor, k: int):
    """Slow and obvious: per position, the softmax over the finite logits only; the outputs and the
    gradient of ``sum(w * outputs)`` by autograd of that sub-problem (masked logits get none)."""
    n, t, v = logits.shape
    tok = torch.zeros(n, t, dtype=torch.float64)
    ent = torch.zeros(n, t, dtype=torch.float64)
    top = torch.zeros(n, t, k, dtype=torch.float64)
    for i in range(n):
        for j in range(t):
            keep = torch.isfinite(logits[i, j]).nonzero().view(-1)
            lp = torch.log_softmax(logits[i, j, keep].double(), -1)
            tok[i, j] = lp[(keep == tokens[i, j]).nonzero().view(-1)[0]]
            ent[i, j] = -(lp.exp() * lp).sum()
            top[i, j] = lp.topk(k).values if k else top[i, j]
    return tok, ent, top


@given(st.integers(1, 3), st.integers(1, 4), st.integers(2, 9), st.integers(0, 2), st.integers(1, 5), st.data())
def test_minus_inf_logits_are_a_masked_vocabulary(n, t, v, k, chunk, data):
    seed = data.draw(st.integers(0, 10_000))
    logits = make_logits(n, t, v, torch.float64, seed)
    tokens = make_tokens(n, t, v, seed)
    masked = torch.rand(n, t, v, generator=torch.Generator().manual_seed(seed + 2)) < 0.5
    masked.scatter_(2, tokens.unsqueeze(-1), False)  # the sampled token stays possible
    k = min(k, int((~masked).sum(-1).min()))  # top-k within the allowed vocabulary
    logits = logits.masked_fill(masked, float("-inf"))
    want_tok, want_ent, want_top = masked_reference(logits, tokens, k)
    x = logits.clone().requires_grad_(True)
    out = token_stats_from_logits(x, tokens, topk=k, chunk_size=chunk)
    torch.testing.assert_close(out.logprobs, want_tok, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.entropy, want_ent, rtol=1e-10, atol=1e-10)
    if k:
        torch.testing.assert_close(out.topk_logprobs, want_top, rtol=1e-10, atol=1e-10)
    # gradient against autograd of the same loss through log_softmax with -inf replaced by a finite floor
    # far below the rest (exp underflows to exactly 0 there, so values and gradients are the same problem)
    y = logits.masked_fill(masked, -1e4).requires_grad_(True)
    w = [torch.randn(n, t, dtype=torch.float64), torch.randn(n, t, dtype=torch.float64), torch.randn(n, t, k, dtype=torch.float64)]
    lp = torch.log_softmax(y, -1)
    ref = (w[0] * lp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)).sum() + (w[1] * -(lp.exp() * lp).sum(-1)).sum()
    ours = (w[0] * out.logprobs).sum() + (w[1] * out.entropy).sum()
    if k:
        ref = ref + (w[2] * lp.topk(k, -1).values).sum()
        ours = ours + (w[2] * out.topk_logprobs).sum()
    (g_ref,) = torch.autograd.grad(ref, y)
    (g_ours,) = torch.autograd.grad(ours, x)
    assert bool(torch.isfinite(g_ours).all())
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)
    assert bool((g_ours[masked] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_minus_inf_logits_in_low_precision_give_finite_values_and_gradients(dtype):
    logits = make_logits(2, 3, 16, dtype, 0)
    tokens = make_tokens(2, 3, 16, 0)
    masked = torch.arange(16).expand(2, 3, 16) >= 8
    masked = masked & (torch.arange(16) != tokens.unsqueeze(-1))
    x = logits.masked_fill(masked, float("-inf")).requires_grad_(True)
    out = token_stats_from_logits(x, tokens, topk=3, chunk_size=4)
    (out.logprobs.sum() + out.entropy.sum() + out.topk_logprobs.sum()).backward()
    assert bool(torch.isfinite(out.entropy).all()) and bool(torch.isfinite(x.grad).all())
    want = masked_reference(logits.float().masked_fill(masked, float("-inf")), tokens, 3)
    torch.testing.assert_close(out.entropy.double(), want[1], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_ignored_positions_are_zero_and_take_no_gradient(requires_grad):
    logits = make_logits(3, 5, 7, torch.float64, 3)
    tokens = make_tokens(3, 5, 7, 3)
    ignored = torch.tensor([[1, 0, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    labels = tokens.masked_fill(ignored, -100)
    garbage = logits.clone()
    garbage[0, 0] = float("nan")
    garbage[0, 4] = float("-inf")  # a padding position: every logit masked
    garbage[2, 1, 2] = float("inf")
    x = garbage.clone().requires_grad_(requires_grad)
    out = token_stats_from_logits(x, labels, topk=2, chunk_size=3)
    for got in out:
        assert bool((got[ignored] == 0).all())
    full = token_stats_from_logits(logits, tokens, topk=2, chunk_size=3)
    for got, want in zip(out, full):
        torch.testing.assert_close(got[~ignored], want[~ignored], rtol=0, atol=0)
    if requires_grad:
        (out.logprobs.sum() + out.entropy.sum() + out.topk_logprobs.sum()).backward()
        assert bool((x.grad[ignored] == 0).all()) and bool(torch.isfinite(x.grad).all())
        y = logits.clone().requires_grad_(True)
        keep = (~ignored).double()
        ref = token_stats_from_logits(y, tokens, topk=2, chunk_size=3)
        (ref.logprobs * keep).sum().add((ref.entropy * keep).sum()).add((ref.topk_logprobs * keep.unsqueeze(-1)).sum()).backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "change, kwargs, words",
    [
        (lambda lg, tk: lg.__setitem__((0, 1), float("-inf")), {}, ["finite maximum", "(0, 1)"]),
        (lambda lg, tk: lg.__setitem__((1, 2, int(tk[1, 2])), float("-inf")), {}, ["(1, 2)", "logit -inf", "probability 0"]),
        (lambda lg, tk: tk.__setitem__((0, 0), -1), {}, ["tokens", "ignore_index=-100", "got -1"]),
        (lambda lg, tk: None, {"ignore_index": 3}, ["ignore_index", "outside", "[0, 5)", "got 3"]),
        (lambda lg, tk: None, {"ignore_index": 1.5}, ["ignore_index", "int"]),
    ],
)
def test_masking_errors(change, kwargs, words):
    logits, tokens = torch.randn(2, 3, 5), torch.tensor([[0, 1, 2], [3, 4, 0]])
    change(logits, tokens)
    with pytest.raises((ValueError, TypeError)) as info:
        token_stats_from_logits(logits, tokens, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_a_custom_ignore_index():
    logits, tokens = torch.randn(1, 3, 5), torch.tensor([[0, -1, 2]])
    out = token_stats_from_logits(logits, tokens, ignore_index=-1)
    assert float(out.logprobs[0, 1]) == 0.0 and float(out.entropy[0, 1]) == 0.0
    with pytest.raises(ValueError, match="ignore_index=-1, got -100"):
        token_stats_from_logits(logits, torch.tensor([[0, -100, 2]]), ignore_index=-1)

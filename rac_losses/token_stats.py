"""Per-token log-probabilities, entropies and top-k log-probabilities from logits, in bounded memory.

:func:`token_stats_from_logits` turns policy logits ``[N, T, V]`` into the per-token statistics that
:func:`rac_losses.sequence_confidence` consumes, without ever materialising a float32 copy of the whole
``[N, T, V]`` tensor, neither in forward nor in backward.

The flattened ``[N*T, V]`` rows are processed in chunks of ``chunk_size`` rows. Forward casts one chunk
into a reusable float32 buffer and computes, per row, the log-sum-exp, the token's log-probability, the
entropy and (optionally) the top-k log-probabilities. A custom :class:`torch.autograd.Function` saves only
the logits themselves (a reference, not a copy), the token ids and the small per-row results (row max,
log of the partition sum, entropy, top-k indices); backward recomputes the softmax chunk by chunk and
writes the gradient chunk by chunk into a single gradient tensor of the logits' dtype, using

* ``d logp[tok] / dx = onehot(tok) - p``
* ``d H / dx = -p * (log p + H)``
* ``d topk_i / dx = onehot(idx_i) - p``

so the extra memory beyond the gradient itself (which any backward must produce) is two float32 chunk
buffers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_float_tensor, check_index_tensor, check_same_device

__all__ = ["TokenStats", "token_stats_from_logits", "default_chunk_size"]

# Target number of elements of one float32 chunk buffer: 2**21 elements = 8 MiB, so the two buffers used
# (16 MiB) plus the chunk of input stay within a typical 32 MiB L3 cache. Measured on a 2-core EPYC CPU
# (N*T = 4096, V = 32000 and 152064, bfloat16, forward+backward): 2**21 to 2**24 elements run within
# measurement noise of each other (~0.26 s for 4096 x 32000 on an idle machine); 2**20 and below were
# as fast when idle but up to 10x slower when another process competed for a core (many small parallel
# regions), and larger chunks only add memory.
_CHUNK_ELEMENTS = 2**21
# Shifted logits (x - max <= 0) below this have exp(x) == 0 exactly in float32 and float64 (they underflow
# below about -104 and -745), so flooring them changes no probability while keeping 0 * x finite.
_FLOOR = -1.0e4


class TokenStats(NamedTuple):
    """Per-token statistics returned by :func:`token_stats_from_logits`.

    Attributes:
        logprobs: ``[N, T]`` float32, ``log pi(tokens[n, t])`` under the softmax of ``logits[n, t]``.
        entropy: ``[N, T]`` float32, entropy (nats) of the token distribution at ``(n, t)``.
        topk_logprobs: ``[N, T, k]`` float32, the ``k`` largest log-probabilities at ``(n, t)`` in
            descending order, or ``None`` when ``topk == 0``.

    (Float64 logits give float64 statistics; every other float dtype gives float32.)
    """

    logprobs: Tensor
    entropy: Tensor
    topk_logprobs: Tensor | None


def default_chunk_size(vocab_size: int) -> int:
    """Default number of rows per chunk for a vocabulary of ``vocab_size``: about 2**21 elements."""
    return max(1, _CHUNK_ELEMENTS // max(1, int(vocab_size)))


class _Rows:
    """Reads rows ``[s, e)`` of the flattened ``[N*T, V]`` view of ``logits`` into a buffer, without copying
    ``logits`` when it cannot be viewed as 2-D (e.g. the common ``logits[:, :-1]`` slice)."""

    def __init__(self, logits: Tensor) -> None:
        n, t, v = logits.shape
        self.logits = logits
        self.t = t
        try:
            self.flat: Tensor | None = logits.view(n * t, v)
        except RuntimeError:
            self.flat = None

    def load(self, buf: Tensor, s: int, e: int, shift: Tensor | None = None) -> None:
        """``buf[:] = rows[s:e]`` (cast to ``buf``'s dtype), minus the per-row ``shift[:, None]`` if given."""
        if self.flat is not None:
            self._put(buf, self.flat[s:e], shift)
            return
        t = self.t
        pos = s
        while pos < e:
            n, t0 = divmod(pos, t)
            t1 = min(t, t0 + (e - pos))
            a, b = pos - s, pos - s + (t1 - t0)
            self._put(buf[a:b], self.logits[n, t0:t1], None if shift is None else shift[a:b])
            pos += t1 - t0

    @staticmethod
    def _put(dst: Tensor, src: Tensor, shift: Tensor | None) -> None:
        dst.copy_(src)
        if shift is not None:
            # a cast copy then an in-place subtract is faster on CPU than one mixed-dtype subtract
            dst.sub_(shift.unsqueeze(1))


def _forward(
    logits: Tensor, tokens: Tensor, k: int, chunk: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Chunked forward. ``tokens`` is int64 ``[N*T]``. Returns flat ``[R]``/``[R, k]`` tensors:
    (token log-probs, entropy, top-k values, top-k indices, row max ``m``, ``log Z``, floored) where
    ``logsumexp = m + log Z`` (the two halves are kept apart so backward recomputes ``x - m`` exactly) and
    ``floored`` marks the rows of chunks that hold ``-inf`` logits (masked vocabulary), whose shifted
    logits were floored at ``_FLOOR`` so that ``0 * log 0`` counts as 0."""
    n, t, v = logits.shape
    rows = n * t
    cd = working_dtype(logits)
    dev = logits.device
    tok_lp = torch.empty(rows, dtype=cd, device=dev)
    ent = torch.empty(rows, dtype=cd, device=dev)
    row_max = torch.empty(rows, dtype=cd, device=dev)
    log_zs = torch.empty(rows, dtype=cd, device=dev)
    top_v = torch.empty(rows, k, dtype=cd, device=dev)
    top_i = torch.empty(rows, k, dtype=torch.long, device=dev)
    floored = torch.zeros(rows, dtype=torch.bool, device=dev)
    if rows == 0:
        return tok_lp, ent, top_v, top_i, row_max, log_zs, floored
    c_max = min(chunk, rows)
    xbuf = torch.empty(c_max, v, dtype=cd, device=dev)
    ebuf = torch.empty(c_max, v, dtype=cd, device=dev)
    reader = _Rows(logits)
    for s in range(0, rows, c_max):
        e = min(rows, s + c_max)
        x = xbuf[: e - s]
        ex = ebuf[: e - s]
        reader.load(x, s, e)
        m = x.amax(dim=1, keepdim=True)
        x.sub_(m)  # x - max  (<= 0); NaN/inf logits make the entropy NaN (checked by the caller)
        torch.exp(x, out=ex)
        z = ex.sum(dim=1)  # sum exp(x - max) in [1, V]
        log_z = torch.log(z)
        row_max[s:e] = m.view(-1)
        log_zs[s:e] = log_z
        tok_lp[s:e] = x.gather(1, tokens[s:e].unsqueeze(1)).view(-1) - log_z
        if k:
            vals, idx = torch.topk(x, k, dim=1, largest=True, sorted=True)
            top_v[s:e] = vals - log_z.unsqueeze(1)
            top_i[s:e] = idx
        # H = log Z - sum(e * (x - m)) / Z: both terms are >= 0, so no cancellation. (An elementwise
        # product then a sum, not a batched matmul: faster on CPU, and 0 * -inf = NaN is guaranteed.)
        h = log_z - x.mul_(ex).sum(dim=1) / z
        if bool((torch.isnan(h) & torch.isfinite(m.view(-1))).any()):
            # -inf logits (masked vocabulary) made 0 * -inf: floor the shifted logits where exp is already
            # exactly 0, and recompute (exact; only chunks that need it pay)
            reader.load(x, s, e, shift=m.view(-1))
            h = log_z - x.clamp_min_(_FLOOR).mul_(ex).sum(dim=1) / z
            floored[s:e] = True
        ent[s:e] = h
    return tok_lp, ent, top_v, top_i, row_max, log_zs, floored


def _backward(
    logits: Tensor,
    tokens: Tensor,
    row_max: Tensor,
    log_z: Tensor,
    ent: Tensor,
    top_i: Tensor,
    floored: Tensor,
    ignored: Tensor,
    g_tok: Tensor | None,
    g_ent: Tensor | None,
    g_top: Tensor | None,
    chunk: int,
) -> Tensor:
    """Chunked backward: the gradient w.r.t. ``logits`` (contiguous, logits' dtype).

    With ``y = x - m`` (row max), ``e = exp(y)``, ``Z = sum e``, ``p = e / Z``, ``log p = y - log Z`` and
    ``c = g_tok + sum_i g_top_i``::

        grad = onehot terms - p * (c + g_H * (log p + H))
             = onehot terms + e * (a * y + b),   a = -g_H / Z,   b = (g_H * (log Z - H) - c) / Z

    so each chunk costs: load, shift, exp, a multiply and an add (row constants), one multiply, the scatters.
    Chunks the forward floored (``-inf`` logits) are floored again; ``ignored`` rows get a zero gradient.
    """
    n, t, v = logits.shape
    rows = n * t
    cd = row_max.dtype
    dev = logits.device
    grad = torch.empty((n, t, v), dtype=logits.dtype, device=dev)
    if rows == 0:
        return grad
    grad_flat = grad.view(rows, v)
    direct = logits.dtype == cd  # compute straight into `grad`, no second buffer
    c_max = min(chunk, rows)
    xbuf = torch.empty(c_max, v, dtype=cd, device=dev)
    pbuf = None if direct else torch.empty(c_max, v, dtype=cd, device=dev)
    reader = _Rows(logits)
    inv_z = torch.exp(-log_z)
    coef = torch.zeros(rows, dtype=cd, device=dev)
    if g_tok is not None:
        coef = coef + g_tok
    if g_top is not None:
        coef = coef + g_top.sum(dim=1)
    if g_ent is not None:
        a_all = -g_ent * inv_z
        b_all = (g_ent * (log_z - ent) - coef) * inv_z
    else:
        b_all = -coef * inv_z
    for s in range(0, rows, c_max):
        e = min(rows, s + c_max)
        y = xbuf[: e - s]
        p = grad_flat[s:e] if pbuf is None else pbuf[: e - s]
        reader.load(y, s, e, shift=row_max[s:e])  # y = x - m
        if bool(floored[s:e].any()):
            y.clamp_min_(_FLOOR)
        torch.exp(y, out=p)  # e = exp(y) = p * Z
        if g_ent is not None:
            y.mul_(a_all[s:e].unsqueeze(1)).add_(b_all[s:e].unsqueeze(1))  # faster than addcmul on CPU
            p.mul_(y)
        else:
            p.mul_(b_all[s:e].unsqueeze(1))
        if g_tok is not None:
            p.scatter_add_(1, tokens[s:e].unsqueeze(1), g_tok[s:e].unsqueeze(1))
        if g_top is not None and top_i.shape[1]:
            p.scatter_add_(1, top_i[s:e], g_top[s:e])
        if pbuf is not None:
            grad_flat[s:e].copy_(p)
    if bool(ignored.any()):
        grad_flat[ignored] = 0  # constant outputs; their logits may hold anything
    return grad


def _zero_ignored(ignored: Tensor, *outputs: Tensor) -> None:
    """Set the ``ignored`` rows of every flat output to 0, in place."""
    if bool(ignored.any()):
        for out in outputs:
            out[ignored] = 0


class _TokenStatsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, ignored: Tensor, k: int, chunk: int):  # type: ignore[override]
        tok_lp, ent, top_v, top_i, row_max, log_z, floored = _forward(logits, tokens, k, chunk)
        _zero_ignored(ignored, tok_lp, ent, top_v)
        ctx.mark_non_differentiable(row_max)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(logits, tokens, row_max, log_z, ent, top_i, floored, ignored)
        ctx.chunk = chunk
        return tok_lp, ent, top_v, row_max

    @staticmethod
    @once_differentiable
    def backward(ctx, g_tok, g_ent, g_top, _g_max):  # type: ignore[override]
        if not ctx.needs_input_grad[0] or (g_tok is None and g_ent is None and g_top is None):
            return None, None, None, None, None
        logits, tokens, row_max, log_z, ent, top_i, floored, ignored = ctx.saved_tensors
        grad = _backward(
            logits, tokens, row_max, log_z, ent, top_i, floored, ignored, g_tok, g_ent, g_top, ctx.chunk
        )
        return grad, None, None, None, None


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def token_stats_from_logits(
    logits: Tensor, tokens: Tensor, *, topk: int = 0, chunk_size: int | None = None, ignore_index: int = -100
) -> TokenStats:
    """Token log-probabilities, entropies and top-k log-probabilities from logits, in chunks.

    Equivalent to ``logp = torch.log_softmax(logits.float(), -1)``; ``logp.gather(-1, tokens[..., None])``;
    ``-(logp.exp() * logp).sum(-1)``; ``logp.topk(topk, -1).values``, differentiable w.r.t. ``logits``
    through all three outputs, but with peak extra memory bounded by a chunk of ``chunk_size`` rows
    (two float32 ``[chunk_size, V]`` buffers) in forward and backward, plus the gradient itself in
    backward. Only ``logits`` (by reference), ``tokens`` and per-row results are saved for backward.

    Vocabulary masking and ignored positions, as trainers use them:

    - ``-inf`` logits (a masked vocabulary) have probability 0 and add ``0 * log 0 = 0`` to the entropy;
      the sampled token itself must have a finite logit.
    - Positions whose token is ``ignore_index`` (``-100``, as in :func:`torch.nn.functional.cross_entropy`)
      are ignored: their log-prob, entropy and top-k are 0, their logits may hold anything (even NaN or
      all ``-inf``) and get a zero gradient. Leave them out of the response mask.

    Args:
        logits: ``[N, T, V]`` floating-point tensor (float32, float16, bfloat16 or float64), without NaN or
            ``+inf``, and with a finite maximum at every position that is not ignored. It need not be
            contiguous (e.g. ``logits[:, :-1]`` is read without a copy).
        tokens: ``[N, T]`` integer tensor of token ids in ``[0, V)`` or ``ignore_index``, on the same
            device as ``logits``.
        topk: number ``k`` of largest log-probabilities to return per position, ``0 <= k <= V``
            (``0``: ``topk_logprobs`` is ``None``).
        chunk_size: rows of the flattened ``[N*T, V]`` logits processed at a time (``>= 1``); default
            :func:`default_chunk_size` ``(V)``, about ``2**21 / V`` rows.
        ignore_index: the token id that marks an ignored position (must lie outside ``[0, V)``).

    Returns:
        :class:`TokenStats` with ``logprobs [N, T]``, ``entropy [N, T]`` and ``topk_logprobs [N, T, k]``
        (descending) or ``None``; float32 for float32/float16/bfloat16 logits (computed in float32),
        float64 for float64 logits. Gradients flow back to ``logits`` in the logits' dtype. Works under
        :func:`torch.no_grad` and when ``logits`` does not require grad (no graph is built then).

    Raises:
        TypeError: ``logits`` not a floating-point tensor; ``tokens`` not an integer tensor; ``topk`` or
            ``chunk_size`` not an int.
        ValueError: ``logits`` not 3-D or with ``V == 0``; ``tokens`` shape not ``logits.shape[:2]``;
            token ids outside ``[0, V)`` other than ``ignore_index``; ``ignore_index`` inside ``[0, V)``;
            ``topk`` outside ``[0, V]``; ``chunk_size < 1``; inputs on different devices; at a position
            that is not ignored: NaN or ``+inf`` logits, every logit ``-inf``, or a sampled token whose
            logit is ``-inf`` (probability 0).
    """
    logits = check_float_tensor(logits, "logits", (None, None, None))
    n, t, v = logits.shape
    tokens = check_index_tensor(tokens, "tokens", (n, t))
    check_same_device([("logits", logits), ("tokens", tokens)])
    topk = _check_int(topk, "topk")
    if v == 0:
        raise ValueError(f"logits must have a non-empty vocabulary dimension V, got shape {tuple(logits.shape)}")
    if not 0 <= topk <= v:
        raise ValueError(f"topk must be in [0, V] = [0, {v}], got {topk}")
    if chunk_size is None:
        chunk = default_chunk_size(v)
    else:
        chunk = _check_int(chunk_size, "chunk_size")
        if chunk < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    ignore_index = _check_int(ignore_index, "ignore_index")
    if 0 <= ignore_index < v:
        raise ValueError(f"ignore_index must lie outside the vocabulary [0, V) = [0, {v}), got {ignore_index}")
    tok = tokens.reshape(n * t).long()
    ignored = tok == ignore_index
    outside = ((tok < 0) | (tok >= v)) & ~ignored
    if bool(outside.any()):
        bad = int(outside.nonzero()[0])
        raise ValueError(
            f"tokens must hold ids in [0, V) = [0, {v}) or ignore_index={ignore_index}, got {int(tok[bad])} "
            f"at index {divmod(bad, t)}"
        )
    tok = torch.where(ignored, tok.new_zeros(()), tok)

    if torch.is_grad_enabled() and logits.requires_grad:
        tok_lp, ent, top_v, row_max = _TokenStatsFn.apply(logits, tok, ignored, topk, chunk)
    else:
        tok_lp, ent, top_v, _, row_max, _, _ = _forward(logits, tok, topk, chunk)
        _zero_ignored(ignored, tok_lp, ent, top_v)

    # NaN or +inf logits make the row max or the entropy non-finite, as does a row of -inf only
    broken = ~(torch.isfinite(row_max) & torch.isfinite(ent)) & ~ignored
    if bool(broken.any()):
        first = divmod(int(broken.nonzero()[0]), t)
        raise ValueError(
            f"logits must be free of NaN and +inf and have a finite maximum, got {int(broken.sum())} bad of "
            f"{n * t} positions of shape {tuple(logits.shape)}, first at (n, t) = {first} (positions whose "
            f"token is ignore_index={ignore_index} may hold anything)"
        )
    impossible = torch.isneginf(tok_lp)
    if bool(impossible.any()):
        first = divmod(int(impossible.nonzero()[0]), t)
        raise ValueError(
            f"the token at (n, t) = {first} has logit -inf (probability 0 under the logits): a sampled token "
            "cannot be masked out of the vocabulary"
        )
    return TokenStats(
        logprobs=tok_lp.view(n, t),
        entropy=ent.view(n, t),
        topk_logprobs=top_v.view(n, t, topk) if topk else None,
    )

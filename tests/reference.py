"""Slow, obviously-correct reference implementations: explicit Python loops over rows and pairs.

Everything here is written for clarity, not speed, and computes in float64.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch


def link(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "logistic":
        # log(1 + exp(-x)) = log(exp(0) + exp(-x)), finite for large |x| and with the true gradient at
        # x = 0 (a clamp + abs form takes a wrong subgradient there)
        return torch.logaddexp(torch.zeros_like(x), -x)
    if name == "hinge":  # max(0, -x), with torch's subgradient 0 at the kink x = 0 (a comparison exactly
        return torch.relu(-x)  # at its margin gets no push), as the package documents
    if name == "squared_hinge":
        return torch.relu(-x) ** 2
    raise ValueError(name)


def _reduce(terms, weights, reduction, anchor):
    total = sum(terms, anchor.sum() * 0.0)
    if reduction == "sum":
        return total
    z = sum(weights)
    return total / z if z > 0 else total


def ranking_loss(c, reward, group, valid=None, *, link_name="logistic", scale=1.0, margin=0.0,
                 pair_weight="uniform", tie_tolerance=0.0, reduction="mean"):
    """Loop over every ordered pair (a, b) of valid rows of the same group with r_a - r_b > tol."""
    n = len(c)
    valid = [True] * n if valid is None else [bool(v) for v in valid]
    rows_of_group = defaultdict(list)
    for row in range(n):
        if valid[row]:
            rows_of_group[int(group[row])].append(row)
    terms, weights = [], []
    for rows in rows_of_group.values():
        for a in rows:
            for b in rows:
                gap = float(reward[a]) - float(reward[b])
                if gap > tie_tolerance:
                    w = 1.0 if pair_weight == "uniform" else gap
                    terms.append(w * link(scale * (c[a] - c[b]) - margin, link_name))
                    weights.append(w)
    return _reduce(terms, weights, reduction, c)


def corruption_loss(c, severity, pair, valid=None, *, link_name="logistic", scale=1.0, margin=0.0,
                    severity_margin=0.0, detach_clean=True, reduction="mean"):
    """Loop over every ordered pair (a, b) of valid rows of the same pair with severity_a < severity_b."""
    n = len(c)
    valid = [True] * n if valid is None else [bool(v) for v in valid]
    terms, weights = [], []
    for a in range(n):
        for b in range(n):
            if a == b or not (valid[a] and valid[b]) or int(pair[a]) != int(pair[b]):
                continue
            sa, sb = float(severity[a]), float(severity[b])
            if sa < sb:
                ca = c[a].detach() if detach_clean else c[a]
                x = scale * (ca - c[b]) - margin - severity_margin * (sb - sa)
                terms.append(link(x, link_name))
                weights.append(1.0)
    return _reduce(terms, weights, reduction, c)


def sequence_confidence(logp, mask, method="mean_logprob", entropy=None, topk=None):
    out = []
    for i in range(logp.shape[0]):
        vals = []
        for t in range(logp.shape[1]):
            if bool(mask[i, t]):
                if method in ("mean_logprob", "prob"):
                    vals.append(logp[i, t].double())
                elif method == "neg_entropy":
                    vals.append(-entropy[i, t].double())
                else:
                    vals.append(-topk[i, t].double().mean())
        mean = sum(vals) / len(vals) if vals else torch.full((), float("nan"), dtype=torch.float64)  # no tokens
        out.append(torch.exp(mean) if method == "prob" else mean)
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def consistency(c, table_pairs):
    """(right - wrong) / count for each row, given its list of (partner, sign) comparisons."""
    out = []
    for i, pairs in enumerate(table_pairs):
        if not pairs:
            out.append(0.0)
            continue
        score = 0.0
        for j, sign in pairs:
            d = float(c[i]) - float(c[j])
            score += sign * (0.0 if d == 0 else math.copysign(1.0, d))
        out.append(score / len(pairs))
    return out


def value_and_grad(fn, confidence, *args, **kwargs):
    """``fn(confidence, ...)`` and its gradient w.r.t. ``confidence`` (zeros when unused)."""
    c = confidence.detach().clone().requires_grad_(True)
    loss = fn(c, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, c, allow_unused=True)
    return loss.detach(), torch.zeros_like(c) if grad is None else grad

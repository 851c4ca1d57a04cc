"""pairwise_corruption_loss: equality with the loop reference, one-sidedness, chains, invariants."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from reference import value_and_grad
from rac_losses import pairwise_corruption_loss
from strategies import batches, random_batch

LINKS = ("logistic", "hinge", "squared_hinge")
OPTIONS = list(itertools.product(LINKS, (True, False), ("mean", "sum")))


@pytest.mark.parametrize("link,detach_clean,reduction", OPTIONS)
@pytest.mark.parametrize("severity_dtype", [torch.int64, torch.float32])
def test_equals_loop_reference(link, detach_clean, reduction, severity_dtype):
    b = random_batch(torch.Generator().manual_seed(3), n=40, n_groups=9)
    severity = b.severity.to(severity_dtype) * (1.5 if severity_dtype.is_floating_point else 1)
    opts = dict(scale=1.3, margin=0.2, severity_margin=0.15, detach_clean=detach_clean, reduction=reduction)
    got = value_and_grad(pairwise_corruption_loss, b.confidence, severity, b.group, valid=b.valid, link=link, **opts)
    want = value_and_grad(reference.corruption_loss, b.confidence, severity, b.group, b.valid, link_name=link, **opts)
    torch.testing.assert_close(got, want)


@given(batches(), st.sampled_from(OPTIONS), st.floats(0, 0.5))
def test_equals_loop_reference_hypothesis(b, options, severity_margin):
    link, detach_clean, reduction = options
    opts = dict(scale=2.0, margin=0.1, severity_margin=severity_margin, detach_clean=detach_clean, reduction=reduction)
    got = value_and_grad(pairwise_corruption_loss, b.confidence, b.severity, b.group, valid=b.valid, link=link, **opts)
    want = value_and_grad(reference.corruption_loss, b.confidence, b.severity, b.group, b.valid, link_name=link, **opts)
    torch.testing.assert_close(got, want)


@given(batches(min_rows=1))
def test_detach_clean_gives_the_clean_row_zero_gradient(b):
    _, grad = value_and_grad(pairwise_corruption_loss, b.confidence, b.severity, b.group, valid=b.valid)
    assert bool((grad[b.severity == 0] == 0).all())
    # and the most corrupted row of each pair is never pushed up
    assert bool((grad >= 0).all())


def test_chain_of_severities_compares_every_ordered_couple():
    c = torch.tensor([0.0, 0.0, 0.0, 0.0], requires_grad=True)
    severity = torch.tensor([0, 1, 3, 5])
    loss = pairwise_corruption_loss(c, severity, torch.zeros(4, dtype=torch.long), reduction="sum", detach_clean=False)
    # 6 ordered couples, each at gap 0: softplus(0) = log 2
    torch.testing.assert_close(loss, torch.tensor(6 * torch.log(torch.tensor(2.0)).item()))
    loss.backward()
    # each row's gradient: (#more corrupted partners) * (-1/2) + (#cleaner partners) * (+1/2)
    torch.testing.assert_close(c.grad, torch.tensor([-1.5, -0.5, 0.5, 1.5]))


def test_severity_margin_grows_with_the_severity_gap():
    c = torch.tensor([1.0, 0.0, 1.0, 0.0])
    pair = torch.tensor([0, 0, 1, 1])
    severity = torch.tensor([0, 1, 0, 4])
    per = lambda sev: pairwise_corruption_loss(  # noqa: E731
        c[:2], torch.tensor([0, sev]), pair[:2], link="hinge", severity_margin=0.5, reduction="sum"
    )
    assert per(1).item() == 0.0  # gap 1 clears margin 0.5
    assert per(4).item() == pytest.approx(1.0)  # needs 2.0, has 1.0
    both = pairwise_corruption_loss(c, severity, pair, link="hinge", severity_margin=0.5, reduction="sum")
    assert both.item() == pytest.approx(1.0)


@given(batches(min_rows=1), st.randoms(use_true_random=False))
def test_permutation_and_relabelling_invariance(b, rnd):
    perm = list(range(len(b.confidence)))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    ids = torch.unique(b.group)
    relabelled = (torch.arange(len(ids)) * 7919 - 3)[torch.searchsorted(ids, b.group)]
    v, g = value_and_grad(pairwise_corruption_loss, b.confidence, b.severity, b.group, valid=b.valid)
    v2, g2 = value_and_grad(pairwise_corruption_loss, b.confidence[p], b.severity[p], relabelled[p], valid=b.valid[p])
    torch.testing.assert_close(v2, v)
    torch.testing.assert_close(g2, g[p])


@given(batches(min_rows=1, conf_bound=1e4), st.sampled_from(["logistic", "hinge"]), st.sampled_from([torch.float16, torch.bfloat16]))
def test_finite_for_half_precision_and_large_confidences(b, link, dtype):
    c = b.confidence.to(dtype).requires_grad_(True)
    loss = pairwise_corruption_loss(c, b.severity, b.group, valid=b.valid, link=link, scale=4.0, severity_margin=0.3)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert bool(torch.isfinite(c.grad).all())


def test_no_twins_gives_zero_and_zero_gradient():
    c = torch.randn(5, requires_grad=True)
    loss = pairwise_corruption_loss(c, torch.zeros(5, dtype=torch.long), torch.arange(5))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(c.grad, torch.zeros(5))


def test_sentinel_pair_of_rows_without_twins_builds_no_wide_table():
    # 4096 clean rows without twins share pair id -1, two rows form a real pair: the table stays 2 wide
    from rac_losses.pairwise import corruption_table

    n = 4098
    pair = torch.full((n,), -1, dtype=torch.long)
    pair[-2:] = 5
    severity = torch.zeros(n)
    severity[-1] = 3.0
    table = corruption_table(severity, pair, torch.ones(n, dtype=torch.bool), severity_margin=0.0, detach_clean=True)
    assert table.partner.shape == (n, 2)
    assert int((table.sign > 0).sum()) == 1 and bool(table.sign[: n - 2].eq(0).all())

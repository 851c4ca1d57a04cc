"""ranking_group_loss: equality with the loop reference, and its invariants."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from reference import value_and_grad
from rac_losses import ranking_group_loss
from strategies import batches, random_batch

LINKS = ("logistic", "hinge", "squared_hinge")
OPTIONS = list(itertools.product(LINKS, ("uniform", "reward_gap"), ("mean", "sum")))


@pytest.mark.parametrize("link,pair_weight,reduction", OPTIONS)
@pytest.mark.parametrize("seed", range(3))
def test_equals_loop_reference(link, pair_weight, reduction, seed):
    b = random_batch(torch.Generator().manual_seed(seed), n=40, n_groups=6)
    opts = dict(scale=1.7, margin=0.3, pair_weight=pair_weight, tie_tolerance=0.2, reduction=reduction)
    got, got_grad = value_and_grad(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid, link=link, **opts)
    want, want_grad = value_and_grad(
        reference.ranking_loss, b.confidence, b.reward, b.group, b.valid, link_name=link, **opts
    )
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


@given(batches(), st.sampled_from(OPTIONS))
def test_equals_loop_reference_hypothesis(b, options):
    link, pair_weight, reduction = options
    opts = dict(scale=2.0, margin=0.1, pair_weight=pair_weight, reduction=reduction)
    got, got_grad = value_and_grad(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid, link=link, **opts)
    want, want_grad = value_and_grad(
        reference.ranking_loss, b.confidence, b.reward, b.group, b.valid, link_name=link, **opts
    )
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


@given(batches(min_rows=1), st.randoms(use_true_random=False))
def test_row_permutation_invariance(b, rnd):
    perm = list(range(len(b.confidence)))
    rnd.shuffle(perm)
    p = torch.tensor(perm)
    v, g = value_and_grad(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid)
    vp, gp = value_and_grad(ranking_group_loss, b.confidence[p], b.reward[p], b.group[p], valid=b.valid[p])
    torch.testing.assert_close(vp, v)
    torch.testing.assert_close(gp, g[p])


@given(batches(min_rows=1), st.integers(-(2**40), 2**40), st.integers(1, 7))
def test_group_relabelling_invariance(b, offset, factor):
    ids = torch.unique(b.group)
    new_ids = torch.randperm(len(ids), generator=torch.Generator().manual_seed(factor)) * 1000 + offset
    relabelled = new_ids[torch.searchsorted(ids, b.group)]
    v, g = value_and_grad(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid)
    v2, g2 = value_and_grad(ranking_group_loss, b.confidence, b.reward, relabelled, valid=b.valid)
    torch.testing.assert_close(v2, v)
    torch.testing.assert_close(g2, g)


@given(batches(min_rows=1), st.lists(st.floats(-50, 50), min_size=5, max_size=5))
def test_per_group_shift_invariance(b, shifts):
    ids = torch.unique(b.group)
    shift = torch.tensor(shifts, dtype=torch.float64)[torch.searchsorted(ids, b.group) % 5]
    v, g = value_and_grad(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid)
    v2, g2 = value_and_grad(ranking_group_loss, b.confidence + shift, b.reward, b.group, valid=b.valid)
    torch.testing.assert_close(v2, v, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(g2, g, atol=1e-9, rtol=1e-7)


@given(batches(max_groups=3), batches(max_groups=3))
def test_disjoint_batches_add_up_under_sum(b1, b2):
    # make the two batches' group ids disjoint
    g2 = b2.group.clone()
    taken = set(b1.group.tolist())
    g2 = torch.tensor([x if x not in taken else x ^ (1 << 63 - 1) for x in g2.tolist()], dtype=torch.int64)
    joint = ranking_group_loss(
        torch.cat([b1.confidence, b2.confidence]), torch.cat([b1.reward, b2.reward]), torch.cat([b1.group, g2]),
        valid=torch.cat([b1.valid, b2.valid]), reduction="sum",
    )
    parts = ranking_group_loss(b1.confidence, b1.reward, b1.group, valid=b1.valid, reduction="sum") + ranking_group_loss(
        b2.confidence, b2.reward, g2, valid=b2.valid, reduction="sum"
    )
    torch.testing.assert_close(joint, parts)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(
    "reward,group,valid",
    [
        ([1.0, 1.0, 1.0], [3, 3, 3], None),  # all tied
        ([0.0, 1.0, 2.0], [1, 2, 3], None),  # singleton groups
        ([0.0, 1.0, 2.0], [1, 1, 1], [True, False, False]),  # one valid row
        ([], [], None),  # empty batch
    ],
)
def test_no_pairs_gives_zero_and_zero_gradient(reward, group, valid, reduction):
    c = torch.randn(len(reward), requires_grad=True)
    loss = ranking_group_loss(
        c, torch.tensor(reward), torch.tensor(group, dtype=torch.long),
        valid=None if valid is None else torch.tensor(valid), reduction=reduction,
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(c.grad, torch.zeros_like(c))


@given(batches(min_rows=2), st.floats(0.0, 1.0))
def test_hinge_is_zero_iff_every_comparison_clears_the_margin(b, margin):
    loss = ranking_group_loss(b.confidence, b.reward, b.group, valid=b.valid, link="hinge", margin=margin, scale=1.5)
    cleared = True
    n = len(b.confidence)
    for a in range(n):
        for c in range(n):
            if (b.valid[a] and b.valid[c] and b.group[a] == b.group[c] and b.reward[a] > b.reward[c]
                    and not 1.5 * (b.confidence[a] - b.confidence[c]) - margin >= 0):
                cleared = False
    assert (loss.item() == 0.0) == cleared


@given(batches(min_rows=2), st.sampled_from(OPTIONS))
def test_best_never_pushed_down_worst_never_pushed_up(b, options):
    link, pair_weight, _ = options
    _, grad = value_and_grad(
        ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid, link=link, pair_weight=pair_weight, margin=0.2
    )
    # gradient descent moves c by -grad: the best row's grad must be <= 0, the worst's >= 0
    for gid in torch.unique(b.group[b.valid]):
        rows = (b.group == gid) & b.valid
        best = rows & (b.reward == b.reward[rows].max())
        worst = rows & (b.reward == b.reward[rows].min())
        assert bool((grad[best] <= 0).all())
        assert bool((grad[worst] >= 0).all())


@given(batches(min_rows=1, conf_bound=1e4), st.sampled_from(LINKS), st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
def test_finite_for_any_finite_input(b, link, dtype):
    c = b.confidence.clamp(-6e4, 6e4).to(dtype).requires_grad_(True)
    loss = ranking_group_loss(c, b.reward.to(dtype), b.group, valid=b.valid, link=link, scale=3.0, pair_weight="reward_gap")
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert c.grad.dtype == dtype
    if link != "squared_hinge":  # bounded gradient (|dphi/dx| <= 1); squared hinge's grows with the gap
        assert bool(torch.isfinite(c.grad).all())


def test_gradient_matches_finite_differences():
    b = random_batch(torch.Generator().manual_seed(7), n=14, n_groups=3)
    c = b.confidence.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: ranking_group_loss(x, b.reward, b.group, valid=b.valid, pair_weight="reward_gap", margin=0.1), (c,)
    )


def test_rewards_with_a_graph_are_not_differentiated():
    # a reward computed by a differentiable model must not get a gradient through reward_gap weights
    from rac_losses import ranking_partners

    conf = torch.tensor([0.2, 0.5, 0.9], requires_grad=True)
    reward = torch.tensor([1.0, 0.0, 0.5], requires_grad=True)
    loss = ranking_group_loss(conf, reward * 2, torch.zeros(3, dtype=torch.long), pair_weight="reward_gap")
    loss.backward()
    assert reward.grad is None and conf.grad is not None
    partners = ranking_partners(conf.detach(), reward * 2, torch.zeros(3, dtype=torch.long), pair_weight="reward_gap")
    assert not any(t.requires_grad for t in vars(partners).values() if isinstance(t, torch.Tensor))

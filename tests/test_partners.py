"""The row (micro-batch) form: summed over any split of the batch it equals the batch form exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rac_losses import (
    Partners,
    corruption_partners,
    pairwise_corruption_loss,
    partner_loss,
    ranking_group_loss,
    ranking_partners,
)
from strategies import batches, random_batch


def _split(n: int, rnd, max_parts: int = 5) -> list[torch.Tensor]:
    """A random partition of shuffled row indices into micro-batches (some possibly empty)."""
    order = list(range(n))
    rnd.shuffle(order)
    cuts = sorted(rnd.randint(0, n) for _ in range(rnd.randint(0, max_parts)))
    bounds = [0, *cuts, n]
    return [torch.tensor(order[a:b], dtype=torch.long) for a, b in zip(bounds, bounds[1:])]


def _row_form(confidence, partners, micro_batches):
    c = confidence.detach().clone().requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64)
    for rows in micro_batches:
        part = partner_loss(c[rows], partners[rows])  # one micro-batch's own backward, the recorded options
        part.backward()
        total = total + part.detach()
    return total, c.grad if c.grad is not None else torch.zeros_like(c)


def _batch_form(fn, confidence, *args, **kwargs):
    c = confidence.detach().clone().requires_grad_(True)
    loss = fn(c, *args, **kwargs)
    loss.backward()
    return loss.detach(), c.grad


LOSS_OPTIONS = st.fixed_dictionaries(
    {"link": st.sampled_from(["logistic", "hinge", "squared_hinge"]), "scale": st.floats(0.1, 4), "margin": st.floats(0, 1)}
)


@given(batches(), LOSS_OPTIONS, st.sampled_from(["uniform", "reward_gap"]), st.sampled_from(["mean", "sum"]), st.randoms(use_true_random=False))
def test_ranking_row_form_sums_to_batch_form(b, loss_options, pair_weight, reduction, rnd):
    structure = dict(valid=b.valid, pair_weight=pair_weight, reduction=reduction, tie_tolerance=0.1)
    partners = ranking_partners(b.confidence, b.reward, b.group, **structure, **loss_options)
    value, grad = _row_form(b.confidence, partners, _split(len(b.confidence), rnd))
    want_value, want_grad = _batch_form(ranking_group_loss, b.confidence, b.reward, b.group, **structure, **loss_options)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)


@given(batches(), LOSS_OPTIONS, st.booleans(), st.floats(0, 0.5), st.randoms(use_true_random=False))
def test_corruption_row_form_sums_to_batch_form(b, loss_options, detach_clean, severity_margin, rnd):
    structure = dict(valid=b.valid, detach_clean=detach_clean, severity_margin=severity_margin)
    partners = corruption_partners(b.confidence, b.severity, b.group, **structure, **loss_options)
    value, grad = _row_form(b.confidence, partners, _split(len(b.confidence), rnd))
    want_value, want_grad = _batch_form(pairwise_corruption_loss, b.confidence, b.severity, b.group, **structure, **loss_options)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)


def test_micro_batch_size_one_on_a_larger_batch():
    b = random_batch(torch.Generator().manual_seed(11), n=64, n_groups=8)
    partners = ranking_partners(b.confidence, b.reward, b.group, valid=b.valid, scale=3.0)
    singles = [torch.tensor([i]) for i in torch.randperm(64, generator=torch.Generator().manual_seed(1)).tolist()]
    value, grad = _row_form(b.confidence, partners, singles)
    want_value, want_grad = _batch_form(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid, scale=3.0)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)


def test_indexing_by_mask_long_tensor_and_slice_agree():
    b = random_batch(torch.Generator().manual_seed(5), n=10, n_groups=2)
    partners = ranking_partners(b.confidence, b.reward, b.group)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[2:6] = True
    for a, c in [(partners[mask], partners[torch.arange(2, 6)]), (partners[2:6], partners[torch.arange(2, 6)])]:
        for name in ("confidence", "sign", "weight", "extra_margin", "grad", "normaliser"):
            assert torch.equal(getattr(a, name), getattr(c, name))
    assert len(partners[mask]) == 4
    assert torch.equal(partners[mask].normaliser, partners.normaliser)  # the batch-global normaliser travels
    moved = partners.to("cpu")
    assert isinstance(moved, Partners) and moved.confidence.device.type == "cpu"
    for table in (partners[mask], partners[2:6], moved):  # the loss options travel with every slice
        assert (table.link, table.scale, table.margin) == (partners.link, partners.scale, partners.margin)


def test_the_tables_record_their_loss_and_the_row_form_uses_it():
    # before: partner_loss took link/scale/margin again, with defaults of its own, so a micro-batch could
    # silently compute another loss than the batch one
    b = random_batch(torch.Generator().manual_seed(4), n=24, n_groups=3)
    options = dict(link="hinge", scale=0.7, margin=0.2)
    partners = ranking_partners(b.confidence, b.reward, b.group, valid=b.valid, **options)
    assert (partners.link, partners.scale, partners.margin) == ("hinge", 0.7, 0.2)
    value, _ = _row_form(b.confidence, partners, [torch.arange(24)])
    want, _ = _batch_form(ranking_group_loss, b.confidence, b.reward, b.group, valid=b.valid, **options)
    torch.testing.assert_close(value, want)
    with pytest.raises(TypeError):
        partner_loss(b.confidence, partners, scale=1.0)  # no second place to state the loss


@pytest.mark.parametrize("options,word", [(dict(link="relu"), "link"), (dict(scale=0.0), "scale"), (dict(margin=-1.0), "margin")])
def test_partner_builders_check_the_loss_options(options, word):
    with pytest.raises(ValueError, match=word):
        ranking_partners(torch.randn(4), torch.randn(4), torch.zeros(4, dtype=torch.long), **options)
    with pytest.raises(ValueError, match=word):
        corruption_partners(torch.randn(4), torch.tensor([0, 1, 0, 2]), torch.tensor([0, 0, 1, 1]), **options)


def test_rows_without_comparisons_may_hold_anything_in_both_forms():
    c = torch.tensor([0.3, -0.2, float("nan"), 0.1], requires_grad=True)
    reward, group = torch.tensor([1.0, 0.0, 1.0, 0.5]), torch.tensor([7, 7, 7, 7])
    valid = torch.tensor([True, True, False, True])
    batch = ranking_group_loss(c, reward, group, valid=valid)
    partners = ranking_partners(c.detach(), reward, group, valid=valid)
    rows = partner_loss(c, partners)
    torch.testing.assert_close(rows, batch)
    rows.backward()
    assert bool(torch.isfinite(c.grad).all()) and c.grad[2] == 0


def test_integer_row_index_is_refused():
    partners = ranking_partners(torch.randn(4), torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="rows must be a 1-D LongTensor, a bool mask or a slice, got int"):
        partners[2]


def test_partner_tables_are_detached():
    c = torch.randn(6, requires_grad=True)
    partners = ranking_partners(c, torch.tensor([0.0, 1, 2, 0, 1, 2]), torch.tensor([1, 1, 1, 2, 2, 2]))
    assert not partners.confidence.requires_grad


@pytest.mark.parametrize(
    "rows,error",
    [(torch.zeros(3, dtype=torch.bool), ValueError), (torch.tensor([0.0, 1.0]), TypeError), (torch.zeros(2, 2, dtype=torch.long), TypeError)],
)
def test_bad_row_index_raises(rows, error):
    partners = ranking_partners(torch.randn(4), torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(error, match="mask|LongTensor"):
        partners[rows]


def test_partner_loss_rejects_a_length_mismatch():
    partners = ranking_partners(torch.randn(4), torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"confidence must have shape \[2\], got \(3,\)"):
        partner_loss(torch.randn(3), partners[torch.tensor([0, 1])])


def test_the_low_level_defaults_are_racconfigs():
    # before: ranking_group_loss(scale=1.0) while RACConfig.rank_scale=2.0
    import inspect

    from rac_losses import RACConfig

    config = RACConfig()
    for fn, prefix in ((ranking_group_loss, "rank"), (ranking_partners, "rank"), (pairwise_corruption_loss, "pair"), (corruption_partners, "pair")):
        params = inspect.signature(fn).parameters
        for option in ("link", "scale", "margin", "pair_weight", "tie_tolerance", "severity_margin", "detach_clean"):
            name = f"{prefix}_{option}"
            if option in params and hasattr(config, name):
                assert params[option].default == getattr(config, name), (fn.__name__, option)

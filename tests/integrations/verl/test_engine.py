"""The RAC loss function inside verl's real training engine (TrainingWorker + FSDP2, tiny Qwen2.5-VL, CPU).

Every test feeds the engine what the ``rac`` trainer writes each step: the partner tables from the engine's
own old log-probs (``partner_fields``) and a clean-only ``loss_mask``; the reference is the core batch form
(:func:`rac_losses.rac_loss`) on a plain transformers forward of the same rows.
"""

from __future__ import annotations

import random
from functools import partial

import pytest
import torch
from verl.workers.utils.losses import ppo_loss

import vl_batch
from rac_losses import rac_loss
from rac_losses.integrations.settings import RACSettings
from rac_losses.integrations.verl.loss import rac_ppo_loss, without_twins
from rac_losses.integrations.verl.rows import partner_fields, rows_from_verl

SETTINGS = RACSettings.from_options({"rank_coef": 0.7, "pair_coef": 0.5, "pair_margin": 0.05})


@pytest.fixture(scope="module")
def batch(hf):
    return vl_batch.make_batch(hf)


def _rac_inputs(worker, batch, settings=SETTINGS):
    """What the ``rac`` trainer computes once per step: partner fields from the old log-probs, clean loss mask."""
    old, entropy = vl_batch.infer(worker, batch)
    rows = rows_from_verl(batch.uid, batch.rm_scores(), batch.extra_fields, [False] * len(batch))
    fields, metrics = partner_fields(rows, old, batch.tensors["response_mask"], settings, entropy=entropy)
    fields["old_log_probs"] = old
    fields["advantages"] = torch.zeros(old.shape)
    return fields, without_twins(batch.tensors["response_mask"], rows.twin), metrics


def _reference(hf, batch, settings=SETTINGS):
    """Core batch-form RAC loss and its gradient, from a plain transformers forward."""
    hf.zero_grad()
    logp, entropy = vl_batch.hf_token_stats(hf, batch)
    rows = rows_from_verl(batch.uid, batch.rm_scores(), batch.extra_fields, [False] * len(batch))
    out = rac_loss(
        logp, batch.tensors["response_mask"], rows.reward, rows.group, token_entropy=entropy, pair=rows.pair,
        severity=rows.severity, config=settings.config,
    )
    out.loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in hf.named_parameters() if p.grad is not None}


def _assert_grads_close(got, want, atol=1e-4, rtol=1e-4):
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def test_rac_terms_equal_the_core_batch_form_on_a_plain_forward(frozen_worker, hf, batch):
    fields, loss_mask, _ = _rac_inputs(frozen_worker, batch)
    frozen_worker.set_loss_fn(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=SETTINGS))
    metrics = vl_batch.train(frozen_worker, batch, fields, loss_mask=loss_mask)
    got = vl_batch.grads(frozen_worker)
    want, want_grads = _reference(hf, batch)
    assert want.metrics["rank_pairs"] > 0 and want.metrics["pair_pairs"] == 3
    # advantages are 0, so the policy-gradient term is 0 in value and gradient: all that is left is RAC
    value = float(want.loss.detach())
    assert sum(metrics["actor/rac_loss"]) == pytest.approx(value, abs=1e-4)
    assert metrics["loss"] == [pytest.approx(value, abs=1e-4)]  # verl's total: policy term 0 + RAC
    assert any(g.abs().max() > 1e-6 for g in want_grads.values())
    _assert_grads_close(got, want_grads)


@pytest.mark.parametrize(
    "split",
    [
        dict(micro_batch_size_per_gpu=1, use_dynamic_bsz=False),
        dict(micro_batch_size_per_gpu=3, use_dynamic_bsz=False),
        dict(use_dynamic_bsz=True, max_token_len_per_gpu=40),  # verl regroups rows by token count
    ],
    ids=["micro1", "micro3", "dynamic"],
)
def test_gradient_is_unchanged_by_row_order_and_micro_batching(frozen_worker, batch, split):
    counting = vl_batch.CountingLoss(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=SETTINGS))
    frozen_worker.set_loss_fn(counting)
    fields, loss_mask, _ = _rac_inputs(frozen_worker, batch)
    vl_batch.train(frozen_worker, batch, fields, loss_mask=loss_mask, micro_batch_size_per_gpu=len(batch), use_dynamic_bsz=False)
    whole = vl_batch.grads(frozen_worker)
    assert counting.micro_batches == [len(batch)]

    order = list(range(len(batch)))
    random.Random(3).shuffle(order)  # groups and pairs now straddle micro-batches
    shuffled = batch.select(order)
    fields, loss_mask, _ = _rac_inputs(frozen_worker, shuffled)
    vl_batch.train(frozen_worker, shuffled, fields, loss_mask=loss_mask, **split)
    assert len(counting.micro_batches) > 2  # really split
    _assert_grads_close(vl_batch.grads(frozen_worker), whole, atol=1e-5, rtol=1e-5)


def test_twins_take_no_part_in_the_policy_gradient_kl_or_entropy_terms(frozen_worker, batch):
    """With RAC off, a batch with twins trains exactly like the clean rows alone under stock ppo_loss
    (policy gradient, KL loss to a reference and entropy bonus all on)."""
    off = RACSettings.from_options({"rank_coef": 0, "pair_coef": 0})
    config = vl_batch.actor_config(use_kl_loss=True, kl_loss_coef=0.3, kl_loss_type="low_var_kl", entropy_coeff=0.05)
    adv = (batch.reward - 0.5).float()[:, None] * batch.tensors["response_mask"]
    fields, loss_mask, _ = _rac_inputs(frozen_worker, batch, off)
    fields["advantages"] = adv
    fields["ref_log_prob"] = fields["old_log_probs"] - 0.2 * torch.rand(fields["old_log_probs"].shape, generator=torch.Generator().manual_seed(1))
    frozen_worker.set_loss_fn(partial(rac_ppo_loss, config=config, settings=off))
    with_twins = vl_batch.train(frozen_worker, batch, fields, loss_mask=loss_mask)
    with_twins_grads = vl_batch.grads(frozen_worker)

    clean = [i for i, e in enumerate(batch.extra_fields) if e["rac_severity"] == 0]
    alone = batch.select(clean)
    frozen_worker.set_loss_fn(partial(ppo_loss, config=config))
    stock = vl_batch.train(frozen_worker, alone, {k: fields[k][clean] for k in ("old_log_probs", "advantages", "ref_log_prob")})
    for key in ("actor/pg_loss", "kl_loss", "actor/entropy_loss"):
        assert with_twins[key] == pytest.approx(stock[key], abs=1e-6), key
    assert any(g.abs().max() > 1e-6 for g in with_twins_grads.values())
    _assert_grads_close(with_twins_grads, vl_batch.grads(frozen_worker), atol=1e-6, rtol=1e-5)


def test_mini_batches_each_carry_the_batch_scale(frozen_worker, hf, batch):
    """3 mini-batches of 3 rows (3 optimiser steps at lr 0): each step's RAC term is scaled by 3, so the
    steps' gradients sum to 3 x the batch gradient, as 3 steps of a mean loss would."""
    old, entropy = vl_batch.infer(frozen_worker, batch)
    rows = rows_from_verl(batch.uid, batch.rm_scores(), batch.extra_fields, [False] * len(batch))
    fields, _ = partner_fields(rows, old, batch.tensors["response_mask"], SETTINGS, entropy=entropy, mini_batches=3)
    fields.update(old_log_probs=old, advantages=torch.zeros(old.shape))
    frozen_worker.set_loss_fn(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=SETTINGS))
    frozen_worker.step_grads.clear()
    vl_batch.train(frozen_worker, batch, fields, loss_mask=without_twins(batch.tensors["response_mask"], rows.twin),
                   mini_batch_size=3)
    assert len(frozen_worker.step_grads) == 3
    summed = {n: sum(step[n] for step in frozen_worker.step_grads) for n in frozen_worker.step_grads[0]}
    _, want = _reference(hf, batch)
    _assert_grads_close(summed, {n: 3 * g for n, g in want.items()})


def test_zero_coefficients_equal_stock_ppo_loss_exactly(frozen_worker, batch):
    clean = batch.select([i for i, e in enumerate(batch.extra_fields) if e["rac_severity"] == 0])
    off = RACSettings.from_options({"rank_coef": 0, "pair_coef": 0})
    fields, loss_mask, _ = _rac_inputs(frozen_worker, clean, off)
    fields["advantages"] = (clean.reward - 0.5).float()[:, None] * clean.tensors["response_mask"]

    frozen_worker.set_loss_fn(partial(ppo_loss, config=vl_batch.actor_config()))
    stock = vl_batch.train(frozen_worker, clean, {k: fields[k] for k in ("old_log_probs", "advantages")})
    stock_grads = vl_batch.grads(frozen_worker)
    frozen_worker.set_loss_fn(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=off))
    ours = vl_batch.train(frozen_worker, clean, fields, loss_mask=loss_mask)
    assert ours["loss"] == stock["loss"] and ours["actor/pg_loss"] == stock["actor/pg_loss"]
    assert ours["actor/rac_loss"] == [0.0] * len(ours["actor/rac_loss"])
    for name, g in stock_grads.items():
        assert torch.equal(vl_batch.grads(frozen_worker)[name], g), name


def test_a_few_steps_widen_the_gap_and_order_the_group(tiny_vl_path, hf, batch):
    worker = vl_batch.make_worker(tiny_vl_path, lr=2e-2)
    settings = RACSettings.from_options({"rank_coef": 1.0, "pair_coef": 1.0})
    worker.set_loss_fn(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=settings))
    history = []
    for _ in range(8):
        fields, loss_mask, metrics = _rac_inputs(worker, batch, settings)
        history.append(metrics)
        vl_batch.train(worker, batch, fields, loss_mask=loss_mask)
    first, last = history[0], history[-1]
    assert last["rac/conf_gap"] > first["rac/conf_gap"] + 0.01
    assert last["rac/rank_satisfied"] > first["rac/rank_satisfied"]
    assert last["rac/rank_loss"] < first["rac/rank_loss"] and last["rac/pair_loss"] < first["rac/pair_loss"]

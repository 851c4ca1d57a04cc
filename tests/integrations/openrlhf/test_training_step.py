"""OpenRLHF's unmodified ``ppo_train`` / ``training_step`` with the RAC trainer, on tiny random models.

The RAC terms must equal the core batch form (:func:`rac_losses.rac_loss`) on a plain transformers forward
of the same rows; the accumulated gradient must not depend on shuffling or the micro-batch size and must
be the stock gradient plus the batch form's; with both coefficients 0 the trainer is the stock one.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cpu_trainer import (
    grads, image_processor, make_trainer, openrlhf_args, plain_rows, rollouts, tiny_qwen2, tiny_qwen_vl, vl_processor,
)
from rac_losses import rac_loss
from rac_losses.integrations.openrlhf.trainer import rac_trainer_class
from rac_losses.integrations.openrlhf.twins import sample_key
from rac_losses.integrations.settings import RACSettings

N = 4  # samples per prompt
CLI = ("--actor.model_name_or_path", "tiny", "--rollout.n_samples_per_prompt", str(N),
       "--algo.advantage.estimator", "group_norm")


def stock_cls():
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer

    return ActorPPOTrainer


def args_for(micro_batch_size: int, *, entropy: bool, in_order: bool = False):
    args = openrlhf_args(*CLI)
    args.train.micro_batch_size = micro_batch_size
    args.actor.entropy_coef = 0.0 if entropy else None
    if in_order:  # ppo_train does not shuffle under tensor parallelism (only this flag is read on this path)
        args.ds.tensor_parallel_size = 2
    return args


def train_once(actor, trainer_cls, experience, args, *, monkeypatch, processor=None, seed=0, gas=None):
    """One ``ppo_train`` with lr 0 (gradients accumulate); returns (trainer, status, RAC values).

    ``gas``: micro-batches per optimizer step; default all of them (one optimizer step).
    """
    micro_batches = len(experience.sequences) // args.train.micro_batch_size
    trainer = make_trainer(
        trainer_cls, actor, args, gas=gas or micro_batches, processor=processor, monkeypatch=monkeypatch
    )
    values = []
    if hasattr(trainer_cls, "rac_settings"):
        trainer.actor_loss_fn.register_forward_hook(lambda m, i, o: values.append(m.last_value))
    trainer.replay_buffer.append(copy.deepcopy(experience))
    actor.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the DataLoader's shuffle
    status = trainer.ppo_train(0.0)
    return trainer, status, values


def twin_rows(experience, settings):
    """The reference twins: which samples get one, their corrupted pixel values and severities."""
    proc = image_processor()
    chosen, pixels, severity = [], [], []
    for i in range(len(experience.sequences)):
        key = sample_key(experience.sequences[i], experience.attention_mask[i])
        if settings.corruption.selects(key):
            image, _, sev = settings.corruption.apply(experience.images[i][0], key)
            chosen.append(i)
            pixels.append(proc(images=[image], return_tensors="pt")["pixel_values"])
            severity.append(sev)
    return chosen, pixels, severity


def reference(model, experience, settings, *, vl: bool):
    """``rac_loss`` on a plain forward of the clean rows and (VL) their twins."""
    mask = experience.action_mask
    group = torch.stack(experience.info["rac_group"]) if isinstance(experience.info["rac_group"], list) else experience.info["rac_group"]
    kwargs = dict(config=settings.config)
    if not vl:
        lp, ent = plain_rows(model, experience)
        return rac_loss(lp, mask, experience.rewards, group, token_entropy=ent, **kwargs)
    clean_pixels = torch.cat([m["pixel_values"] for m in experience.mm_train_inputs])
    lp, ent = plain_rows(model, experience, clean_pixels)
    chosen, pixels, severity = twin_rows(experience, settings)
    sub = copy.copy(experience)
    sub.sequences, sub.attention_mask = experience.sequences[chosen], experience.attention_mask[chosen]
    sub.mm_train_inputs = [experience.mm_train_inputs[i] for i in chosen]
    twin_lp, twin_ent = plain_rows(model, sub, torch.cat(pixels))
    idx = torch.tensor(chosen, dtype=torch.long)
    b = len(experience.sequences)
    return rac_loss(
        torch.cat([lp, twin_lp]), torch.cat([mask, mask[idx]]), torch.cat([experience.rewards, experience.rewards[idx]]),
        torch.cat([group, group[idx]]), token_entropy=torch.cat([ent, twin_ent]),
        pair=torch.cat([torch.arange(b), idx]), severity=torch.cat([torch.zeros(b), torch.tensor(severity, dtype=torch.float)]),
        **kwargs,
    )


TEXT = {
    "mean_logprob": RACSettings.from_options({"pair_coef": 0, "rank_coef": 1.0}),
    "neg_entropy": RACSettings.from_options({"pair_coef": 0, "rank_confidence": "neg_entropy", "rank_link": "hinge", "rank_margin": 0.1}),
}
VL = RACSettings.from_options({"rank_coef": 0.5, "pair_coef": 1.0, "corruption.fraction": 0.6, "corruption.names": "gaussian_noise,pixelate,contrast"})


@pytest.fixture(scope="module")
def text_batch():
    actor = tiny_qwen2()
    experience, _ = rollouts(actor, args_for(1, entropy=False), prompts=3, seed=1)
    return experience


@pytest.fixture(scope="module")
def vl_batch():
    actor = tiny_qwen_vl()
    experience, _ = rollouts(actor, args_for(1, entropy=False), prompts=3, seed=2, vl=True)
    return experience


@pytest.mark.parametrize("confidence", sorted(TEXT))
def test_text_rac_terms_equal_the_batch_form(confidence, text_batch, monkeypatch):
    settings = TEXT[confidence]
    actor = tiny_qwen2()
    args = args_for(1, entropy=settings.needs_entropy)
    _, status, values = train_once(actor, rac_trainer_class(stock_cls(), settings), text_batch, args, monkeypatch=monkeypatch)
    expected = reference(actor.model, text_batch, settings, vl=False)
    micro_batches = len(text_batch.sequences)
    assert len(values) == micro_batches
    assert expected.metrics["rank_pairs"] > 0
    # each micro-batch's term is scaled by gas (one optimizer step); summed and unscaled: the batch loss
    torch.testing.assert_close(torch.stack(values).sum() / micro_batches, expected.loss.detach(), atol=1e-4, rtol=0)
    assert status["rac/rank_loss"] == pytest.approx(expected.metrics["rank_loss"], abs=1e-4)
    assert status["rac/rank_pairs"] == expected.metrics["rank_pairs"]
    assert status["rac/rank_satisfied"] == pytest.approx(expected.metrics["rank_satisfied"])


def test_vl_rac_terms_with_twins_equal_the_batch_form(vl_batch, monkeypatch):
    actor = tiny_qwen_vl()
    args = args_for(2, entropy=True)
    _, status, values = train_once(
        actor, rac_trainer_class(stock_cls(), VL), vl_batch, args, monkeypatch=monkeypatch, processor=vl_processor()
    )
    expected = reference(actor.model, vl_batch, VL, vl=True)
    chosen, _, _ = twin_rows(vl_batch, VL)
    assert 0 < len(chosen) < len(vl_batch.sequences) and status["rac/twins"] == len(chosen)
    assert expected.metrics["pair_pairs"] == len(chosen) and expected.metrics["rank_pairs"] > 0
    micro_batches = len(vl_batch.sequences) // 2
    torch.testing.assert_close(torch.stack(values).sum() / micro_batches, expected.loss.detach(), atol=1e-4, rtol=0)
    for name in ("rank_loss", "pair_loss", "conf_clean", "conf_corrupted", "conf_gap"):
        assert status[f"rac/{name}"] == pytest.approx(expected.metrics[name], abs=1e-4), name


@pytest.mark.parametrize("vl", [False, True], ids=["qwen2", "qwen2.5-vl"])
def test_gradient_is_stock_plus_batch_form_under_any_split(vl, text_batch, vl_batch, monkeypatch):
    settings, batch, build = (VL, vl_batch, tiny_qwen_vl) if vl else (TEXT["neg_entropy"], text_batch, tiny_qwen2)
    processor = vl_processor() if vl else None
    rac = rac_trainer_class(stock_cls(), settings)

    def accumulated(trainer_cls, micro_batch_size, in_order):
        actor = build()
        args = args_for(micro_batch_size, entropy=settings.needs_entropy, in_order=in_order)
        train_once(actor, trainer_cls, batch, args, monkeypatch=monkeypatch, processor=processor)
        return grads(actor)

    whole_groups = accumulated(rac, N, in_order=True)  # each micro-batch is one prompt's group, in order
    shuffled_single = accumulated(rac, 1, in_order=False)
    stock = accumulated(stock_cls(), 1, in_order=False)
    actor = build()
    reference(actor.model, batch, settings, vl=vl).loss.backward()  # the batch form's gradient, once
    expected = stock + grads(actor)
    assert not torch.allclose(stock, expected)  # RAC does change the gradient
    torch.testing.assert_close(shuffled_single, expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(whole_groups, expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("vl", [False, True], ids=["qwen2", "qwen2.5-vl"])
def test_zero_coefficients_give_the_stock_loss_exactly(vl, text_batch, vl_batch, monkeypatch):
    batch, build = (vl_batch, tiny_qwen_vl) if vl else (text_batch, tiny_qwen2)
    off = RACSettings.from_options({"rank_coef": 0, "pair_coef": 0})
    runs = {}
    for name, cls in (("stock", stock_cls()), ("rac", rac_trainer_class(stock_cls(), off))):
        actor = build()
        _, status, _ = train_once(actor, cls, batch, args_for(2, entropy=False), monkeypatch=monkeypatch)
        runs[name] = (status, grads(actor))
    assert runs["rac"][0]["policy_loss"] == runs["stock"][0]["policy_loss"]
    assert torch.equal(runs["rac"][1], runs["stock"][1])


def test_logged_policy_loss_is_the_stock_one(text_batch, monkeypatch):
    logged = {}
    for name, cls in (("stock", stock_cls()), ("rac", rac_trainer_class(stock_cls(), TEXT["mean_logprob"]))):
        _, status, values = train_once(tiny_qwen2(), cls, text_batch, args_for(2, entropy=False), monkeypatch=monkeypatch)
        logged[name] = status["policy_loss"]
    assert values and float(torch.stack(values).abs().sum()) > 0.1  # RAC was in the loss
    assert logged["rac"] == pytest.approx(logged["stock"], abs=1e-6)


def test_several_optimizer_steps_each_get_the_batch_loss_in_expectation(text_batch, monkeypatch):
    # 12 samples, micro-batch 1, 4 micro-batches per optimizer step: 3 steps. Each micro-batch's RAC share is
    # scaled by gas * steps = 12, DeepSpeed divides by gas = 4: over the epoch, 3 x the batch gradient, i.e.
    # each step's RAC gradient is the batch gradient in expectation over the shuffle (the policy loss is a
    # per-step mean likewise).
    settings = TEXT["mean_logprob"]
    rac = rac_trainer_class(stock_cls(), settings)
    runs = {}
    for name, cls in (("rac", rac), ("stock", stock_cls())):
        actor = tiny_qwen2()
        _, _, values = train_once(actor, cls, text_batch, args_for(1, entropy=False), monkeypatch=monkeypatch, gas=4)
        runs[name] = (grads(actor), values)
    actor = tiny_qwen2()
    expected = reference(actor.model, text_batch, settings, vl=False)
    expected.loss.backward()
    torch.testing.assert_close(torch.stack(runs["rac"][1]).sum() / 12, expected.loss.detach(), atol=1e-4, rtol=0)
    torch.testing.assert_close(runs["rac"][0] - runs["stock"][0], 3 * grads(actor), atol=1e-6, rtol=1e-4)


def test_samples_with_agent_returned_images_get_no_twin_and_a_warning(vl_batch, caplog):
    # a multi-turn agent's sample carries its prompt's image plus one the agent returned; the twin would
    # corrupt only the prompt's image and its pixel_values would not match (before: training stopped)
    from openrlhf.trainer.ppo_utils.experience import split_experience_batch
    from rac_losses.integrations.openrlhf.rows import TWIN_ROW_KEY, prepare_batch

    settings = RACSettings.from_options({"pair_coef": 1.0, "pair_confidence": "mean_logprob", "corruption.fraction": 1.0})
    items = split_experience_batch(copy.deepcopy(vl_batch))
    clean = items[0].mm_train_inputs[0]
    items[0].mm_train_inputs[0] = {
        "pixel_values": torch.cat([clean["pixel_values"]] * 2), "image_grid_thw": torch.cat([clean["image_grid_thw"]] * 2),
    }
    with caplog.at_level("WARNING"):
        batch = prepare_batch(items, actor=tiny_qwen_vl(), settings=settings, processor=vl_processor(), chunk_size=2)
    assert "carries 2 images but its prompt lists 1" in caplog.text
    assert items[0].info[TWIN_ROW_KEY] == -1
    assert all(item.info[TWIN_ROW_KEY] >= 0 for item in items[1:])  # the others keep their twins
    assert batch.metrics["twins"] == len(items) - 1


def test_a_training_pass_without_rac_metrics_fails_loudly(text_batch, monkeypatch):
    # a release whose ppo_train stops calling training_step would train without RAC, silently
    stock = stock_cls()

    class Bypassing(stock):
        def ppo_train(self, kl_ctl):
            return {"policy_loss": 0.0}

    rac = rac_trainer_class(Bypassing, TEXT["mean_logprob"])
    with pytest.raises(RuntimeError, match="without rac/\\* metrics"):
        train_once(tiny_qwen2(), rac, text_batch, args_for(2, entropy=False), monkeypatch=monkeypatch)


@pytest.mark.parametrize("rank_confidence", ["mean_logprob", "neg_entropy"])
def test_pre_update_entropy_forward_covers_only_rows_that_read_entropy(rank_confidence, vl_batch, monkeypatch):
    # before: with a neg_entropy pairwise confidence, every sample's clean entropy was computed, though only
    # the samples with a twin read it (unless the ranking reads entropy too)
    from openrlhf.trainer.ppo_utils.experience import split_experience_batch
    from rac_losses.integrations.openrlhf import rows as rows_module

    settings = RACSettings.from_options({
        "rank_confidence": rank_confidence, "pair_confidence": "neg_entropy", "corruption.fraction": 0.6,
        "corruption.names": "gaussian_noise,pixelate,contrast",
    })
    forwarded = []
    real_forward = rows_module._forward

    def counting_forward(actor, batch, rows, mm_inputs, ring_attn_group, with_entropy):
        forwarded.append(len(rows))
        return real_forward(actor, batch, rows, mm_inputs, ring_attn_group, with_entropy)

    monkeypatch.setattr(rows_module, "_forward", counting_forward)
    items = split_experience_batch(copy.deepcopy(vl_batch))
    actor = tiny_qwen_vl()
    batch = rows_module.prepare_batch(items, actor=actor, settings=settings, processor=vl_processor(), chunk_size=len(items))
    twins = int(batch.metrics["twins"])
    assert 0 < twins < len(items)
    clean_rows = len(items) if rank_confidence == "neg_entropy" else twins
    assert forwarded == [clean_rows, twins]  # one chunk: the clean entropies, then the twins
    expected = reference(actor.model, vl_batch, settings, vl=True)  # every row's entropy, a plain forward
    for name in ("rank_loss", "pair_loss", "conf_clean", "conf_corrupted"):
        assert batch.metrics[name] == pytest.approx(expected.metrics[name], abs=1e-4), name


@pytest.mark.parametrize("refresh", [False, True])
def test_refresh_partners_rebuilds_the_tables_at_every_optimizer_step(refresh, text_batch, monkeypatch):
    # 12 samples, micro-batch 1, 4 per optimizer step: 3 real Adam steps. With refresh_partners the tables of
    # steps 2 and 3 are those of the parameters at their start (checked against a plain forward there);
    # without, every step keeps the pre-update tables.
    from rac_losses.integrations.openrlhf import trainer as trainer_module

    settings = RACSettings.from_options({"pair_coef": 0, "rank_coef": 1.0, "refresh_partners": refresh})
    actor = tiny_qwen2()
    real_prepare = trainer_module.prepare_batch
    seen = []

    def checked_prepare(items, *, actor, current, **kw):
        batch = real_prepare(items, actor=actor, current=current, **kw)
        seen.append((current, batch.metrics["rank_loss"], reference(actor.model, text_batch, settings, vl=False).metrics["rank_loss"]))
        return batch

    monkeypatch.setattr(trainer_module, "prepare_batch", checked_prepare)
    trainer = make_trainer(rac_trainer_class(stock_cls(), settings), actor, args_for(1, entropy=False), gas=4, lr=1e-2,
                           monkeypatch=monkeypatch)
    step = trainer.strategy.optimizer_step
    calls = []

    def every_fourth(optimizer, model, scheduler, name=None):  # DeepSpeed steps at accumulation boundaries
        calls.append(1)
        if len(calls) % 4 == 0:
            step(optimizer, model, scheduler, name)

    trainer.strategy.optimizer_step = every_fourth
    trainer.replay_buffer.append(copy.deepcopy(text_batch))
    torch.manual_seed(0)
    trainer.ppo_train(0.0)
    assert len(calls) == 12
    if not refresh:
        assert [c for c, _, _ in seen] == [False]
        return
    assert [c for c, _, _ in seen] == [False, True, True]
    for _, got, expected in seen:
        assert got == pytest.approx(expected, abs=1e-5)  # the tables of the parameters they were built at
    assert len({round(got, 6) for _, got, _ in seen}) == 3  # the parameters moved between steps

"""Test-only helpers: OpenRLHF's real ``ActorPPOTrainer`` on tiny random models, on the CPU.

- :func:`openrlhf_args`: the args namespace OpenRLHF's own parser builds for a command line;
- :func:`tiny_qwen2`, :func:`tiny_qwen_vl`: random models built from configs (no download), wrapped in
  OpenRLHF's ``Actor``; :func:`image_processor`: a Qwen2-VL image processor for 8x8 images
  (:func:`vl_processor`: a processor-like holder of it);
- :func:`make_trainer`: ``ActorPPOTrainer.__init__`` (stock or RAC) with a strategy that behaves like
  DeepSpeed's for one process (backward divides by the gradient-accumulation steps);
- :func:`rollouts`: a rollout batch as OpenRLHF's experience maker leaves it (old log-probs from the actor,
  advantages and group ids from the real, wrapped ``compute_advantages_and_returns``);
- :func:`plain_rows`: the same rows' token log-probs and entropies from a plain transformers forward.
"""

from __future__ import annotations

import argparse
import copy
import runpy
import sys
from types import SimpleNamespace as NS

import numpy as np
import torch
from PIL import Image

TRAIN_MODULE = "openrlhf.cli.train_ppo_ray"
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 120, 121, 122, 123
_ARGS_CACHE: dict[tuple, NS] = {}


class _Parsed(Exception):
    pass


def openrlhf_args(*cli: str) -> NS:
    """``hierarchize(parse_args(cli))`` with OpenRLHF's own parser (its ``__main__`` block, stopped there)."""
    if cli not in _ARGS_CACHE:
        from openrlhf.utils.config import hierarchize

        original = argparse.ArgumentParser.parse_args
        parsed = []

        def parse_and_stop(self, args=None, namespace=None):
            parsed.append(original(self, args, namespace))
            raise _Parsed

        argv = sys.argv
        argparse.ArgumentParser.parse_args = parse_and_stop
        sys.argv = [TRAIN_MODULE, *cli]
        try:
            runpy.run_module(TRAIN_MODULE, run_name="__main__", alter_sys=True)
        except _Parsed:
            pass
        finally:
            argparse.ArgumentParser.parse_args = original
            sys.argv = argv
        args = hierarchize(parsed[0])
        if args.actor.eps_clip_low_high is None:  # as train_ppo_ray does
            args.actor.eps_clip_low_high = (args.actor.eps_clip, args.actor.eps_clip)
        _ARGS_CACHE[cli] = args
    return copy.deepcopy(_ARGS_CACHE[cli])


def tiny_qwen2(seed: int = 0):
    """OpenRLHF ``Actor`` around a random 2-layer Qwen2 (vocabulary 64)."""
    from openrlhf.models import Actor
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    actor = Actor(AutoModelForCausalLM.from_config(cfg))
    actor.packing_samples = False  # an Actor built around a module leaves it unset
    actor.temperature = 1.0
    return actor


def tiny_qwen_vl(seed: int = 0):
    """OpenRLHF ``Actor`` around a random Qwen2.5-VL (2-pixel patches merged 2x2: an 8x8 image = 4 tokens)."""
    from openrlhf.models import Actor
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=2,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, window_size=8,
                           fullatt_block_indexes=[1]),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    actor = Actor(model)
    actor.packing_samples, actor.temperature = False, 1.0
    actor.is_vlm, actor._vlm_config = True, model.config
    return actor


def image_processor():
    """A Qwen2-VL image processor matching :func:`tiny_qwen_vl` (8x8 images are not resized)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": 16, "longest_edge": 64 * 64})


def vl_processor() -> NS:
    """What the trainer reads of a VLM's ``AutoProcessor`` (OpenRLHF's ``tokenizer``): its image processor."""
    return NS(image_processor=image_processor())


def random_image(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")


def _strategy(args: NS, gas: int) -> NS:
    def optimizer_step(optimizer, model, scheduler, name=None):
        optimizer.step()
        optimizer.zero_grad()

    return NS(
        args=args, ring_attn_group=None, accumulated_gradient=gas, is_rank_0=lambda: True,
        backward=lambda loss, model, optimizer: (loss / gas).backward(),  # DeepSpeed scales by 1 / gas
        optimizer_step=optimizer_step, get_grad_norm=lambda model: 0.0, all_reduce=lambda data, op="mean": data,
    )


def make_trainer(trainer_cls, actor, args: NS, *, gas: int, lr: float = 0.0, processor=None, monkeypatch):
    """``trainer_cls(...)`` through OpenRLHF's ``__init__``; ``lr = 0`` accumulates gradients (no step)."""
    import openrlhf.trainer.ray.ppo_actor as ppo_actor

    monkeypatch.setattr(ppo_actor, "torch_dist_barrier_and_cuda_sync", lambda: None)  # no process group
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the replay buffer's (unused) target device
    params = [p for p in actor.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr) if lr > 0 else NS(step=lambda: None, zero_grad=lambda: None)
    trainer = trainer_cls(
        _strategy(args, gas), actor, ema_model=None, actor_optim=optimizer,
        actor_scheduler=NS(get_last_lr=lambda: [lr]), micro_train_batch_size=args.train.micro_batch_size,
        tokenizer=processor, dataloader_pin_memory=False,
    )
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")  # ppo_train moves batches there
    return trainer


def grads(actor) -> torch.Tensor:
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in actor.parameters() if p.requires_grad
    ])


def rollouts(actor, args: NS, *, prompts: int, seed: int, vl: bool = False, rewards=None, rows=None):
    """One rollout batch (``prompts x n`` samples) as OpenRLHF's experience maker hands it to the actor.

    Responses have different lengths (right padding); rewards are random unless given.
    Returns ``(experience, rows)`` with ``rows`` (the token ids and images) reusable for another call.
    """
    from openrlhf.trainer.ppo_utils.experience import Experience
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from rac_losses.integrations.openrlhf.groups import with_group_ids

    n = args.rollout.n_samples_per_prompt
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = 100 if vl else 60
    if rows is None:
        prompt_len, max_resp = 4, 6
        seqs, images = [], []
        for p in range(prompts):
            prompt = torch.randint(4, vocab, (prompt_len,), generator=g).tolist()
            if vl:
                prompt = prompt[:2] + [VISION_START] + [IMAGE_TOKEN] * 4 + [VISION_END] + prompt[2:]
                image = random_image(rng)
            for _ in range(n):
                length = int(torch.randint(2, max_resp + 1, (1,), generator=g))
                seqs.append((prompt, torch.randint(4, vocab, (length,), generator=g).tolist()))
                images.append(image if vl else None)
        rows = (seqs, images)
    seqs, images = rows
    total = max(len(p) + len(r) for p, r in seqs)
    b = len(seqs)
    sequences = torch.zeros(b, total, dtype=torch.long)
    attention = torch.zeros(b, total, dtype=torch.long)
    action_mask = torch.zeros(b, total - 1, dtype=torch.bool)
    for i, (p, r) in enumerate(seqs):
        sequences[i, : len(p) + len(r)] = torch.tensor(p + r)
        attention[i, : len(p) + len(r)] = 1
        action_mask[i, len(p) - 1 : len(p) - 1 + len(r)] = True
    mm = []
    if vl:
        proc = image_processor()
        for image in images:
            out = proc(images=[image], return_tensors="pt")
            mm.append({"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]})
    if rewards is None:
        rewards = torch.randint(0, 3, (b,), generator=g).float() / 2
    from openrlhf.utils.vlm_utils import merge_mm_train_inputs

    with torch.no_grad():
        actor.eval()
        old = actor(sequences, action_mask, attention_mask=attention, **merge_mm_train_inputs(mm, "cpu"))
        actor.train()
    experience = Experience(
        sequences=sequences, attention_mask=attention, action_mask=action_mask, action_log_probs=old,
        rewards=rewards.clone(), kl=torch.zeros(b, total - 1), index=list(range(b)),
        images=[[im] for im in images] if vl else [], mm_train_inputs=mm, prompts=["p"] * b, labels=["l"] * b,
        info={"reward": rewards.clone()},
    )
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator = NS(args=args), args, args.algo.advantage.estimator
    maker.kl_ctl = NS(value=0.0)
    (experience,) = with_group_ids(RemoteExperienceMaker.compute_advantages_and_returns)(maker, [experience])
    return experience, rows


def plain_rows(model, experience, pixel_values=None):
    """``(token log-probs, entropy)`` ``[B, T-1]`` of ``experience``'s sequences from a plain HF forward."""
    kwargs = {}
    if pixel_values is not None:
        kwargs = {"pixel_values": pixel_values,
                  "image_grid_thw": torch.cat([m["image_grid_thw"] for m in experience.mm_train_inputs]),
                  # what a Qwen2.5-VL processor returns beside input_ids (image tokens marked 1)
                  "mm_token_type_ids": (experience.sequences == IMAGE_TOKEN).to(torch.int32)}
    logits = model(input_ids=experience.sequences, attention_mask=experience.attention_mask, **kwargs).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    token_logp = logp.gather(-1, experience.sequences[:, 1:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return token_logp, entropy

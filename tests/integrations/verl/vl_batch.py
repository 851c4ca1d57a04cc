"""Test-only: a verl training batch of clean rows and corrupted twins for the tiny Qwen2.5-VL, and the
verl ``TrainingWorker`` (FSDP2 engine) that trains on it, as verl's v1 trainer hands them over."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import tiny_vl
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil
from verl import DataProto
from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig, FSDPEngineConfig, HFModelConfig, TrainingWorkerConfig
from verl.workers.config.actor import PolicyLossConfig
from verl.workers.config.checkpoint import CheckpointConfig
from verl.workers.config.optimizer import FSDPOptimizerConfig
from verl.workers.engine_workers import TrainingWorker
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from rac_losses.corruption import corrupt

PROMPT_LEN = 9  # <s> <vision_start> 4 x <image> <vision_end> t t
RESPONSE_LEN = 6


def processor() -> Qwen2VLImageProcessorPil:
    """Qwen2-VL's image processor at the tiny model's patch sizes; an 8x8 image gives a 1x4x4 grid."""
    return Qwen2VLImageProcessorPil(
        patch_size=tiny_vl.PATCH, merge_size=tiny_vl.MERGE, temporal_patch_size=tiny_vl.TEMPORAL,
        min_pixels=16, max_pixels=64 * 64,
    )


@dataclass
class Batch:
    """Rows in verl's left/right-padded layout, plus what the RAC row contract needs."""

    tensors: dict[str, torch.Tensor]
    uid: np.ndarray  # [N] object
    mm_inputs: np.ndarray  # [N] object: {"pixel_values", "image_grid_thw"}
    extra_fields: list[dict]
    reward: torch.Tensor  # [N]

    def __len__(self) -> int:
        return len(self.uid)

    def select(self, order: list[int]) -> Batch:
        idx = torch.tensor(order)
        return Batch(
            {k: v[idx] for k, v in self.tensors.items()}, self.uid[order], self.mm_inputs[order],
            [self.extra_fields[i] for i in order], self.reward[idx],
        )

    def rm_scores(self) -> torch.Tensor:
        """``[N, T]`` token-level rewards: the sequence reward on the last response token."""
        mask = self.tensors["response_mask"]
        last = mask.sum(1) - 1
        out = torch.zeros(mask.shape, dtype=torch.float32)
        out[torch.arange(len(self)), last] = self.reward.float()
        return out


def make_batch(hf: Qwen2_5_VLForConditionalGeneration, *, seed: int = 0) -> Batch:
    """2 prompts x 3 rollouts of varied length (clean), then a corrupted twin of 3 of them (severity 2, 3, 5)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    proc = processor()
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(2)]
    clean = [(p, r) for p in range(2) for r in range(3)]  # (prompt, rollout)
    twins = [(0, 0, "gaussian_noise", 5), (0, 2, "defocus_blur", 3), (1, 1, "blank", 2)]
    rewards = {(0, 0): 1.0, (0, 1): 0.0, (0, 2): 0.5, (1, 0): 0.0, (1, 1): 1.0, (1, 2): 1.0}
    lengths = torch.randint(2, RESPONSE_LEN + 1, (len(clean),), generator=g)
    lengths[0] = RESPONSE_LEN  # the longest response sets the padded width
    responses = torch.randint(4, 150, (len(clean), RESPONSE_LEN), generator=g)
    responses[torch.arange(RESPONSE_LEN) >= lengths.unsqueeze(1)] = tiny_vl.PAD

    rows = []  # (prompt, rollout, image, severity, corruption)
    rows += [(p, r, images[p], 0, "") for p, r in clean]
    rows += [(p, r, corrupt(images[p], name, sev, seed=7), sev, name) for p, r, name, sev in twins]
    n = len(rows)
    prompt_ids = torch.stack([
        torch.tensor([tiny_vl.BOS, tiny_vl.VISION_START] + [tiny_vl.IMAGE_TOKEN] * 4 + [tiny_vl.VISION_END, 10 + p, 11])
        for p, *_ in rows
    ])
    response_ids = torch.stack([responses[clean.index((p, r))] for p, r, *_ in rows])
    response_mask = (response_ids != tiny_vl.PAD).long()
    input_ids = torch.cat([prompt_ids, response_ids], 1)
    attention_mask = torch.cat([torch.ones_like(prompt_ids), response_mask], 1)
    mm = [proc(images=[img], return_tensors="pt") for _, _, img, _, _ in rows]
    grid = torch.cat([m["image_grid_thw"] for m in mm])
    vision_pos, _ = hf.model.get_rope_index(
        input_ids=input_ids, mm_token_type_ids=(input_ids == tiny_vl.IMAGE_TOKEN).int(), image_grid_thw=grid,
        attention_mask=attention_mask,
    )
    text_pos = (attention_mask.cumsum(1) - 1).clamp_min(0)
    position_ids = torch.cat([text_pos[:, None], vision_pos.transpose(0, 1)], 1)  # [N, 4, L] as verl's agent loop
    mm_inputs = np.empty(n, dtype=object)
    mm_inputs[:] = [{"pixel_values": m["pixel_values"], "image_grid_thw": m["image_grid_thw"]} for m in mm]
    return Batch(
        tensors=dict(
            prompts=prompt_ids, responses=response_ids, input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids, response_mask=response_mask,
        ),
        uid=np.array([f"prompt-{p}" for p, *_ in rows], dtype=object),
        mm_inputs=mm_inputs,
        extra_fields=[{"rac_pair": f"prompt-{p}/{r}", "rac_severity": sev, "rac_corruption": name} for p, r, _, sev, name in rows],
        reward=torch.tensor([rewards[(p, r)] for p, r, *_ in rows], dtype=torch.float64),
    )


def make_worker(path, *, lr: float) -> TrainingWorker:
    """verl's TrainingWorker with the FSDP2 engine in fp32 (no gradient clipping, so gradients compare)."""
    model = HFModelConfig(path=str(path), override_config={"attn_implementation": "eager"}, use_remove_padding=False)
    engine = FSDPEngineConfig(
        strategy="fsdp2", model_dtype="fp32", use_torch_compile=False, use_dynamic_bsz=False,
        micro_batch_size_per_gpu=3, infer_micro_batch_size_per_gpu=3, max_token_len_per_gpu=4096,
        infer_max_token_len_per_gpu=4096,
        mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
    )
    optim = FSDPOptimizerConfig(lr=lr, weight_decay=0.0, clip_grad=1e12, total_training_steps=100)
    worker = TrainingWorker(TrainingWorkerConfig(
        model_type="language_model", model_config=model, engine_config=engine, optimizer_config=optim,
        checkpoint_config=CheckpointConfig(),
    ))
    worker.reset()
    _capture_gradients(worker)
    return worker


def _capture_gradients(worker: TrainingWorker) -> None:
    """Keep a copy of the gradients of every optimiser step (the engine frees them afterwards)."""
    engine = worker.engine
    step = engine.optimizer_step
    worker.step_grads = []

    def optimizer_step():
        grads = {}
        for name, p in engine.module.named_parameters():
            if p.grad is not None:
                g = p.grad
                grads[name] = (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone()
        worker.step_grads.append(grads)
        return step()

    engine.optimizer_step = optimizer_step


def actor_config(**overrides) -> FSDPActorConfig:
    """verl's actor config for ``ppo_loss`` (vanilla PPO clip, token-mean, no KL)."""
    base = dict(
        strategy="fsdp2", rollout_n=3, ppo_mini_batch_size=1, ppo_micro_batch_size_per_gpu=3, use_dynamic_bsz=False,
        policy_loss=PolicyLossConfig(loss_mode="vanilla"), use_torch_compile=False, entropy_coeff=0.0, use_kl_loss=False,
    )
    return FSDPActorConfig(**(base | overrides))


def to_tensordict(batch: Batch, extra: dict[str, torch.Tensor] | None = None):
    """verl's no-padding ``TensorDict`` of the rows (as the trainer dispatches it), with extra per-row fields."""
    dp = DataProto.from_dict(
        tensors={**batch.tensors, **(extra or {})},
        non_tensors=dict(multi_modal_inputs=batch.mm_inputs, uid=batch.uid),
        meta_info={"temperature": 1.0},
    )
    return left_right_2_no_padding(dp.to_tensordict())


def infer(worker: TrainingWorker, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(old_log_probs, entropy)`` ``[N, T]`` from the engine, as verl's ``_compute_old_log_prob``."""
    td = to_tensordict(batch)
    tu.assign_non_tensor(td, compute_loss=False, calculate_entropy=True)
    out = worker.infer_batch(td.clone())
    return no_padding_2_padding(tu.get(out, "log_probs"), td), no_padding_2_padding(tu.get(out, "entropy"), td)


def train(worker: TrainingWorker, batch: Batch, fields: dict[str, torch.Tensor], *, loss_mask: torch.Tensor | None = None,
          calculate_entropy: bool = True, mini_batch_size: int | None = None, **engine_keys) -> dict:
    """One ``train_mini_batch`` (one mini-batch of all rows unless ``mini_batch_size`` says otherwise, in order);
    ``engine_keys`` override micro-batching."""
    td = to_tensordict(batch, fields)
    if loss_mask is not None:
        td["loss_mask"] = loss_mask
    tu.assign_non_tensor(
        td, calculate_entropy=calculate_entropy, global_batch_size=mini_batch_size or len(batch),
        mini_batch_size=mini_batch_size or len(batch), epochs=1,
        seed=0, dataloader_kwargs={"shuffle": False}, compute_loss=True, **engine_keys,
    )
    return tu.get(worker.train_mini_batch(td), "metrics")


def grads(worker: TrainingWorker) -> dict[str, torch.Tensor]:
    """The gradients of the engine's last optimiser step, by parameter name (full tensors)."""
    return worker.step_grads[-1]


class CountingLoss:
    """A loss function that records the rows of every micro-batch it is called on, then delegates."""

    def __init__(self, loss_fn):
        self.loss_fn, self.micro_batches = loss_fn, []

    def __call__(self, model_output, data, dp_group=None):
        self.micro_batches.append(len(data))
        return self.loss_fn(model_output=model_output, data=data, dp_group=dp_group)


def hf_token_stats(hf: Qwen2_5_VLForConditionalGeneration, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_logprobs, token_entropy)`` ``[N, T]`` from a plain transformers forward, row by row (with grad)."""
    logps, ents = [], []
    t = batch.tensors
    for i in range(len(batch)):
        keep = t["attention_mask"][i].bool()
        out = hf(
            input_ids=t["input_ids"][i][keep][None], position_ids=t["position_ids"][i][:, keep][:, None],
            pixel_values=batch.mm_inputs[i]["pixel_values"], image_grid_thw=batch.mm_inputs[i]["image_grid_thw"],
        )
        n_resp = int(t["response_mask"][i].sum())
        logits = out.logits[0, PROMPT_LEN - 1: PROMPT_LEN - 1 + n_resp].float()
        logp_all = torch.log_softmax(logits, -1)
        tokens = t["responses"][i][:n_resp]
        pad = RESPONSE_LEN - n_resp
        logps.append(torch.nn.functional.pad(logp_all.gather(-1, tokens[:, None])[:, 0], (0, pad)))
        ents.append(torch.nn.functional.pad(-(logp_all.exp() * logp_all).sum(-1), (0, pad)))
    return torch.stack(logps), torch.stack(ents)

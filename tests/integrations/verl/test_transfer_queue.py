"""A ``rac`` training step through the real TransferQueue (a local Ray) and verl's real engine, on the CPU.

Rows are stored the way verl's v1 agent loop stores them (one key per output, per-row tensors of their own
length, ``extra_fields``), with the old log-probs the engine computed for them. The ``rac`` trainer's
``_compute_advantage`` (verl's GRPO, then the RAC fields) writes back through TransferQueue; the engine's
``train_mini_batch`` is handed the ``KVBatchMeta``, so verl's own TransferQueue bridge reads the fields
back (as jagged nested tensors) and verl's mini-/micro-batching splits them before the loss function.
"""

from __future__ import annotations

from functools import partial

import pytest
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from transformers import Qwen2_5_VLForConditionalGeneration
from verl.utils import tensordict_utils as tu
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

import hydra_config
import vl_batch
from rac_losses import rac_loss

from rac_losses.integrations.verl.loss import rac_ppo_loss
from rac_losses.integrations.verl.rows import rows_from_verl
from rac_losses.integrations.verl.trainer import RACTrainer

RAC = ("+rac.rank_coef=0.7", "+rac.pair_coef=0.5", "+rac.pair_margin=0.05")


@pytest.fixture(scope="module")
def transfer_queue():
    """A local Ray with TransferQueue's controller and one storage unit."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def hf(tiny_vl_path):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_path, attn_implementation="eager").float()


@pytest.fixture(scope="module")
def frozen_worker(tiny_vl_path):
    return vl_batch.make_worker(tiny_vl_path, lr=0.0)


def _store(batch: vl_batch.Batch, old: torch.Tensor, entropy: torch.Tensor) -> tuple[list[str], list[dict]]:
    """Each row as verl's ``AgentLoopWorkerTQ`` puts it (unpadded per-row tensors), plus its old log-probs.

    Keys are ``{uid}_{session}_{index}``: a twin is output 0 and its clean rollout output 1, as the twin
    agent loop emits them."""
    t = batch.tensors
    rm = batch.rm_scores()
    keys, rows = [], []
    for i in range(len(batch)):
        keep = t["attention_mask"][i].bool()
        n = int(t["response_mask"][i].sum())
        extra = batch.extra_fields[i]
        keys.append(f"{batch.uid[i]}_{extra['rac_pair'].split('/')[1]}_{0 if extra['rac_severity'] else 1}")
        rows.append(dict(
            prompts=t["prompts"][i], responses=t["responses"][i][:n], response_mask=t["response_mask"][i][:n],
            loss_mask=t["response_mask"][i][:n], input_ids=t["input_ids"][i][keep],
            attention_mask=torch.ones(int(keep.sum()), dtype=torch.int64), position_ids=t["position_ids"][i][:, keep],
            multi_modal_inputs=batch.mm_inputs[i], rm_scores=rm[i][:n], old_log_probs=old[i][:n], entropy=entropy[i][:n],
            uid=str(batch.uid[i]), extra_fields=dict(extra),
        ))
    return keys, rows


def test_a_rac_step_through_transfer_queue_trains_the_core_loss(transfer_queue, frozen_worker, hf, tiny_vl_path):
    batch = vl_batch.make_batch(hf)
    old, entropy = vl_batch.infer(frozen_worker, batch)
    keys, rows = _store(batch, old, entropy)
    meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=[{}] * len(keys))

    # 2 prompts x 3 rollouts (+ 3 twins): one mini-batch of every row, micro-batches of 3 rows
    config = hydra_config.compose_ppo(
        "trainer.v1.trainer_mode=rac", "actor_rollout_ref.rollout.n=3", "actor_rollout_ref.actor.ppo_mini_batch_size=3",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean", *RAC,
    )
    trainer = RACTrainer(config)
    metrics: dict = {}
    meta = trainer._compute_advantage(meta, metrics)
    stored = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["rac_rank_confidence", "rac_config"])
    assert stored["rac_rank_confidence"].is_nested and stored["rac_config"].dtype == torch.float64  # what verl reads

    counting = vl_batch.CountingLoss(partial(rac_ppo_loss, config=vl_batch.actor_config(), settings=trainer.rac))
    frozen_worker.set_loss_fn(counting)
    meta.extra_info.update(
        calculate_entropy=True, global_batch_size=len(keys), mini_batch_size=len(keys), epochs=1, seed=0,
        dataloader_kwargs={"shuffle": True}, temperature=1.0, micro_batch_size_per_gpu=3, use_dynamic_bsz=False,
    )
    # verl's TransferQueue bridge turns the meta into the rows, as in the actor worker's update_actor
    got = tu.get(frozen_worker.train_mini_batch(meta), "metrics")

    rows_ = rows_from_verl(batch.uid, batch.rm_scores(), batch.extra_fields, [False] * len(batch))
    want = rac_loss(
        old, batch.tensors["response_mask"], rows_.reward, rows_.group, token_entropy=entropy, pair=rows_.pair,
        severity=rows_.severity, config=trainer.rac.config,
    )
    assert want.metrics["rank_pairs"] > 0 and want.metrics["pair_pairs"] == 3
    assert counting.micro_batches == [3, 3, 3]  # 9 shuffled rows: groups and pairs straddle micro-batches
    assert got["actor/rac_loss"] == [pytest.approx(float(want.loss), abs=1e-5)]  # summed over micro-batches
    assert metrics["rac/rank_pairs"] == want.metrics["rank_pairs"]

"""A ``rac`` training step through the real TransferQueue (a local Ray) and verl's real engine, on the CPU.

Rows are stored the way verl's v1 agent loop stores them (one key per output, per-row tensors of their own
length, ``extra_fields``), with the old log-probs the engine computed for them. The ``rac`` trainer's
``_compute_advantage`` (verl's GRPO, then the RAC fields) writes back through TransferQueue; the engine's
``train_mini_batch`` is handed the ``KVBatchMeta``, so verl's own TransferQueue bridge reads the fields
back (as jagged nested tensors) and verl's mini-/micro-batching splits them before the loss function.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from verl.trainer.ppo.v1 import get_trainer_cls, trainer_base
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils import tensordict_utils as tu
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

import hydra_config
import vl_batch
from rac_losses import corruption_bonus, rac_loss, ranking_bonus

from rac_losses.integrations.verl.loss import rac_ppo_loss
from rac_losses.integrations.verl.rows import rows_from_verl
from rac_losses.integrations.verl.trainer import RACTrainer

RAC = ("+rac.formulation=loss", "+rac.rank_coef=0.7", "+rac.pair_coef=0.5", "+rac.pair_margin=0.05")


@pytest.fixture(scope="module")
def transfer_queue():
    """A local Ray with TransferQueue's controller and one storage unit."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


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


class _ActorWorkers:
    """Stands in for the actor worker group: saves a marker file where verl asks for the weights."""

    def save_checkpoint(self, local_path, remote_path, global_steps, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        open(os.path.join(local_path, "weights"), "w").close()


class _Rollouts:
    def generate_sequences(self, batch):
        pass


def _trainer(mode: str, folder, monkeypatch, *overrides: str):
    """verl's trainer for ``mode`` up to its dataloaders (a 64-prompt stand-in dataset), no workers."""
    monkeypatch.setattr(trainer_base, "create_rl_dataset", lambda *args, **kwargs: list(range(64)))
    config = hydra_config.compose_ppo(
        f"trainer.v1.trainer_mode={mode}", "data.train_batch_size=8", f"trainer.default_local_dir={folder / mode}",
        *overrides,
    )
    trainer = get_trainer_cls(mode)(config)
    trainer.tokenizer = trainer.processor = None
    trainer._init_dataloader()
    trainer.actor_rollout_wg, trainer.agent_loop_manager, trainer.global_steps = _ActorWorkers(), _Rollouts(), 3
    return trainer


def _stored_fields(keys: list[str]) -> list[str]:
    """The fields TransferQueue holds for ``keys`` (none when only their tags were put)."""
    try:
        return sorted(tq.kv_batch_get(keys=keys, partition_id="train").keys())
    except ValueError as e:  # TransferQueue's answer for keys that carry tags and no field
        assert "not ready" in str(e)
        return []


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


@pytest.mark.parametrize("formulation", ["reward", "loss"])
@pytest.mark.parametrize(
    "overrides", [(), ("algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc")],
    ids=["plain", "filter_groups"],
)
def test_the_rac_trainer_is_verls_sync_trainer_wherever_verl_asks_the_mode(
    transfer_queue, tmp_path, monkeypatch, overrides, formulation
):
    sync = _trainer("sync", tmp_path, monkeypatch, *overrides)
    rac = _trainer("rac", tmp_path, monkeypatch, f"+rac.formulation={formulation}", "+rac.pair_coef=0", *overrides)
    assert rac.config.trainer.v1.trainer_mode == "rac"  # the config still says what the user asked for

    # the replay buffer: the sync class (drains and discards filtered groups), with the sync options
    assert type(rac.replay_buffer) is type(sync.replay_buffer) is ReplayBuffer
    state = lambda t: {k: v for k, v in vars(t.replay_buffer).items() if k != "refill_fn"}  # noqa: E731
    assert state(rac) == state(sync)
    # the dataloader fetches whole batches (single prompts only where sync fetches them too)
    assert rac.config.data.get("gen_batch_size") == sync.config.data.get("gen_batch_size")
    assert rac.train_dataloader.batch_size == sync.train_dataloader.batch_size
    assert rac.parameter_sync_step == sync.parameter_sync_step

    # what TransferQueue keeps of a submitted prompt: its tags only, as for sync
    stored = {}
    for mode, trainer in (("sync", sync), ("rac", rac)):
        uids = np.array([f"{mode}-{i}" for i in range(2)], dtype=object)
        trainer._submit_batch_to_rollout(tu.get_tensordict({"input_ids": torch.ones(2, 3, dtype=torch.long), "uid": uids}))
        stored[mode] = _stored_fields(list(uids))
        tq.kv_clear(keys=list(uids), partition_id="train")
    assert stored["rac"] == stored["sync"]

    # checkpoints: the same files (no TransferQueue state), and no in-flight prompt re-issued on resume
    sync._save_checkpoint()
    rac._save_checkpoint()
    assert _files(tmp_path / "rac") == _files(tmp_path / "sync")
    assert rac._reissue_inflight_prompts() == sync._reissue_inflight_prompts() == 0


# (uid, pair_id, is_noisy, corruption_level) of the paper-formulation rows: a clean prompt and its corrupted
# copy (pair 7), and a clean prompt whose copy is not in this batch (pair 8)
_PROMPTS = [("clean", 7, False, 0.0), ("noisy", 7, True, 0.4), ("alone", 8, False, 0.0)]
_ROLLOUTS = 3


def _paper_rows(seed: int = 0) -> tuple[list[str], list[dict]]:
    """Rows as verl's v1 agent loop stores them in the reward formulation (the dataset's pair columns and
    every other dataset column are per-row fields beside the outputs'), in a shuffled order as verl's batch
    balancing leaves them, plus one verl padding row (a copy of the first row, as verl makes them)."""
    g = torch.Generator().manual_seed(seed)
    keys, rows = [], []
    for uid, pair, noisy, level in _PROMPTS:
        for session in range(_ROLLOUTS):
            n = int(torch.randint(2, 7, (1,), generator=g))
            acc = float(torch.rand((), generator=g) < 0.6)
            confidence = -1.0 if (uid, session) == ("alone", 1) else round(float(torch.rand((), generator=g)), 2)
            score = acc - 0.1 * (confidence < 0)
            keys.append(f"{uid}_{session}_0")
            rows.append(dict(
                uid=uid, session_id=session, pair_id=pair, is_noisy=noisy, corruption_level=level,
                rm_scores=torch.tensor([0.0] * (n - 1) + [score]), response_mask=torch.ones(n, dtype=torch.long),
                loss_mask=torch.ones(n, dtype=torch.long), old_log_probs=-torch.rand(n, generator=g),
                extra_fields={"reward_extra_info": {
                    "score": score, "acc": acc, "reward_acc": acc, "confidence": confidence, "format_ok": 1.0,
                }},
            ))
    order = torch.randperm(len(keys), generator=g).tolist()
    keys, rows = [keys[i] for i in order], [rows[i] for i in order]
    empty = torch.zeros(1, dtype=torch.long)
    pad = dict(rows[0], uid="pad0", session_id=0, rm_scores=torch.zeros(1), response_mask=empty, loss_mask=empty,
               old_log_probs=torch.zeros(1))
    return keys + ["pad0_0_0"], rows + [pad]


def _core_bonuses(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(ranking, corruption, index)``: the core's bonuses of the real rows sorted by (prompt, session), and
    each ``(uid, session_id)``'s position among them."""
    prompt = [p[0] for p in _PROMPTS]
    real = sorted((r for r in rows if r["uid"] != "pad0"), key=lambda r: (prompt.index(r["uid"]), r["session_id"]))
    info = [r["extra_fields"]["reward_extra_info"] for r in real]
    confidence = torch.tensor([i["confidence"] for i in info], dtype=torch.float64)
    correct = torch.tensor([i["reward_acc"] for i in info], dtype=torch.float64)
    group = torch.tensor([prompt.index(r["uid"]) for r in real])
    pair = torch.tensor([r["pair_id"] for r in real])
    level = torch.tensor([r.get("corruption_level", 0.0) for r in real], dtype=torch.float64)
    ranking = ranking_bonus(confidence, correct, group, margin=0.05)
    corruption = corruption_bonus(confidence, correct, group, pair, level, margin=0.05, alpha=0.1)
    index = {(r["uid"], r["session_id"]): i for i, r in enumerate(real)}
    return ranking, corruption, index


@pytest.mark.parametrize(("estimator", "pairs"), [("grpo", True), ("reinforce_plus_plus", True), ("grpo", False)],
                         ids=["grpo", "reinforce_plus_plus", "grpo-no-pair-columns"])
def test_the_paper_bonuses_shape_the_rewards_before_verls_own_advantages(transfer_queue, estimator, pairs):
    keys, rows = _paper_rows()
    if not pairs:  # an unpaired dataset: no pair columns in TransferQueue, the ranking bonus only
        rows = [{k: v for k, v in r.items() if k not in ("pair_id", "is_noisy", "corruption_level")} for r in rows]
    tags = [{}] * (len(keys) - 1) + [{"is_padding": True}]
    meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(rows), tags=tags)
    config = hydra_config.compose_ppo("trainer.v1.trainer_mode=rac", f"algorithm.adv_estimator={estimator}",
                                      f"actor_rollout_ref.rollout.n={_ROLLOUTS}")
    trainer = RACTrainer(config)
    assert trainer.formulation == "reward" and trainer.rac.rank_coef == 0.2 and trainer.rac.pair_coef == 0.3
    metrics: dict = {}
    trainer._compute_advantage(meta, metrics)

    # rewards after shaping = reward + 0.2 * ranking + 0.3 * corruption (the core, same rows), at the last token
    ranking, corruption, index = _core_bonuses([dict(r, pair_id=-1) for r in rows] if not pairs else rows)
    assert bool((corruption != 0).any()) == pairs and bool((ranking != 0).any())
    got = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["rm_scores", "advantages"])
    shaped = []
    for i, row in enumerate(rows):
        want = row["rm_scores"].clone()
        if row["uid"] != "pad0":  # verl's padding rows get nothing
            k = index[(row["uid"], row["session_id"])]
            want[-1] += float(0.2 * ranking[k] + 0.3 * corruption[k])
        torch.testing.assert_close(got["rm_scores"][i], want, rtol=0, atol=1e-6)
        shaped.append(got["rm_scores"][i])
    info = {(r["uid"], r["session_id"]): r["extra_fields"]["reward_extra_info"] for r in rows}
    counted = [k for k in range(_ROLLOUTS) if info[("clean", k)]["reward_acc"] > 0.5]  # the release counts these
    if pairs:
        assert metrics["rac/pair/count"] == len(counted) > 0
        assert metrics["rac/pair/clean_prompts"] == 2 and metrics["rac/pair/corrupted_prompts"] == 1
        assert metrics["rac/pair/unmatched_prompts"] == 1  # "alone": its copy is not in this batch
    else:
        assert metrics["rac/pair/count"] == 0 and "rac/pair/clean_prompts" not in metrics
    assert "rac/calibration/ece" in metrics and "rac/calibration/rank_violation_rate" in metrics

    # advantages = verl's own sync trainer's on the shaped rewards (same rows under other keys)
    ref_keys = [f"ref{k}" for k in keys]
    ref_rows = [dict(r, uid=f"ref{r['uid']}", rm_scores=s) for r, s in zip(rows, shaped)]
    ref_meta = tq.kv_batch_put(keys=ref_keys, partition_id="train", fields=list_of_dict_to_tensordict(ref_rows), tags=tags)
    sync = get_trainer_cls("sync")(hydra_config.compose_ppo(
        "trainer.v1.trainer_mode=sync", f"algorithm.adv_estimator={estimator}", f"actor_rollout_ref.rollout.n={_ROLLOUTS}"
    ))
    sync._compute_advantage(ref_meta, {})
    want = tq.kv_batch_get(keys=ref_keys, partition_id="train", select_fields=["advantages"])
    for i in range(len(keys)):
        torch.testing.assert_close(got["advantages"][i], want["advantages"][i], rtol=0, atol=1e-6)
    tq.kv_clear(keys=keys + ref_keys, partition_id="train")

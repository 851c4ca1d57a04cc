"""A few real optimisation steps through OpenRLHF's ``ppo_train`` move the calibration RAC targets.

Each round re-scores the same rollouts with the current policy (as OpenRLHF's experience maker would),
trains one optimizer step, and reads the ``rac/*`` metrics OpenRLHF logs (measured before each update).
"""

from __future__ import annotations

import torch

from cpu_trainer import make_trainer, rollouts, tiny_qwen2, tiny_qwen_vl, vl_processor
from rac_losses.integrations.openrlhf.trainer import rac_trainer_class
from rac_losses.integrations.settings import RACSettings
from test_training_step import args_for, stock_cls


def train_rounds(actor, settings, *, rounds, lr, vl, prompts, processor=None, monkeypatch, micro_batch_size=2, rewards=None):
    """``rounds`` rounds of rollouts -> ppo_train on fixed token rows and rewards; the status of each."""
    args = args_for(micro_batch_size, entropy=settings.needs_entropy)
    experience, rows = rollouts(actor, args, prompts=prompts, seed=3, vl=vl, rewards=rewards)
    rewards = experience.rewards
    micro_batches = len(rewards) // micro_batch_size
    trainer = make_trainer(
        rac_trainer_class(stock_cls(), settings), actor, args, gas=micro_batches, lr=lr, processor=processor,
        monkeypatch=monkeypatch,
    )
    statuses = []
    for r in range(rounds):
        experience, _ = rollouts(actor, args, prompts=prompts, seed=3, vl=vl, rows=rows, rewards=rewards)
        trainer.replay_buffer.append(experience)
        torch.manual_seed(r)
        statuses.append(trainer.ppo_train(0.0))
        trainer.replay_buffer.clear()
    return statuses


def test_ranking_steps_raise_the_satisfied_fraction(monkeypatch):
    settings = RACSettings.from_options({"pair_coef": 0, "rank_coef": 1.0})
    statuses = train_rounds(tiny_qwen2(), settings, rounds=8, lr=3e-3, vl=False, prompts=4, monkeypatch=monkeypatch)
    satisfied = [s["rac/rank_satisfied"] for s in statuses]
    loss = [s["rac/rank_loss"] for s in statuses]
    print("rank_satisfied per round", [round(x, 3) for x in satisfied], "rank_loss", [round(x, 4) for x in loss])
    assert statuses[0]["rac/rank_pairs"] > 0
    assert satisfied[-1] > satisfied[0] + 0.2
    assert loss[-1] < loss[0]


def test_pairwise_steps_widen_the_clean_corrupted_gap(monkeypatch):
    # Equal rewards in each group: GRPO's advantages are 0, so only the pairwise loss moves the policy. Mean
    # log-prob confidence: a random model's token entropy is already near its maximum, log(vocabulary).
    settings = RACSettings.from_options({
        "rank_coef": 0, "pair_coef": 1.0, "pair_confidence": "mean_logprob", "corruption.fraction": 1.0,
        "corruption.names": "gaussian_noise,pixelate", "corruption.severities": "5",
    })
    statuses = train_rounds(
        tiny_qwen_vl(), settings, rounds=5, lr=3e-4, vl=True, prompts=2, processor=vl_processor(),
        monkeypatch=monkeypatch, rewards=torch.ones(8),
    )
    gap = [s["rac/conf_gap"] for s in statuses]
    print("conf_gap per round", [round(x, 4) for x in gap], "pair_loss", [round(s["rac/pair_loss"], 4) for s in statuses])
    assert statuses[0]["rac/twins"] == 8
    assert gap[-1] > gap[0] + 0.04
    assert statuses[-1]["rac/pair_loss"] < statuses[0]["rac/pair_loss"]

"""``install()`` in this process, and the group ids it adds where OpenRLHF computes advantages."""

from __future__ import annotations

import random
from types import SimpleNamespace as NS

import pytest
import torch

from cpu_trainer import openrlhf_args
from rac_losses.integrations.openrlhf import hook
from rac_losses.integrations.openrlhf.groups import GROUP_KEY, with_group_ids
from rac_losses.integrations.openrlhf.options import ENV_VAR, settings_to_env
from rac_losses.integrations.settings import RACSettings


@pytest.fixture
def openrlhf_modules(monkeypatch):
    """OpenRLHF's trainer class and advantage method, restored after the test."""
    import openrlhf.trainer.ray.ppo_actor as ppo_actor
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    monkeypatch.setattr(ppo_actor, "ActorPPOTrainer", ppo_actor.ActorPPOTrainer)
    monkeypatch.setattr(RemoteExperienceMaker, "compute_advantages_and_returns", RemoteExperienceMaker.compute_advantages_and_returns)
    return ppo_actor, RemoteExperienceMaker


def test_install_is_idempotent(openrlhf_modules, monkeypatch):
    ppo_actor, maker = openrlhf_modules
    stock = ppo_actor.ActorPPOTrainer
    settings = RACSettings.from_options({"rank_margin": 0.2})
    monkeypatch.setenv(ENV_VAR, settings_to_env(settings)[ENV_VAR])
    hook.install()
    installed, compute = ppo_actor.ActorPPOTrainer, maker.compute_advantages_and_returns
    hook.install()
    assert ppo_actor.ActorPPOTrainer is installed and maker.compute_advantages_and_returns is compute
    assert installed.__mro__[1] is stock and installed.rac_settings == settings
    assert compute.rac_groups and compute.__wrapped__.__name__ == "compute_advantages_and_returns"


@pytest.mark.parametrize("env", [None, '{"pair_confidence": "topk"}'])
def test_install_refuses_to_run_without_valid_settings(env, openrlhf_modules, monkeypatch):
    ppo_actor, _ = openrlhf_modules
    stock = ppo_actor.ActorPPOTrainer
    if env is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, env)
    with pytest.raises((RuntimeError, ValueError), match="not set|topk"):
        hook.install()
    assert ppo_actor.ActorPPOTrainer is stock


def test_install_refuses_an_untested_openrlhf_release(openrlhf_modules, monkeypatch):
    ppo_actor, _ = openrlhf_modules
    stock = ppo_actor.ActorPPOTrainer
    monkeypatch.setenv(ENV_VAR, settings_to_env(RACSettings())[ENV_VAR])
    monkeypatch.setattr(hook, "_openrlhf_version", lambda: "0.12.0")
    with pytest.raises(RuntimeError, match="OpenRLHF 0.12.0 is not supported"):
        hook.install()
    assert ppo_actor.ActorPPOTrainer is stock


def test_group_ids_survive_the_replay_buffer_shuffle():
    from openrlhf.trainer.ppo_utils.experience import Experience, make_experience_batch, split_experience_batch
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    n, prompts, width = 4, 3, 5
    args = openrlhf_args("--rollout.n_samples_per_prompt", str(n), "--algo.advantage.estimator", "group_norm")
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator, maker.kl_ctl = NS(args=args), args, "group_norm", NS(value=0.0)
    order = list(range(n * prompts))
    random.Random(0).shuffle(order)  # samples reach the maker in any order, in several experiences
    rewards = torch.arange(n * prompts, dtype=torch.float)  # reward = sample index: it tells each row's index
    experiences = [
        Experience(sequences=torch.ones(len(chunk), width + 1, dtype=torch.long),
                   attention_mask=torch.ones(len(chunk), width + 1, dtype=torch.long),
                   action_mask=torch.ones(len(chunk), width, dtype=torch.bool), rewards=rewards[chunk].clone(),
                   kl=torch.zeros(len(chunk), width), index=chunk, info={})
        for chunk in (order[:5], order[5:])
    ]
    experiences = with_group_ids(RemoteExperienceMaker.compute_advantages_and_returns)(maker, experiences)
    items = [item for e in experiences for item in split_experience_batch(e)]
    assert all(item.index is None for item in items)  # OpenRLHF drops the index here
    random.Random(1).shuffle(items)  # the replay buffer's shuffle
    batch = make_experience_batch(items)
    groups = torch.stack(batch.info[GROUP_KEY])
    assert torch.equal(groups, batch.rewards.long() // n)


def test_group_ids_of_two_rollouts_in_one_buffer_never_collide():
    # a GAE critic with --critic.freezing_steps > 0 skips the actor's fit: its buffer holds several rollouts,
    # each numbered from index 0
    from openrlhf.trainer.ppo_utils.experience import Experience, make_experience_batch, split_experience_batch
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    n, prompts, width = 2, 3, 4
    args = openrlhf_args("--rollout.n_samples_per_prompt", str(n), "--algo.advantage.estimator", "group_norm")
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator, maker.kl_ctl = NS(args=args), args, "group_norm", NS(value=0.0)
    compute = with_group_ids(RemoteExperienceMaker.compute_advantages_and_returns)
    items = []
    for rollout in range(2):
        b = n * prompts
        experience = Experience(
            sequences=torch.ones(b, width + 1, dtype=torch.long), attention_mask=torch.ones(b, width + 1, dtype=torch.long),
            action_mask=torch.ones(b, width, dtype=torch.bool), rewards=torch.rand(b), kl=torch.zeros(b, width),
            index=list(range(b)), info={"rollout": torch.full((b,), rollout)},
        )
        (experience,) = compute(maker, [experience])
        items += split_experience_batch(experience)
    batch = make_experience_batch(items)
    groups, rollouts = torch.stack(batch.info[GROUP_KEY]), torch.stack(batch.info["rollout"])
    assert len(set(groups.tolist())) == 2 * prompts  # before: 3 ids, prompts of both rollouts merged
    for g in set(groups.tolist()):
        assert len(set(rollouts[groups == g].tolist())) == 1 and int((groups == g).sum()) == n

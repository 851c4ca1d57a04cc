"""The reward formulation's bonuses through OpenRLHF's own advantage code, and their rac/* metrics."""

from __future__ import annotations

import random
from types import SimpleNamespace as NS

import pytest
import torch

from cpu_trainer import openrlhf_args
from rac_losses import corruption_bonus, ranking_bonus
from rac_losses.integrations.openrlhf.bonus import METRICS_ATTR, with_rac_bonus, with_rac_metrics
from rac_losses.integrations.openrlhf.paper import PaperSettings, RACLabel
from rac_losses.metrics import calibration_summary

N = 4
# prompt -> (pair id, level): two clean prompts with their corrupted copies, one unpaired prompt
PROMPTS = [(0, 0.0), (0, 0.4), (1, 0.0), (1, 0.2), (-1, 0.0)]
WIDTH = 5


def _maker(estimator: str):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    args = openrlhf_args("--rollout.n_samples_per_prompt", str(N), "--algo.advantage.estimator", estimator,
                         "--algo.kl.init_coef", "0.01")
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator, maker.kl_ctl = NS(args=args), args, estimator, NS(value=0.01)
    return maker


def _rollout(seed: int = 0):
    """Per-sample facts of a rollout batch (sample i belongs to prompt i // N), and experiences holding them."""
    g = torch.Generator().manual_seed(seed)
    b = N * len(PROMPTS)
    acc = torch.randint(0, 2, (b,), generator=g).double()
    acc[:N] = torch.tensor([1.0, 1.0, 0.0, 1.0])  # prompt 0: mostly right, so its pairs count
    fmt = torch.ones(b)
    fmt[[3, 9]] = 0
    conf = torch.rand(b, generator=g).double()
    conf[[2, 13]] = -1.0  # no readable confidence
    facts = {
        "reward": acc * fmt + 0.1 * torch.rand(b, generator=g).double(), "acc": acc, "reward_acc": acc * fmt,
        "confidence": conf, "format_ok": fmt, "group": torch.arange(b) // N,
        "pair": torch.tensor([PROMPTS[i // N][0] for i in range(b)]),
        "level": torch.tensor([PROMPTS[i // N][1] for i in range(b)], dtype=torch.float64),
    }
    return facts


def _experiences(facts, order):
    from openrlhf.trainer.ppo_utils.experience import Experience

    out = []
    for chunk in (order[:7], order[7:13], order[13:]):  # samples reach the maker in any order, in micro-batches
        k = len(chunk)
        mask = torch.ones(k, WIDTH, dtype=torch.bool)
        mask[0, -2:] = False
        out.append(Experience(
            sequences=torch.ones(k, WIDTH + 1, dtype=torch.long), attention_mask=torch.ones(k, WIDTH + 1, dtype=torch.long),
            action_mask=mask, rewards=facts["reward"][chunk].float(), kl=torch.full((k, WIDTH), 0.02), index=list(chunk),
            labels=[RACLabel("A", pair=int(facts["pair"][i]), level=float(facts["level"][i])) for i in chunk],
            info={key: facts[key][chunk].float() for key in ("acc", "reward_acc", "confidence", "format_ok")},
        ))
    return out


@pytest.mark.parametrize("estimator", ["group_norm", "rloo", "reinforce_baseline", "reinforce", "gae"])
def test_rewards_after_the_hook_are_the_release_shaped_rewards(estimator):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    stock = RemoteExperienceMaker.compute_advantages_and_returns
    facts = _rollout()
    order = list(range(N * len(PROMPTS)))
    random.Random(0).shuffle(order)
    conf, acc, group = facts["confidence"], facts["reward_acc"], facts["group"]
    ranking = ranking_bonus(conf, acc, group, margin=0.05)
    corrupt = corruption_bonus(conf, acc, group, facts["pair"], facts["level"], margin=0.05, alpha=0.1)
    assert bool((ranking != 0).any()) and bool((corrupt != 0).any())  # both bonuses act on this batch
    shaped = facts["reward"] + 0.2 * ranking + 0.3 * corrupt

    maker = _maker(estimator)
    if estimator == "gae":
        values = lambda es: [setattr(e, "values", torch.full(e.action_mask.shape, 0.1)) for e in es]  # noqa: E731
    else:
        values = lambda es: None  # noqa: E731
    hooked = _experiences(facts, order)
    values(hooked)
    hooked = with_rac_bonus(stock, PaperSettings())(maker, hooked)
    got = torch.cat([e.rewards for e in hooked])
    torch.testing.assert_close(got.double(), shaped[order], atol=1e-6, rtol=0)

    # OpenRLHF's own code on the shaped rewards gives the same advantages and returns as the hook
    reference = _experiences(facts, order)
    values(reference)
    for e in reference:
        e.rewards = shaped[e.index].float()
    reference = stock(_maker(estimator), reference)
    plain = _experiences(facts, order)
    values(plain)
    plain = stock(_maker(estimator), plain)
    for h, r, p in zip(hooked, reference, plain):
        torch.testing.assert_close(h.advantages, r.advantages)
        torch.testing.assert_close(h.returns, r.returns)
    assert not all(torch.allclose(h.advantages, p.advantages) for h, p in zip(hooked, plain))  # the bonus counts

    metrics = getattr(maker, METRICS_ATTR)
    assert metrics["rac/bonus_mean"] == pytest.approx(float((0.2 * ranking + 0.3 * corrupt).mean()))
    assert metrics["rac/rank/bonus_mean"] == pytest.approx(float(ranking.mean()))
    assert metrics["rac/pair/bonus_mean"] == pytest.approx(float(corrupt.mean()))


def test_coefficients_and_margins_come_from_the_settings():
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    facts = _rollout(1)
    order = list(range(N * len(PROMPTS)))
    settings = PaperSettings(rank_coef=0.5, pair_coef=1.0, rank_margin=0.1, pair_margin=0.0, alpha=0.3)
    out = with_rac_bonus(RemoteExperienceMaker.compute_advantages_and_returns, settings)(_maker("group_norm"), _experiences(facts, order))
    conf, acc, group = facts["confidence"], facts["reward_acc"], facts["group"]
    want = (facts["reward"] + 0.5 * ranking_bonus(conf, acc, group, margin=0.1)
            + corruption_bonus(conf, acc, group, facts["pair"], facts["level"], margin=0.0, alpha=0.3))
    torch.testing.assert_close(torch.cat([e.rewards for e in out]).double(), want, atol=1e-6, rtol=0)
    # no pairs (--rac.pair_coef 0 or --rac.corruption.source off): the ranking bonus only
    out = with_rac_bonus(RemoteExperienceMaker.compute_advantages_and_returns, PaperSettings(source="off"))(
        _maker("group_norm"), _experiences(facts, order))
    want = facts["reward"] + 0.2 * ranking_bonus(conf, acc, group, margin=0.05)
    torch.testing.assert_close(torch.cat([e.rewards for e in out]).double(), want, atol=1e-6, rtol=0)


def test_rollout_metrics_reach_openrlhfs_logged_stats():
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    facts = _rollout(2)
    order = list(range(N * len(PROMPTS)))
    maker = _maker("group_norm")
    experiences = with_rac_bonus(RemoteExperienceMaker.compute_advantages_and_returns, PaperSettings())(maker, _experiences(facts, order))
    for e in experiences:  # as OpenRLHF's sample generator leaves them
        e.info["reward"] = facts["reward"][e.index].float()
        e.response_length, e.truncated = torch.ones(len(e.index)), torch.zeros(len(e.index), dtype=torch.bool)
    trainer = NS(experience_maker=maker)
    stats = with_rac_metrics(BasePPOTrainer._compute_rollout_stats)(trainer, experiences)
    assert stats["rollout/num_samples"] == N * len(PROMPTS)  # OpenRLHF's own stats stay
    assert stats["rac/pair/clean_prompts"] == 2 and stats["rac/pair/corrupted_prompts"] == 2
    clean = facts["level"] == 0
    want = calibration_summary(facts["confidence"][clean], facts["acc"][clean], group=facts["group"][clean],
                               format_ok=facts["format_ok"][clean])
    for key, value in want.items():
        assert stats[f"rac/calibration/{key}"] == pytest.approx(value), key
    assert "rac/corrupted/calibration/ece" in stats
    counted = [k for k in stats if k.startswith("rac/pair/")]
    assert "rac/pair/count" in counted and "rac/pair/clean_minus_corrupted_confidence" in counted
    conf = facts["confidence"]
    assert stats["rac/corrupted/confidence_mean"] == pytest.approx(float(conf[~clean & (conf >= 0)].mean()))
    # a second call without a new advantage step: RAC did not run on that batch, say so
    with pytest.raises(RuntimeError, match="without the RAC bonuses"):
        with_rac_metrics(BasePPOTrainer._compute_rollout_stats)(trainer, experiences)


def test_a_reward_function_without_confidences_fails_loudly():
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    facts = _rollout()
    experiences = _experiences(facts, list(range(N * len(PROMPTS))))
    for e in experiences:
        del e.info["reward_acc"]
    with pytest.raises(KeyError, match="reward_acc"):
        with_rac_bonus(RemoteExperienceMaker.compute_advantages_and_returns, PaperSettings())(_maker("rloo"), experiences)


def test_stated_decimals_keep_the_releases_ece_bins_through_openrlhfs_float32():
    # OpenRLHF keeps extra_logs as float32: a stated 0.3 arrives as 0.30000001, the far side of the release's
    # right-closed bin edge at 0.3; the adapter reads it back as 0.3 (before: another ECE than the release's)
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    facts = _rollout(3)
    b = len(facts["confidence"])
    facts["confidence"] = torch.tensor([(1 + i % 9) / 10 for i in range(b)], dtype=torch.float64)  # 0.1 ... 0.9
    facts["level"] = torch.zeros(b, dtype=torch.float64)  # every row clean: one summary over all
    maker = _maker("group_norm")
    experiences = with_rac_bonus(RemoteExperienceMaker.compute_advantages_and_returns, PaperSettings())(
        maker, _experiences(facts, list(range(b)))
    )
    for e in experiences:
        e.info["reward"] = facts["reward"][e.index].float()
        e.response_length, e.truncated = torch.ones(len(e.index)), torch.zeros(len(e.index), dtype=torch.bool)
    stats = with_rac_metrics(BasePPOTrainer._compute_rollout_stats)(NS(experience_maker=maker), experiences)
    args = dict(group=facts["group"], format_ok=facts["format_ok"])
    release = calibration_summary(facts["confidence"], facts["acc"], **args)["ece"]
    rounded = calibration_summary(facts["confidence"].float().double(), facts["acc"], **args)["ece"]
    assert rounded != pytest.approx(release)  # the bins do move in float32
    assert stats["rac/calibration/ece"] == pytest.approx(release, abs=1e-12)

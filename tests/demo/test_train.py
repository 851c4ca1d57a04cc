"""The arms' rewards and losses: the paper arm through the core's public API, equal to the core on a
recorded batch; RLCR's reward; the stated-confidence loss arm trains the confidence position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rac_losses
import rac_losses.rewards
from rac_losses.demo import train
from rac_losses.demo.corrupt import TwinCache
from rac_losses.demo.task import PAD, TOKEN, generate
from rac_losses.demo.train import ARMS, PAPER_BONUS, TrainConfig, grpo_train, make_policy, paper_rewards


def test_the_arms_call_the_public_api() -> None:
    assert train.rac_bonus is rac_losses.rac_bonus
    assert train.paper_reward is rac_losses.rewards.paper_reward
    assert train.brier_reward is rac_losses.rewards.brier_reward
    assert train.stated_confidence is rac_losses.stated_confidence
    assert PAPER_BONUS == dict(rank_coef=0.2, pair_coef=0.3, rank_margin=0.05, pair_margin=0.05, alpha=0.1)


def _tokens(*words: str) -> list[int]:
    ids = [TOKEN[w] for w in words]
    return ids + [PAD] * (4 - len(ids))


# A recorded batch: two clean prompts (groups 0, 1) and their corrupted copies (groups 2, 3), 3 rollouts
# each, every kind of response the tiny policy writes. (text in the paper's schema, ground truth)
RECORDED = [
    (_tokens("red", "0.9", "<eos>"), 3, "red", "<answer>red</answer><confidence>0.9</confidence>"),
    (_tokens("blue", "0.8", "<eos>"), 3, "red", "<answer>blue</answer><confidence>0.8</confidence>"),
    (_tokens("red", "red", "<eos>"), 3, "red", "<answer>red</answer><answer>red</answer>"),
    (_tokens("3", "1.0", "<eos>"), 3, "3", "<answer>3</answer><confidence>1.0</confidence>"),
    (_tokens("3", "0.4", "<eos>"), 3, "3", "<answer>3</answer><confidence>0.4</confidence>"),
    (_tokens("0.7", "3", "<eos>"), 3, "3", "<confidence>0.7</confidence><answer>3</answer>"),
    (_tokens("red", "1.0", "<eos>"), 3, "red", "<answer>red</answer><confidence>1.0</confidence>"),  # corrupted copy of 0
    (_tokens("red", "0.2", "<eos>"), 3, "red", "<answer>red</answer><confidence>0.2</confidence>"),
    (_tokens("green", "0.9", "<eos>"), 3, "red", "<answer>green</answer><confidence>0.9</confidence>"),
    (_tokens("3", "0.9", "<eos>"), 3, "3", "<answer>3</answer><confidence>0.9</confidence>"),  # corrupted copy of 1
    (_tokens("2", "0.6", "0.6", "<eos>"), 4, "3", "<answer>2</answer><confidence>0.6</confidence><confidence>0.6</confidence>"),
    (_tokens("3", "<eos>"), 2, "3", "<answer>3</answer>"),
]


@pytest.mark.parametrize("step", [0, 4, 50])
def test_paper_rewards_equal_the_core_on_a_recorded_batch(step: int) -> None:
    tokens = np.array([r[0] for r in RECORDED])
    lengths = np.array([r[1] for r in RECORDED])
    answers = np.array([TOKEN[r[2]] for r in RECORDED])
    group = np.repeat([0, 1, 2, 3], 3)
    pair = np.repeat([0, 1, 0, 1], 3)
    level = np.repeat([0.0, 0.0, 0.4, 1.0], 3)
    shaped, out = paper_rewards(tokens, lengths, answers, group, pair, level, step)
    # the core, called directly on the texts
    scored = [rac_losses.rewards.paper_reward(text, truth, is_multiple_choice=False, step=step) for *_, truth, text in RECORDED]
    conf = torch.tensor([-1.0 if r.confidence is None else r.confidence for r in scored], dtype=torch.float64)
    acc = torch.tensor([r.reward_acc for r in scored], dtype=torch.float64)
    core = rac_losses.rac_bonus(conf, acc, torch.from_numpy(group), torch.from_numpy(pair), torch.from_numpy(level),
                                rank_coef=0.2, pair_coef=0.3, rank_margin=0.05, pair_margin=0.05, alpha=0.1)
    want = torch.tensor([r.score for r in scored], dtype=torch.float64) + core.bonus
    assert shaped.dtype == torch.float64
    torch.testing.assert_close(shaped, want, rtol=0, atol=0)
    torch.testing.assert_close(out.bonus, core.bonus, rtol=0, atol=0)
    assert out.metrics == core.metrics
    assert out.metrics["pair/count"] > 0 and out.metrics["rank/comparisons"] > 0  # both bonuses act on this batch
    # the schema check: the malformed rows score no accuracy
    assert [r.format_ok for r in scored] == [True, True, False, True, True, False, True, True, True, True, True, False]


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    calls: list[tuple] = []
    real = getattr(train, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(train, name, spy)
    return calls


def _setup(p: int = 4):
    pool = generate(32, 0)
    return pool, TwinCache(pool.images, 0), TrainConfig(steps=2, prompts=p, group_size=4), make_policy(0, TrainConfig().policy)


def test_paper_arm_gives_corrupted_copies_their_own_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "rac_bonus")
    pool, twins, config, policy = _setup()
    grpo_train(policy, pool, twins, ARMS["rac_paper"], config, seed=5)
    assert len(calls) == config.steps
    rng = np.random.Generator(np.random.PCG64([5, 11]))  # the data stream grpo_train draws
    for (args, kwargs, _) in calls:
        rng.integers(len(pool), size=4)
        rng.integers(4, size=4)
        sev = rng.integers(1, 6, size=4)
        for _ in range(4):
            rng.permutation(4)
        conf, acc, group, pair, level = args
        assert kwargs == PAPER_BONUS
        assert group.tolist() == np.repeat(np.arange(8), 4).tolist()  # 4 clean prompts, then their 4 copies
        assert pair.tolist() == np.repeat(np.tile(np.arange(4), 2), 4).tolist()
        assert level.tolist() == np.repeat(np.concatenate([np.zeros(4), sev / 5]), 4).tolist()
        assert conf.shape == (32,) and set(acc.tolist()) <= {0.0, 1.0}


def test_other_arms_never_call_the_bonus(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "rac_bonus")
    pool, twins, config, policy = _setup()
    for arm in ("grpo", "rlcr", "rac_loss", "rac_loss_stated"):
        grpo_train(policy, pool, twins, ARMS[arm], config, seed=1)
    assert calls == []


def test_rlcr_reward_is_correct_plus_brier(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "_rewards")
    pool, twins, config, policy = _setup()
    grpo_train(policy, pool, twins, ARMS["rlcr"], config, seed=2)
    for args, _, reward in calls:
        scored = args[1]
        c = scored.correct.astype(float)
        want = c + np.where(scored.well_formed, 1 - (c - scored.confidence) ** 2, 0.0)
        np.testing.assert_allclose(reward.numpy(), want, rtol=0, atol=1e-12)


def test_stated_loss_arm_differentiates_the_stated_confidence(monkeypatch: pytest.MonkeyPatch) -> None:
    """rac_loss_stated's losses act on stated_confidence at the confidence position, with a graph."""
    calls = _spy(monkeypatch, "stated_confidence")
    pool, twins, config, policy = _setup()
    logs = grpo_train(policy, pool, twins, ARMS["rac_loss_stated"], config, seed=3)
    assert calls, "rac_loss_stated must use stated_confidence"
    for args, kwargs, out in calls:
        logits, positions, values = args
        assert (positions == 1).all() and out.requires_grad
        torch.testing.assert_close(values, torch.from_numpy(train.CONFIDENCE_VALUES).float(), equal_nan=True)
    assert all("pair_loss" in log and "rank_loss" in log for log in logs)

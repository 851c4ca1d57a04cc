"""Supervised warm-up, then GRPO with one of the arms' calibration methods (through the public API only).

One GRPO step: ``prompts`` prompts from the training pool, ``group_size`` sampled responses each
(``answer confidence <eos>``), group-normalised advantages, the clipped (PPO) objective, split in
``minibatches`` optimiser steps (so every step after the first is off-policy and the clip matters). The
arms differ in the reward and in extra loss terms:

- ``binary``: 1 for a correct, well-formed response, else 0 (GRPO).
- ``rlcr``: ``correct + brier_reward(stated confidence, correct)`` (RLCR; 0 Brier without a confidence).
- ``paper``: RAC's release: :func:`rac_losses.rewards.paper_reward` on the response written in the
  paper's schema (:func:`~rac_losses.demo.task.render_response`) plus :func:`rac_losses.rac_bonus`
  (ranking and clean-corrupted bonuses, the release's coefficients); each prompt's corrupted copy is a
  prompt of its own (its own group of rollouts and policy gradient), sharing a pair id with the clean
  prompt, level = severity / 5.
- loss terms (this package's formulation): :func:`rac_losses.rac_loss` / :func:`rac_losses.ranking_group_loss`
  and :func:`rac_losses.pairwise_corruption_loss` on a differentiable confidence: the answer token's
  probability and the entropy over the valid answers (``confidence="token"``), or the expected stated
  confidence (:func:`rac_losses.stated_confidence`, ``confidence="stated"``). For the pairwise term,
  ``twins`` of each prompt's responses are re-scored on a corrupted copy of the prompt's image: these rows
  are the corrupted twins of the row contract, taking part in the pairwise loss only.

Every arm of one seed starts from the same warm-up checkpoint and sees the same prompts, corruptions and
severities in the same order; only the rewards and losses differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rac_losses import (
    RACBonus,
    RACConfig,
    candidate_confidence,
    pairwise_corruption_loss,
    rac_bonus,
    rac_loss,
    ranking_group_loss,
    stated_confidence,
    token_stats_from_logits,
)
from rac_losses.demo.corrupt import TwinCache
from rac_losses.demo.policy import PolicyConfig, TinyVLPolicy, images_to_tensor
from rac_losses.demo.task import (
    ANSWER_POSITION,
    CANDIDATE_MASK,
    CONFIDENCE_POSITION,
    CONFIDENCE_TOKENS,
    CONFIDENCE_VALUES,
    EOS,
    MISSING,
    VOCAB,
    Batch,
    render_response,
    score_responses,
)
from rac_losses.rewards import brier_reward, paper_reward

__all__ = [
    "ARMS", "DEFAULT_ARMS", "PAPER_BONUS", "WARMUP_CONFIDENCE", "ArmSpec", "TrainConfig", "grpo_train",
    "make_policy", "paper_rewards", "response_stats", "warm_up",
]

CANDIDATES = torch.from_numpy(CANDIDATE_MASK)
VALUES = torch.from_numpy(CONFIDENCE_VALUES).float()
IS_CONFIDENCE = ~torch.isnan(VALUES)
#: The release's bonus coefficients and margins (``rac_bonus`` keywords).
PAPER_BONUS = dict(rank_coef=0.2, pair_coef=0.3, rank_margin=0.05, pair_margin=0.05, alpha=0.1)
#: The warm-up's confidence target distribution over the 11 values 0.0 ... 1.0, drawn whatever the answer:
#: weights exp(5 v), mean 0.85, 78% at 0.8 or above (overconfident, as base VLMs), yet every value keeps
#: some probability, so that RL can reach it (with only 0.8 / 0.9 / 1.0 taught, pilots stuck at 0.8).
WARMUP_CONFIDENCE = tuple(float(w) for w in np.exp(5 * np.arange(11) / 10) / np.exp(5 * np.arange(11) / 10).sum())
REWARDS = ("binary", "rlcr", "paper")


@dataclass(frozen=True)
class ArmSpec:
    """One arm: its reward and which loss terms are on, on which confidence.

    ``reward`` is one of :data:`REWARDS` (see the module docstring). ``rac`` holds the loss terms'
    coefficients, links and margins. ``confidence="token"``: the ranking loss on the answer token's
    log-prob (``rac_loss``, ``rank_confidence="mean_logprob"`` over the answer token) and the pairwise loss
    on the negative entropy over the question's valid answers (:func:`rac_losses.candidate_confidence`),
    with ``pair_anchor`` weighing ``-log P(answer is a valid candidate)`` on the corrupted twins (without it
    the policy was seen to answer corrupted images with a token of the wrong type). ``confidence="stated"``:
    both losses on :func:`rac_losses.stated_confidence` at the confidence position, well-formed rows only,
    with ``pair_anchor`` weighing ``-log P(a confidence token at the confidence position)`` on the
    well-formed twins: the renormalised expectation is blind to mass leaving the confidence tokens, and
    without the anchor 38% of severity-5 answers were malformed in a one-seed pilot. The comparison losses
    are shift-invariant: on the stated confidence nothing else sets its level under the binary reward (a
    pilot's stated confidence collapsed to 0.0 on every answer), so ``rac_loss_stated`` takes RLCR's reward.
    """

    description: str
    reward: str = "binary"
    rac: RACConfig = RACConfig(rank_coef=0.0, pair_coef=0.0)
    confidence: str = "token"
    pair_anchor: float = 0.0

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; expected one of {', '.join(REWARDS)}")
        if self.confidence not in ("token", "stated"):
            raise ValueError(f"unknown confidence {self.confidence!r}; expected 'token' or 'stated'")

    @property
    def uses_twins(self) -> bool:
        return self.rac.pair_coef > 0

    @property
    def uses_losses(self) -> bool:
        return self.rac.pair_coef > 0 or self.rac.rank_coef > 0

    @property
    def corrupted_prompts(self) -> bool:
        return self.reward == "paper"


_RANK = dict(rank_coef=1.0, rank_confidence="mean_logprob", rank_link="logistic", rank_scale=2.0)
_ANCHOR = 1.0
_PAIR = dict(pair_coef=0.5, pair_link="hinge", pair_scale=1.0, pair_margin=0.3, pair_severity_margin=0.0)
# on the stated confidence (a value in [0, 1]): hinges with the paper's margins (0.05, + 0.1 * severity / 5)
# the paper's coefficients too (0.2, 0.3)
_STATED = dict(rank_coef=0.2, rank_link="hinge", rank_scale=1.0, rank_margin=0.05,
               pair_coef=0.3, pair_link="hinge", pair_scale=1.0, pair_margin=0.05, pair_severity_margin=0.02)

ARMS: dict[str, ArmSpec] = {
    "grpo": ArmSpec("GRPO alone (binary reward; the stated confidence goes where the policy gradient takes it)"),
    "rlcr": ArmSpec("RLCR: GRPO on correct + Brier reward of the stated confidence", reward="rlcr"),
    "rac_paper": ArmSpec(
        "RAC as the paper: paper_reward + 0.2 ranking + 0.3 clean-corrupted bonus on the stated confidence "
        "(rac_bonus, margins 0.05, alpha 0.1), corrupted copies as prompts of their own",
        reward="paper",
    ),
    "rac_loss": ArmSpec(
        "this package's losses on token probabilities: ranking (answer log-prob) + pairwise (entropy over "
        "the valid answers, log-mass anchor)",
        rac=RACConfig(**_RANK, **_PAIR), pair_anchor=_ANCHOR,
    ),
    "rac_loss_stated": ArmSpec(
        "this package's losses on the differentiable stated confidence (stated_confidence): ranking + "
        "pairwise hinges with the paper's margins and coefficients, log-mass anchor on the confidence tokens, "
        "on RLCR's reward (the losses set the order of confidences, the Brier reward their level)",
        reward="rlcr", rac=RACConfig(**_STATED), confidence="stated", pair_anchor=_ANCHOR,
    ),
    "rank": ArmSpec("ablation: GRPO + the ranking loss on token probabilities", rac=RACConfig(**_RANK, pair_coef=0.0)),
    "pair": ArmSpec(
        "ablation: GRPO + the pairwise loss on the entropy over the valid answers (log-mass anchor)",
        rac=RACConfig(rank_coef=0.0, **_PAIR), pair_anchor=_ANCHOR,
    ),
}
#: The arms a default run trains (the ablations run with ``--arms``).
DEFAULT_ARMS = ("grpo", "rlcr", "rac_paper", "rac_loss", "rac_loss_stated")


@dataclass(frozen=True)
class TrainConfig:
    warmup_steps: int = 600
    warmup_batch: int = 64
    warmup_lr: float = 2e-3
    steps: int = 250
    prompts: int = 32
    group_size: int = 8
    minibatches: int = 2
    lr: float = 5e-4
    clip: float = 0.2
    twins: int = 2
    policy: PolicyConfig = field(default_factory=PolicyConfig)


def make_policy(seed: int, config: PolicyConfig) -> TinyVLPolicy:
    """A freshly initialised policy, deterministic in ``seed`` (global RNG state is restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyVLPolicy(config)


def warm_up(policy: TinyVLPolicy, pool: Batch, config: TrainConfig, seed: int, progress: Callable[[], None] | None = None) -> None:
    """Supervised next-token training on ``answer confidence <eos>`` for ``config.warmup_steps`` steps,
    the confidence drawn from :data:`WARMUP_CONFIDENCE` whatever the answer (the format, overconfident)."""
    rng = np.random.Generator(np.random.PCG64([seed, 7]))
    dev = next(policy.parameters()).device
    opt = torch.optim.Adam(policy.parameters(), lr=config.warmup_lr)
    weights = np.asarray(WARMUP_CONFIDENCE)
    policy.train()
    for _ in range(config.warmup_steps):
        idx = rng.integers(len(pool), size=config.warmup_batch)
        conf = torch.from_numpy(CONFIDENCE_TOKENS[rng.choice(11, size=len(idx), p=weights)])
        b = pool.subset(idx)
        visual = policy.encode(images_to_tensor(b.images, dev))
        target = torch.stack([torch.from_numpy(b.answers), conf, torch.full((len(idx),), EOS)], dim=1).to(dev)
        logits = policy.response_logits(visual, torch.from_numpy(b.questions).to(dev), target)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress()


def response_stats(policy: TinyVLPolicy, visual: torch.Tensor, questions: torch.Tensor, responses: torch.Tensor, index: torch.Tensor):
    """Token statistics of ``responses [n, R]`` (row ``i`` after prefix ``index[i]``) and their ``[n, R, V]`` logits."""
    logits = policy.response_logits(visual, questions, responses, index)
    return token_stats_from_logits(logits, responses), logits


def _grpo_advantages(reward: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    r = reward.view(groups, size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)


@lru_cache(maxsize=1 << 16)
def _paper_score(text: str, truth: str, step: int) -> tuple[float, float, float]:
    r = paper_reward(text, truth, is_multiple_choice=False, step=step)
    return r.score, r.reward_acc, MISSING if r.confidence is None else r.confidence


def paper_rewards(
    tokens: np.ndarray, lengths: np.ndarray, answers: np.ndarray, group: np.ndarray, pair: np.ndarray,
    level: np.ndarray, step: int,
) -> tuple[torch.Tensor, RACBonus]:
    """The paper arm's shaped rewards: ``paper_reward(...).score + rac_bonus(...).bonus`` per row.

    Args:
        tokens, lengths: ``[n, R]`` sampled responses and ``[n]`` their lengths.
        answers: ``[n]`` correct answer token ids.
        group: ``[n]`` prompt ids (a corrupted copy is a prompt of its own).
        pair: ``[n]`` the clean prompt's id, shared by its corrupted copy.
        level: ``[n]`` 0 on clean prompts, severity / 5 on corrupted ones.
        step: the GRPO step (``paper_reward``'s format-penalty warm-up).

    Returns:
        ``([n] float64 shaped rewards, the RACBonus)``; the bonuses compare ``reward_acc`` with the stated
        confidence as the paper reads it (:data:`~rac_losses.demo.task.MISSING` when none reads).
    """
    scored = [_paper_score(render_response(t, l), VOCAB[a], step) for t, l, a in zip(tokens, lengths.tolist(), answers.tolist())]
    score, acc, conf = (torch.tensor(col, dtype=torch.float64) for col in zip(*scored))
    out = rac_bonus(conf, acc, torch.from_numpy(group), torch.from_numpy(pair), torch.from_numpy(level), **PAPER_BONUS)
    return score + out.bonus, out


def _rewards(arm: ArmSpec, scored, roll, answers, prompts: int, level: np.ndarray, step: int, log: dict[str, float]) -> torch.Tensor:
    correct = torch.from_numpy(scored.correct.astype(np.float64))
    if arm.reward == "binary":
        return correct
    if arm.reward == "rlcr":
        well = torch.from_numpy(scored.well_formed)
        brier = brier_reward(torch.from_numpy(scored.confidence).clamp_min(0.0), correct)
        return correct + torch.where(well, brier, brier.new_zeros(()))
    g = len(answers) // prompts
    group = np.arange(len(answers)) // g
    shaped, out = paper_rewards(roll.tokens.cpu().numpy(), roll.lengths.cpu().numpy(), answers, group,
                                group % (prompts // 2), np.repeat(level, g), step)
    log.update({f"bonus/{k}": v for k, v in out.metrics.items() if k in ("rank/bonus_mean", "pair/bonus_mean", "pair/count")})
    return shaped


def grpo_train(
    policy: TinyVLPolicy,
    pool: Batch,
    twins: TwinCache,
    arm: ArmSpec,
    config: TrainConfig,
    seed: int,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """GRPO for ``config.steps`` steps with the arm's reward and loss terms. Returns per-step logs."""
    data_rng = np.random.Generator(np.random.PCG64([seed, 11]))  # same prompts / twins for every arm
    dev = next(policy.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed * 1000 + 13)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    g, p, k = config.group_size, config.prompts, config.twins
    logs: list[dict[str, float]] = []
    for step in range(config.steps):
        idx = data_rng.integers(len(pool), size=p)
        twin_kind = data_rng.integers(len(twins.corruptions), size=p)
        twin_sev = data_rng.integers(1, 6, size=p)
        twin_pick = np.stack([data_rng.permutation(g)[:k] for _ in range(p)])
        b = pool.subset(idx)
        corrupted = twins.get(idx, twin_kind, twin_sev) if arm.uses_twins or arm.corrupted_prompts else None
        images, level = b.images, np.zeros(p)
        copies = 2 if arm.corrupted_prompts else 1  # prompt j + p is prompt j's corrupted copy
        if arm.corrupted_prompts:
            images, level = np.concatenate([b.images, corrupted]), np.concatenate([level, twin_sev / 5.0])
        questions = torch.from_numpy(np.tile(b.questions, (copies, 1))).to(dev)
        answers, qtypes = np.tile(b.answers, copies), np.tile(b.qtypes, copies)
        policy.eval()
        with torch.no_grad():
            roll = policy.sample(policy.encode(images_to_tensor(images, dev)), questions, gen, group_size=g)
        scored = score_responses(roll.tokens.cpu().numpy(), roll.lengths.cpu().numpy(), np.repeat(answers, g), np.repeat(qtypes, g))
        step_log: dict[str, float] = {
            "reward_correct": float(scored.correct[: p * g].mean()), "well_formed": float(scored.well_formed.mean()),
        }
        reward = _rewards(arm, scored, roll, np.repeat(answers, g), copies * p, level, step, step_log).float().to(dev)
        step_log["reward"] = float(reward.mean())
        well_c = scored.well_formed[: p * g]
        step_log["stated_conf"] = float(scored.confidence[: p * g][well_c].mean()) if well_c.any() else float("nan")
        adv = _grpo_advantages(reward, copies * p, g)
        well_rows = torch.from_numpy(scored.well_formed).to(dev)
        qtype_rows = torch.from_numpy(np.repeat(qtypes, g)).to(dev)

        policy.train()
        for chunk in np.array_split(np.arange(p), config.minibatches):
            prompts = np.concatenate([chunk + c * p for c in range(copies)])
            rows = torch.from_numpy((prompts[:, None] * g + np.arange(g)[None]).reshape(-1)).to(dev)
            local_prompt = torch.arange(len(prompts), device=dev).repeat_interleave(g)
            vis = policy.encode(images_to_tensor(images[prompts], dev))
            stats, logits = response_stats(policy, vis, questions[prompts], roll.tokens[rows], local_prompt)
            mask = roll.mask[rows]
            ratio = torch.exp(stats.logprobs - roll.logprobs[rows])
            a = adv[rows].unsqueeze(1)
            pg = -torch.minimum(ratio * a, ratio.clamp(1 - config.clip, 1 + config.clip) * a)
            loss = ((pg * mask).sum(1) / mask.sum(1)).mean()
            if arm.uses_losses:
                batch = _Minibatch(
                    stats=stats, logits=logits, mask=mask, reward=reward[rows], group=local_prompt,
                    qtype=qtype_rows[rows], well=well_rows[rows], tokens=roll.tokens[rows], questions=questions[chunk],
                    twin_images=None if corrupted is None else corrupted[chunk],
                    twin_rows=torch.from_numpy((np.arange(len(chunk))[:, None] * g + twin_pick[chunk]).reshape(-1)).to(dev),
                    twin_severity=torch.from_numpy(np.repeat(twin_sev[chunk], k)).to(dev),
                )
                loss = loss + rac_terms(policy, arm, batch, step_log)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        logs.append(step_log)
        if progress is not None:
            progress(step_log)
    return logs


@dataclass
class _Minibatch:
    stats: object
    logits: torch.Tensor
    mask: torch.Tensor
    reward: torch.Tensor
    group: torch.Tensor
    qtype: torch.Tensor
    well: torch.Tensor
    tokens: torch.Tensor
    questions: torch.Tensor
    twin_images: np.ndarray | None
    twin_rows: torch.Tensor
    twin_severity: torch.Tensor


def _stated(logits: torch.Tensor) -> torch.Tensor:
    """``[n]`` expected stated confidence at the confidence position of ``[n, R, V]`` response logits."""
    positions = torch.full((logits.shape[0], 1), CONFIDENCE_POSITION, dtype=torch.long, device=logits.device)
    return stated_confidence(logits, positions, VALUES.to(logits.device))


def _answer_mask(mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(mask)
    out[:, ANSWER_POSITION] = mask[:, ANSWER_POSITION]
    return out


def rac_terms(policy: TinyVLPolicy, arm: ArmSpec, mb: _Minibatch, step_log: dict[str, float]) -> torch.Tensor:
    """The loss terms for one minibatch of whole groups (the batch form of the row contract).

    Clean rows: the sampled responses. Twin rows: ``mb.twin_rows``'s responses re-scored on the prompt's
    corrupted image; each shares a ``pair`` id with its clean row and carries the image's severity.
    """
    cfg, stats, n, dev = arm.rac, mb.stats, mb.mask.shape[0], mb.mask.device
    loss = mb.mask.new_zeros((), dtype=torch.float32)
    tw = mb.twin_rows
    if arm.uses_twins:
        tw_vis = policy.encode(images_to_tensor(mb.twin_images, dev))
        _, tw_logits = response_stats(policy, tw_vis, mb.questions, mb.tokens[tw], mb.group[tw])
        severity = torch.cat([torch.zeros(n, dtype=torch.long, device=dev), mb.twin_severity])
        pair = torch.cat([torch.arange(n, device=dev), tw])
    if arm.confidence == "stated":
        conf = _stated(mb.logits)
        if cfg.rank_coef > 0:
            rank = ranking_group_loss(conf, mb.reward, mb.group, valid=mb.well, link=cfg.rank_link,
                                      scale=cfg.rank_scale, margin=cfg.rank_margin)
            step_log["rank_loss"] = float(rank.detach())
            loss = loss + cfg.rank_coef * rank
        if arm.uses_twins:
            both = torch.cat([conf, _stated(tw_logits)])
            valid = torch.cat([mb.well, mb.well[tw]])
            if arm.pair_anchor > 0:  # keep the twins' mass on the confidence tokens (stated_confidence is blind to it)
                at = torch.log_softmax(tw_logits[:, CONFIDENCE_POSITION].float(), -1)
                anchor = -candidate_confidence(at, IS_CONFIDENCE.to(dev).expand_as(at), method="log_mass")[mb.well[tw]].mean()
                anchor = torch.nan_to_num(anchor)  # no well-formed twin: no anchor
                step_log["anchor"] = float(anchor.detach())
                loss = loss + arm.pair_anchor * anchor
            pl = pairwise_corruption_loss(both, severity, pair, valid=valid, link=cfg.pair_link, scale=cfg.pair_scale,
                                          margin=cfg.pair_margin, severity_margin=cfg.pair_severity_margin,
                                          detach_clean=cfg.pair_detach_clean)
            step_log["pair_loss"] = float(pl.detach())
            loss = loss + cfg.pair_coef * pl
        return loss
    if cfg.rank_coef > 0:
        out = rac_loss(stats.logprobs, _answer_mask(mb.mask), mb.reward, mb.group, token_entropy=stats.entropy,
                       config=replace(cfg, pair_coef=0.0))
        step_log["rank_loss"] = out.metrics["rank_loss"]
        loss = loss + out.loss
    if arm.uses_twins:
        candidates = CANDIDATES.to(dev)[torch.cat([mb.qtype, mb.qtype[tw]])]
        answer_logprobs = torch.log_softmax(torch.cat([mb.logits[:, ANSWER_POSITION], tw_logits[:, ANSWER_POSITION]]).float(), -1)
        conf = candidate_confidence(answer_logprobs, candidates, method="neg_entropy")
        if arm.pair_anchor > 0:
            anchor = -candidate_confidence(answer_logprobs[n:], candidates[n:], method="log_mass").mean()
            step_log["anchor"] = float(anchor.detach())
            loss = loss + arm.pair_anchor * anchor
        pl = pairwise_corruption_loss(
            conf, severity, pair, link=cfg.pair_link, scale=cfg.pair_scale, margin=cfg.pair_margin,
            severity_margin=cfg.pair_severity_margin, detach_clean=cfg.pair_detach_clean,
        )
        step_log["pair_loss"] = float(pl.detach())
        loss = loss + cfg.pair_coef * pl
    return loss

"""Supervised warm-up, then GRPO with or without the RAC losses (through the package's public API only).

One GRPO step: ``prompts`` prompts from the training pool, ``group_size`` sampled responses each, binary
correctness reward, group-normalised advantages, the clipped (PPO) objective on the clean rows, split in
``minibatches`` optimiser steps (so every step after the first is off-policy and the clip matters). When an
arm uses the pairwise loss, ``twins`` of each prompt's responses are re-scored on a corrupted copy of the
prompt's image (one corruption and severity per prompt, drawn from the data stream): these rows are the
corrupted twins of the row contract, taking part in the pairwise loss only.

Every arm of one seed starts from the same warm-up checkpoint and sees the same prompts, corruptions and
severities in the same order; only the losses differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rac_losses import RACConfig, candidate_confidence, pairwise_corruption_loss, rac_loss, token_stats_from_logits
from rac_losses.demo.corrupt import TwinCache
from rac_losses.demo.policy import PolicyConfig, Rollout, TinyVLPolicy, images_to_tensor
from rac_losses.demo.task import CANDIDATE_MASK, EOS, QUESTION_LEN, Batch, score_responses

__all__ = ["ARMS", "ArmSpec", "TrainConfig", "grpo_train", "warm_up", "make_policy", "response_stats"]

CANDIDATES = torch.from_numpy(CANDIDATE_MASK)


@dataclass(frozen=True)
class ArmSpec:
    """One arm: which RAC terms are on, and with which confidence.

    ``pair_confidence`` is a :func:`rac_losses.sequence_confidence` method (computed on the sampled
    response, via :func:`rac_losses.rac_loss`), or ``"candidate_neg_entropy"`` (the negative entropy of the
    policy's distribution over the question's valid answers, :func:`rac_losses.candidate_confidence`,
    fed to :func:`rac_losses.pairwise_corruption_loss`). ``pair_anchor`` (candidate confidence only) weighs
    ``-log P(answer is a valid candidate)`` on the corrupted twins (``method="log_mass"``): the entropy over
    the candidates is blind to mass outside them, and without the anchor the policy was seen to answer
    corrupted images with a token of the wrong type ("no" to "how many shapes").
    """

    description: str
    rac: RACConfig = RACConfig(rank_coef=0.0, pair_coef=0.0)
    pair_confidence: str = "candidate_neg_entropy"
    pair_anchor: float = 0.0

    @property
    def uses_twins(self) -> bool:
        return self.rac.pair_coef > 0

    @property
    def uses_rac(self) -> bool:
        return self.rac.pair_coef > 0 or self.rac.rank_coef > 0


_RANK = dict(rank_coef=1.0, rank_confidence="mean_logprob", rank_link="logistic", rank_scale=2.0)
_ANCHOR = 1.0
_PAIR = dict(pair_coef=0.5, pair_link="hinge", pair_scale=1.0, pair_margin=0.3, pair_severity_margin=0.0)

ARMS: dict[str, ArmSpec] = {
    "grpo": ArmSpec("GRPO alone"),
    "rank": ArmSpec("GRPO + ranking loss", RACConfig(**_RANK, pair_coef=0.0)),
    "pair": ArmSpec(
        "GRPO + pairwise corruption loss (confidence: entropy over the valid answers)",
        RACConfig(rank_coef=0.0, **_PAIR),
        pair_anchor=_ANCHOR,
    ),
    "rac": ArmSpec(
        "GRPO + both (RAC)",
        RACConfig(**_RANK, **_PAIR),
        pair_anchor=_ANCHOR,
    ),
    "pair_logprob": ArmSpec(
        "GRPO + pairwise loss on the sampled response's mean log-prob (ablation)",
        RACConfig(rank_coef=0.0, pair_coef=0.5, pair_confidence="mean_logprob", pair_link="logistic", pair_scale=1.0),
        pair_confidence="mean_logprob",
    ),
}


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
    """Supervised next-token training on ``answer <eos>`` for ``config.warmup_steps`` steps."""
    rng = np.random.Generator(np.random.PCG64([seed, 7]))
    dev = next(policy.parameters()).device
    opt = torch.optim.Adam(policy.parameters(), lr=config.warmup_lr)
    policy.train()
    for _ in range(config.warmup_steps):
        idx = rng.integers(len(pool), size=config.warmup_batch)
        b = pool.subset(idx)
        visual = policy.encode(images_to_tensor(b.images, dev))
        target = torch.stack([torch.from_numpy(b.answers), torch.full((len(idx),), EOS)], dim=1).to(dev)
        logits = policy.response_logits(visual, torch.from_numpy(b.questions).to(dev), target)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress()


def response_stats(policy: TinyVLPolicy, visual: torch.Tensor, questions: torch.Tensor, responses: torch.Tensor, index: torch.Tensor):
    """Token statistics of ``responses [n, R]`` (row ``i`` after prefix ``index[i]``), and ``[n, V]``
    logits at the answer position (the first response token)."""
    logits = policy.response_logits(visual, questions, responses, index)
    return token_stats_from_logits(logits, responses), logits[:, 0]


def _grpo_advantages(reward: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    r = reward.view(groups, size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).reshape(-1)


def grpo_train(
    policy: TinyVLPolicy,
    pool: Batch,
    twins: TwinCache,
    arm: ArmSpec,
    config: TrainConfig,
    seed: int,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """GRPO for ``config.steps`` steps, with the arm's RAC terms. Returns per-step logs."""
    data_rng = np.random.Generator(np.random.PCG64([seed, 11]))  # same prompts / twins for every arm
    dev = next(policy.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed * 1000 + 13)
    opt = torch.optim.Adam(policy.parameters(), lr=config.lr)
    g, p, k = config.group_size, config.prompts, config.twins
    logs: list[dict[str, float]] = []
    for _ in range(config.steps):
        idx = data_rng.integers(len(pool), size=p)
        twin_kind = data_rng.integers(len(twins.corruptions), size=p)
        twin_sev = data_rng.integers(1, 6, size=p)
        twin_pick = np.stack([data_rng.permutation(g)[:k] for _ in range(p)])
        b = pool.subset(idx)
        questions = torch.from_numpy(b.questions).to(dev)
        policy.eval()
        with torch.no_grad():
            roll = policy.sample(policy.encode(images_to_tensor(b.images, dev)), questions, gen, group_size=g)
        correct, well, _ = score_responses(
            roll.tokens.cpu().numpy(), roll.lengths.cpu().numpy(), np.repeat(b.answers, g), np.repeat(b.qtypes, g)
        )
        reward = torch.from_numpy(correct.astype(np.float32)).to(dev)
        adv = _grpo_advantages(reward, p, g)
        qtype_rows = torch.from_numpy(np.repeat(b.qtypes, g)).to(dev)
        corrupted = twins.get(idx, twin_kind, twin_sev) if arm.uses_twins else None

        policy.train()
        step_log: dict[str, float] = {"reward": float(reward.mean()), "well_formed": float(well.mean())}
        for chunk in np.array_split(np.arange(p), config.minibatches):
            rows = torch.from_numpy((chunk[:, None] * g + np.arange(g)[None]).reshape(-1)).to(dev)
            local_prompt = torch.arange(len(chunk), device=dev).repeat_interleave(g)
            vis = policy.encode(images_to_tensor(b.images[chunk], dev))
            stats, ans_logits = response_stats(policy, vis, questions[chunk], roll.tokens[rows], local_prompt)
            mask = roll.mask[rows]
            ratio = torch.exp(stats.logprobs - roll.logprobs[rows])
            a = adv[rows].unsqueeze(1)
            pg = -torch.minimum(ratio * a, ratio.clamp(1 - config.clip, 1 + config.clip) * a)
            loss = ((pg * mask).sum(1) / mask.sum(1)).mean()
            if arm.uses_rac:
                batch = _Minibatch(
                    stats=stats, ans_logits=ans_logits, mask=mask, reward=reward[rows], group=local_prompt,
                    qtype=qtype_rows[rows], tokens=roll.tokens[rows], questions=questions[chunk],
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
    ans_logits: torch.Tensor
    mask: torch.Tensor
    reward: torch.Tensor
    group: torch.Tensor
    qtype: torch.Tensor
    tokens: torch.Tensor
    questions: torch.Tensor
    twin_images: np.ndarray | None
    twin_rows: torch.Tensor
    twin_severity: torch.Tensor


def rac_terms(policy: TinyVLPolicy, arm: ArmSpec, mb: _Minibatch, step_log: dict[str, float]) -> torch.Tensor:
    """The RAC part of the loss for one minibatch of whole groups (the batch form of the row contract).

    Clean rows: the sampled responses. Twin rows: ``mb.twin_rows``'s responses re-scored on the prompt's
    corrupted image; each shares a ``pair`` id with its clean row and carries the image's severity.
    """
    cfg = arm.rac
    stats = mb.stats
    if not arm.uses_twins:
        out = rac_loss(stats.logprobs, mb.mask, mb.reward, mb.group, token_entropy=stats.entropy, config=cfg)
        step_log.update({k: v for k, v in out.metrics.items() if k in ("rank_loss", "rank_satisfied")})
        return out.loss
    n, tw, dev = mb.mask.shape[0], mb.twin_rows, mb.mask.device
    tw_vis = policy.encode(images_to_tensor(mb.twin_images, dev))
    tw_stats, tw_ans_logits = response_stats(policy, tw_vis, mb.questions, mb.tokens[tw], mb.group[tw])
    severity = torch.cat([torch.zeros(n, dtype=torch.long, device=dev), mb.twin_severity])
    pair = torch.cat([torch.arange(n, device=dev), tw])
    if arm.pair_confidence == "candidate_neg_entropy":
        out = rac_loss(stats.logprobs, mb.mask, mb.reward, mb.group, token_entropy=stats.entropy, config=replace(cfg, pair_coef=0.0))
        candidates = CANDIDATES.to(dev)[torch.cat([mb.qtype, mb.qtype[tw]])]
        answer_logprobs = torch.log_softmax(torch.cat([mb.ans_logits, tw_ans_logits]).float(), -1)
        conf = candidate_confidence(answer_logprobs, candidates, method="neg_entropy")
        anchor = conf.new_zeros(())
        if arm.pair_anchor > 0:
            anchor = -candidate_confidence(answer_logprobs[n:], candidates[n:], method="log_mass").mean()
            step_log["anchor"] = float(anchor.detach())
        pair_loss = pairwise_corruption_loss(
            conf, severity, pair, link=cfg.pair_link, scale=cfg.pair_scale, margin=cfg.pair_margin,
            severity_margin=cfg.pair_severity_margin, detach_clean=cfg.pair_detach_clean,
        )
        step_log["pair_loss"] = float(pair_loss.detach())
        step_log["conf_gap"] = float(conf[:n].detach().mean() - conf[n:].detach().mean())
        if cfg.rank_coef > 0:
            step_log["rank_loss"] = out.metrics["rank_loss"]
        return out.loss + cfg.pair_coef * pair_loss + arm.pair_anchor * anchor
    out = rac_loss(
        torch.cat([stats.logprobs, tw_stats.logprobs]), torch.cat([mb.mask, mb.mask[tw]]),
        torch.cat([mb.reward, mb.reward[tw]]), torch.cat([mb.group, mb.group[tw]]),
        token_entropy=torch.cat([stats.entropy, tw_stats.entropy]), pair=pair, severity=severity, config=cfg,
    )
    step_log.update({k: v for k, v in out.metrics.items() if k in ("rank_loss", "pair_loss", "conf_gap")})
    return out.loss

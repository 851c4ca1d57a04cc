"""The policy: sampled log-probs equal a recomputation, and prefix sharing equals a plain causal pass."""

from __future__ import annotations

import torch

from rac_losses.demo.policy import PolicyConfig, TinyVLPolicy, images_to_tensor
from rac_losses.demo.task import EOS, PAD, QUESTION_LEN, generate
from rac_losses.demo.train import make_policy


def _setup(seed: int = 0, n: int = 6):
    policy = make_policy(seed, PolicyConfig())
    policy.eval()
    b = generate(n, seed)
    return policy, policy.encode(images_to_tensor(b.images)), torch.from_numpy(b.questions)


def test_sampled_logprobs_equal_recomputation() -> None:
    policy, visual, questions = _setup()
    g = 4
    with torch.no_grad():
        roll = policy.sample(visual, questions, torch.Generator().manual_seed(1), group_size=g)
        index = torch.arange(questions.shape[0]).repeat_interleave(g)
        # 1) teacher forcing through the shared-prefix path
        logits = policy.response_logits(visual, questions, roll.tokens, index)
        lp = torch.log_softmax(logits, -1).gather(2, roll.tokens.unsqueeze(2)).squeeze(2)
        # 2) one plain causal pass over [visual, question, response] per row
        full = policy(visual[index], torch.cat([questions[index], roll.tokens[:, :-1]], 1))[:, QUESTION_LEN - 1 :]
        lp_full = torch.log_softmax(full, -1).gather(2, roll.tokens.unsqueeze(2)).squeeze(2)
    assert torch.allclose(torch.where(roll.mask, lp, 0.0), roll.logprobs, atol=1e-5)
    assert torch.allclose(torch.where(roll.mask, lp_full, 0.0), roll.logprobs, atol=1e-5)
    assert torch.allclose(logits, full, atol=1e-5)


def test_rollout_structure() -> None:
    policy, visual, questions = _setup()
    roll = policy.sample(visual, questions, torch.Generator().manual_seed(2), group_size=3)
    n, r = roll.tokens.shape
    assert n == 3 * questions.shape[0] and r == policy.config.max_response
    for tokens, mask, length in zip(roll.tokens.tolist(), roll.mask.tolist(), roll.lengths.tolist()):
        assert mask == [True] * length + [False] * (r - length)
        assert all(t == PAD for t in tokens[length:])
        assert EOS not in tokens[: length - 1]  # stops at the first <eos>
        assert length == r or tokens[length - 1] == EOS
    assert (roll.logprobs[~roll.mask] == 0).all() and (roll.logprobs[roll.mask] <= 0).all()


def test_sampling_is_seeded() -> None:
    policy, visual, questions = _setup()
    a = policy.sample(visual, questions, torch.Generator().manual_seed(5), group_size=8)
    b = policy.sample(visual, questions, torch.Generator().manual_seed(5), group_size=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)


def test_greedy_is_the_argmax() -> None:
    policy, visual, questions = _setup()
    roll = policy.sample(visual, questions, None, greedy=True)
    with torch.no_grad():
        first = policy.prefix(visual, questions)[1]
    assert torch.equal(roll.tokens[:, 0], first.argmax(-1))


def test_make_policy_is_deterministic_and_keeps_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_policy(7, PolicyConfig())
    after = torch.rand(1)
    b = make_policy(7, PolicyConfig())
    assert torch.equal(before, after)
    for (_, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y)
    assert isinstance(a, TinyVLPolicy)


def test_kept_distribution_equals_teacher_forcing() -> None:
    policy, visual, questions = _setup()
    with torch.no_grad():
        roll = policy.sample(visual, questions, torch.Generator().manual_seed(3), group_size=2, keep_dist=True)
        index = torch.arange(questions.shape[0]).repeat_interleave(2)
        logp = torch.log_softmax(policy.response_logits(visual, questions, roll.tokens, index), -1)
    assert roll.dist.shape == (roll.tokens.shape[0], policy.config.max_response, logp.shape[-1])
    assert torch.allclose(roll.dist[roll.mask], logp[roll.mask], atol=1e-5)
    assert policy.sample(visual, questions, None, greedy=True).dist is None

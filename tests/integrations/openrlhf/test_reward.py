"""The ``--reward.remote_url`` file: the paper's reward (reward formulation), RLCR's (loss formulation)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rac_losses.integrations.openrlhf import reward
from rac_losses.integrations.openrlhf.options import ENV_VAR, PAPER_ENV_VAR, paper_to_env, settings_to_env
from rac_losses.integrations.openrlhf.paper import PaperSettings, RACLabel
from rac_losses.integrations.openrlhf.reward import extract_answer, is_correct, response_text, verbalized_reward_func
from rac_losses.integrations.settings import RACSettings
from rac_losses.rewards import RESPONSE_SCHEMA, paper_reward


@pytest.fixture
def loss_run(monkeypatch):
    """The environment of a ``--rac.formulation loss`` run."""
    monkeypatch.delenv(PAPER_ENV_VAR, raising=False)
    monkeypatch.setenv(ENV_VAR, settings_to_env(RACSettings())[ENV_VAR])


reward_func = verbalized_reward_func

PROMPT = "<|im_start|>user\nSolve and write \\boxed{7}-style answers.<|im_end|>\n<|im_start|>assistant\n"


def one(response: str, label: str, prompt: str = PROMPT) -> dict:
    out = reward_func([prompt + response], [prompt], [label])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].shape == out["scores"].shape == (1,)
    return {"reward": float(out["rewards"][0]), "score": float(out["scores"][0]),
            **{k: float(v[0]) for k, v in out["extra_logs"].items()}}


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        # correct and confident: 1 + (1 - 0.1^2)
        ("so \\boxed{3}<confidence>0.9</confidence>", "3", dict(reward=1.99, score=1, correct=1, confidence=0.9, confidence_valid=1, brier=0.99)),
        # wrong and confident: 0 + (1 - 0.9^2)
        ("so \\boxed{4}<confidence>0.9</confidence>", "3", dict(reward=0.19, score=0, correct=0, confidence=0.9, confidence_valid=1, brier=0.19)),
        # wrong and unsure, as a percentage
        ("<answer>4</answer> <confidence>10%</confidence>", "3", dict(reward=0.99, score=0, correct=0, confidence=0.1, brier=0.99)),
        # correct without a confidence: no Brier part
        ("\\boxed{3}", "3", dict(reward=1.0, score=1, correct=1, confidence=-1.0, confidence_valid=0, brier=0.0)),
        # a confidence inside the answer tag is not part of the answer
        ("<answer>42 <confidence>0.9</confidence></answer>", "42", dict(reward=1.99, score=1, correct=1, confidence=0.9, confidence_valid=1, brier=0.99)),
        # malformed confidences are not read
        ("\\boxed{3}<confidence>high</confidence>", "3", dict(reward=1.0, confidence_valid=0)),
        ("\\boxed{3}<confidence>85</confidence>", "3", dict(reward=1.0, confidence_valid=0)),
        ("\\boxed{3}<confidence>0.9</confidence><confidence>1.7</confidence>", "3", dict(reward=1.0, confidence_valid=0)),
        # no answer at all: wrong (the prompt's \boxed{7} is not the response's)
        ("I think it is 7.<confidence>0.2</confidence>", "7", dict(correct=0, reward=0.96)),
    ],
)
def test_reward_cases(response, label, expected):
    got = one(response, label)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_answer_rules():
    assert extract_answer("a \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"  # last, braces balanced
    assert extract_answer("\\boxed{unclosed") is None
    assert extract_answer("<answer> B </answer> and <ANSWER>C</ANSWER>") == "C"
    assert is_correct("\\boxed{ $0.50$ }", ".5")  # numbers compare as numbers
    assert is_correct("<answer>Paris.</answer>", "paris")  # case, trailing period
    assert is_correct("\\boxed{x + 1}", "\\boxed{x+1}")  # the label's own \boxed{} is read too
    assert not is_correct("\\boxed{1/2}", "0.5")  # no symbolic maths: documented
    assert not is_correct("\\boxed{}", "0")


def test_vlm_query_with_expanded_image_tokens():
    # OpenRLHF decodes prompt + response tokens: a VLM prompt's one image pad comes back expanded
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is \\boxed{?}<|im_end|>\n<|im_start|>assistant\n"
    query = prompt.replace("<|image_pad|>", "<|image_pad|>" * 4) + "\\boxed{5}<confidence>1</confidence><|im_end|>"
    response = response_text(query, prompt)
    assert response.strip() == "\\boxed{5}<confidence>1</confidence><|im_end|>"  # not the prompt's \boxed{?}
    out = reward_func([query], [prompt], ["5"])
    assert float(out["rewards"][0]) == 2.0


def test_through_openrlhfs_own_loader(loss_run):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(remote_rm_url=reward.__file__)
    (out,) = asyncio.run(executor._fetch_rewards_via_func([PROMPT + "\\boxed{2}<confidence>0.5</confidence>"], [PROMPT], ["2"]))
    torch.testing.assert_close(out["rewards"], torch.tensor([1.75]))
    torch.testing.assert_close(out["extra_logs"]["confidence"], torch.tensor([0.5]))


def test_mismatched_lists():
    with pytest.raises(ValueError, match="differ in length"):
        reward_func(["a", "b"], ["a"], ["1", "2"])


VL_PROMPT = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Which? (A) 1 (B) 2" + RESPONSE_SCHEMA + "<|im_end|>\n<|im_start|>assistant\n"
GOOD = "<think>\nsee\n</think>\n<answer>B</answer>\n<confidence>0.8</confidence>"


@pytest.mark.parametrize("response", [GOOD, "<answer>A</answer><confidence>0.3</confidence> and more", "B, I think", GOOD.replace("0.8", "x")])
@pytest.mark.parametrize("step", [None, 0, 4, 50])
def test_paper_reward_through_openrlhfs_own_loader(response, step, monkeypatch):
    # a reward-formulation run (the default): OpenRLHF's executor loads the file; one sample per call; the
    # decoded query carries the end-of-turn token, which the release's decoded text does not
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    settings = PaperSettings.from_options({"reward.tail_penalty_coef": "0.1", "reward.format_warmup_steps": "8"})
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv(PAPER_ENV_VAR, paper_to_env(settings)[PAPER_ENV_VAR])
    executor = SingleTurnAgentExecutor(remote_rm_url=reward.__file__)
    query = VL_PROMPT.replace("<|image_pad|>", "<|image_pad|>" * 4) + response + "<|im_end|>"
    label = RACLabel("B", step=step, choices=["1", "2"])
    (out,) = asyncio.run(executor._fetch_rewards_via_func([query], [VL_PROMPT], [label]))
    want = paper_reward(response, "B", is_multiple_choice=True, choices=["1", "2"], step=step,
                        format_coef=0.3, format_warmup_steps=8, format_warmup_start=1.0, tail_penalty_coef=0.1)
    logs = out["extra_logs"]
    assert float(out["rewards"][0]) == pytest.approx(want.score) and float(out["scores"][0]) == want.acc
    assert float(logs["acc"][0]) == want.acc and float(logs["reward_acc"][0]) == want.reward_acc
    assert float(logs["confidence"][0]) == pytest.approx(-1.0 if want.confidence is None else want.confidence)
    assert float(logs["format_ok"][0]) == float(want.format_ok)
    assert float(logs["score_raw"][0]) == pytest.approx(want.score_raw)
    if response == GOOD:
        assert want.format_ok and float(out["rewards"][0]) == 1.0  # the end-of-turn token is not a tail


def test_free_form_rows_and_defaults_outside_rac_openrlhf(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv(PAPER_ENV_VAR, raising=False)
    response = "<think>x</think><answer>0.50</answer><confidence>0.6</confidence>"
    out = reward.reward_func([PROMPT + response], [PROMPT], [RACLabel("0.5", multiple_choice=False)])
    assert float(out["extra_logs"]["acc"][0]) == 1.0 and float(out["rewards"][0]) == 1.0
    out = reward.reward_func([PROMPT + response], [PROMPT], ["0.5"])  # the release's default: multiple choice
    assert float(out["extra_logs"]["format_ok"][0]) == 0.0

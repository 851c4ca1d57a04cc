"""The paper's reward hook for verl: through verl's own custom-reward loading and its naive reward manager.

Expected values are :func:`rac_losses.rewards.paper_reward`'s (tested against the release's rules in the
core's tests); here: that verl hands the hook the row's options, step and answer options, and keeps what it
returns as the row's reward and extra info.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frameworks import require

require("verl")

from rac_losses.integrations.verl import paper_reward as hook  # noqa: E402
from rac_losses.rewards import paper_reward  # noqa: E402

RIGHT = "<think>t</think><answer>B</answer><confidence>0.8</confidence>"
OFF_SCHEMA = "<think>t</think>B<confidence>0.8</confidence>"  # no <answer> tag: format penalty


class ByteTokenizer:
    """A stand-in tokenizer (no model can be downloaded): one token id per character."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids)


def _custom_fn(**reward_kwargs):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    hook_cfg = {"path": "pkg://rac_losses.integrations.verl.paper_reward", "name": "compute_score",
                "reward_kwargs": reward_kwargs}
    return get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": hook_cfg}}))


def _score_with_verls_manager(fn, solution: str, ground_truth: str, extra_info: dict) -> dict:
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    tok = ByteTokenizer()
    ids = torch.tensor([tok.encode(solution) + [0, 0]])  # right padding
    data = DataProto.from_dict(
        tensors={"responses": ids, "attention_mask": torch.tensor([[1] * len(solution) + [0, 0]])},
        non_tensors={"data_source": np.array(["mmmu"], dtype=object),
                     "reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
                     "extra_info": np.array([dict(extra_info)], dtype=object)},
    )
    manager = NaiveRewardManager(OmegaConf.create({}), tok, fn)
    return manager.loop.run_until_complete(manager.run_single(data))  # the loop verl bound it to


@pytest.mark.parametrize(("solution", "step"), [(RIGHT, None), (OFF_SCHEMA, 0), (OFF_SCHEMA, 5), (OFF_SCHEMA, 30)])
def test_through_verls_naive_reward_manager(solution, step):
    fn = _custom_fn(tail_penalty_coef=0.1)
    info = {"choices": ["cat", "dog"]} | ({} if step is None else {"global_steps": step})
    out = _score_with_verls_manager(fn, solution, "B", info)
    want = paper_reward(solution, "B", choices=["cat", "dog"], step=step, tail_penalty_coef=0.1)
    assert out["reward_score"] == pytest.approx(want.score, abs=1e-12)
    extra = out["reward_extra_info"]
    assert extra == pytest.approx({
        "score": want.score, "score_raw": want.score_raw, "acc": want.acc, "reward_acc": want.reward_acc,
        "confidence": 0.8, "format_ok": float(want.format_ok),
    }, abs=1e-12)
    if solution == OFF_SCHEMA:  # the format penalty warms up from 1.0 to 0.3 over 10 steps
        assert extra["score_raw"] == pytest.approx(-(1.0 + (0.3 - 1.0) * min(step, 10) / 10), abs=1e-12)


def test_row_options_override_and_missing_confidence():
    free_form = hook.compute_score("x", "<think>t</think><answer>42</answer>", "42", {"is_multiple_choice": False},
                                   multiple_choice=True)
    assert free_form["acc"] == 1.0 and free_form["confidence"] == -1.0 and free_form["format_ok"] == 0.0
    assert all(type(v) is float for v in free_form.values())


def test_an_unknown_option_is_named():
    with pytest.raises(TypeError, match="unknown paper reward option.*format_reward_coef"):
        hook.compute_score("x", RIGHT, "B", None, format_reward_coef=0.3)

"""The ``rac_single_turn`` agent loop, driven by a fake server manager that returns fixed response ids.

The loop is built the way verl's agent-loop worker builds it (``hydra.utils.instantiate`` of the registry
entry), with a tiny Qwen2.5-VL processor; the twins' vision inputs are recomputed by verl's own
``AgentLoopWorker._compute_multi_modal_inputs``, as the v1 worker does for every stored row.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from frameworks import require

verl = require("verl")

import hydra  # noqa: E402  (verl's dependencies: after verl is known to be importable)
from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.agent_loop import (  # noqa: E402
    AgentLoopOutput,
    AgentLoopWorker,
    DictConfigWrap,
    _agent_loop_registry,
)
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from rac_losses.corruption import CorruptionPolicy  # noqa: E402
from rac_losses.integrations.verl import agent_loop, reward  # noqa: E402
from tiny_vl_processor import tiny_vl_processor  # noqa: E402

RESPONSE = "#### 42 <confidence>0.8</confidence>"  # reward hook on gsm8k with answer 42: 1 + (1 - 0.2^2)
RESPONSE_LOGPROBS = [-0.5, -0.25, -1.0, -0.125, -0.75, -0.0625]
TWINS = {
    "pair_coef": 0.1,
    "corruption": {"names": ["gaussian_noise", "defocus_blur", "patch_mask"], "severities": [1, 3, 5]},
}


class FakeServerManager:
    """Answers every request with the same response ids and log-probs."""

    def __init__(self, response_ids: list[int]) -> None:
        self.response_ids = response_ids

    async def generate(self, **request: Any) -> TokenOutput:
        return TokenOutput(token_ids=list(self.response_ids), log_probs=list(RESPONSE_LOGPROBS))


class ImageBlocksDataset:
    """Stands in for ``RLHFDataset`` (whose vision extraction needs ``qwen_vl_utils``, not installed here):
    the PIL images of the messages' image blocks, in order."""

    @classmethod
    async def process_multi_modal_info(cls, messages, image_patch_size, config):
        images = [
            block["image"]
            for message in messages
            if isinstance(message["content"], list)
            for block in message["content"]
            if block["type"] == "image"
        ]
        return images or None, None, None


@pytest.fixture(scope="module")
def processor():
    return tiny_vl_processor()


def response_ids(tokenizer) -> list[int]:
    """:data:`RESPONSE` then EOS."""
    return tokenizer.encode(RESPONSE, add_special_tokens=False) + [tokenizer.eos_token_id]


def make_config(rac: dict[str, Any] | None) -> Any:
    """The parts of verl's trainer config the loop reads, in struct mode like the real one."""
    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"prompt_length": 512, "response_length": 16}},
            "data": {"apply_chat_template_kwargs": {}, "mm_processor_kwargs": {}},
            "reward": {"custom_reward_function": {"path": f"pkg://{reward.__name__}", "name": "compute_score"}},
            **({"rac": rac} if rac is not None else {}),
        }
    )
    OmegaConf.set_struct(config, True)
    return config


def make_loop(config: Any, processor: Any, name: str = agent_loop.AGENT_LOOP_NAME):
    """Instantiate a registered loop exactly as ``AgentLoopWorker._run_agent_loop`` does."""
    return hydra.utils.instantiate(
        config=_agent_loop_registry[name],
        trainer_config=DictConfigWrap(config=config),
        server_manager=FakeServerManager(response_ids(processor.tokenizer)),
        tokenizer=processor.tokenizer,
        processor=processor,
        hf_model_type="qwen2_5_vl",
        dataset_cls=ImageBlocksDataset,
        data_config=DictConfigWrap(config.data),
    )


def image(seed: int, size: tuple[int, int] = (32, 24)) -> Image.Image:
    """A random RGB image, ``size = (width, height)`` in multiples of 4 (no resize by the processor)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def prompt(*images: Image.Image) -> list[dict[str, Any]]:
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": "t10 t11 t12"}]
    return [{"role": "user", "content": content}]


def run(config, processor, raw_prompt, uid="u0", session_id=0, name=agent_loop.AGENT_LOOP_NAME):
    async def go():
        loop = make_loop(config, processor, name)
        sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}
        return await loop.run(sampling, raw_prompt=raw_prompt, uid=uid, session_id=session_id, global_steps=1, index=0)

    return asyncio.run(go())


def mm_inputs(output: AgentLoopOutput, processor) -> dict[str, torch.Tensor]:
    """``multi_modal_inputs`` for one stored row, by verl's own worker code."""
    worker = SimpleNamespace(processor=processor, tokenizer=processor.tokenizer)
    input_ids = torch.tensor(output.prompt_ids + output.response_ids)[None]
    return AgentLoopWorker._compute_multi_modal_inputs(worker, output, input_ids)


def test_registered_under_its_name():
    assert _agent_loop_registry["rac_single_turn"]["_target_"].endswith("agent_loop.RACSingleTurnAgentLoop")
    assert issubclass(agent_loop.RACSingleTurnAgentLoop, SingleTurnAgentLoop)


def test_twin_shares_tokens_and_grid_with_a_corrupted_image(processor):
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 1.0}})
    images = [image(1), image(2, (16, 20))]
    outputs = run(config, processor, prompt(*images), uid="u7", session_id=3)
    assert isinstance(outputs, list) and len(outputs) == 2
    twin, clean = outputs
    for field in ("prompt_ids", "response_ids", "response_mask", "response_logprobs", "num_turns"):
        assert getattr(twin, field) == getattr(clean, field), field
    assert clean.response_ids == response_ids(processor.tokenizer) and clean.response_logprobs == RESPONSE_LOGPROBS
    name, severity, _ = CorruptionPolicy(**TWINS["corruption"]).choose("u7/3")
    assert clean.extra_fields.items() >= {"rac_pair": "u7/3", "rac_severity": 0, "rac_corruption": ""}.items()
    assert twin.extra_fields.items() >= {"rac_pair": "u7/3", "rac_severity": severity, "rac_corruption": name}.items()
    assert twin.extra_fields is not clean.extra_fields and twin.metrics is not clean.metrics
    assert clean.multi_modal_data["images"] == images  # the clean row keeps the original images
    for original, corrupted in zip(images, twin.multi_modal_data["images"], strict=True):
        assert (corrupted.size, corrupted.mode) == (original.size, original.mode)
        assert corrupted.tobytes() != original.tobytes()
    # the same stored fields (as the v1 worker writes them), apart from the corrupted images
    assert twin.as_dict().keys() == clean.as_dict().keys()
    clean_mm, twin_mm = mm_inputs(clean, processor), mm_inputs(twin, processor)
    assert torch.equal(twin_mm["image_grid_thw"], clean_mm["image_grid_thw"])
    assert clean_mm["image_grid_thw"].tolist() == [[1, 12, 16], [1, 10, 8]]
    n_image_tokens = sum(t * h * w for t, h, w in clean_mm["image_grid_thw"].tolist()) // 4
    assert clean.prompt_ids.count(processor.image_token_id) == n_image_tokens
    assert twin_mm["pixel_values"].shape == clean_mm["pixel_values"].shape
    assert not torch.equal(twin_mm["pixel_values"], clean_mm["pixel_values"])


def test_configured_fraction_and_deterministic_choices(processor):
    fraction, n = 0.3, 300
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": fraction, "seed": 5}})
    policy = CorruptionPolicy(**TWINS["corruption"], seed=5)
    raw = prompt(image(3))
    twinned, choices = 0, set()
    for i in range(n):
        uid, session = f"prompt-{i // 5}", i % 5
        outputs = run(config, processor, raw, uid=uid, session_id=session)
        assert outputs[-1].extra_fields["rac_severity"] == 0
        if len(outputs) == 2:
            twinned += 1
            twin = outputs[0]
            choice = (twin.extra_fields["rac_corruption"], twin.extra_fields["rac_severity"])
            assert choice == policy.choose(f"{uid}/{session}")[:2]
            choices.add(choice)
        else:
            assert len(outputs) == 1
    # binomial: 4 standard deviations
    assert abs(twinned / n - fraction) <= 4 * math.sqrt(fraction * (1 - fraction) / n)
    assert len(choices) > 3  # the choice varies over rollouts


def test_same_rollout_key_gives_the_same_twin(processor):
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 1.0}})
    raw = prompt(image(4))
    first = run(config, processor, raw, uid="abc", session_id=1)[0]
    again = run(config, processor, raw, uid="abc", session_id=1)[0]
    other = run(config, processor, raw, uid="abc", session_id=2)[0]
    assert again.extra_fields == first.extra_fields
    assert again.multi_modal_data["images"][0].tobytes() == first.multi_modal_data["images"][0].tobytes()
    assert other.extra_fields["rac_pair"] != first.extra_fields["rac_pair"]


def test_unselected_rollout_is_a_flagged_clean_row(processor):
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 0.5}})
    policy = CorruptionPolicy(**TWINS["corruption"], fraction=0.5)
    session = next(i for i in range(100) if not policy.selects(f"u/{i}"))
    (clean,) = run(config, processor, prompt(image(5)), uid="u", session_id=session)
    assert clean.extra_fields.items() >= {"rac_pair": f"u/{session}", "rac_severity": 0, "rac_corruption": ""}.items()


def test_prompt_without_image_gets_no_twin(processor):
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 1.0}})
    text_only = [{"role": "user", "content": "t10 t11"}]
    (clean,) = run(config, processor, text_only, uid="t", session_id=0)
    assert clean.extra_fields.items() >= {"rac_pair": "t/0", "rac_severity": 0, "rac_corruption": ""}.items()


@pytest.mark.parametrize("rac", [{"pair_coef": 0.0}, {"pair_coef": 0.1, "corruption": {"fraction": 0.0}}])
def test_without_twins_it_is_the_single_turn_loop(processor, rac):
    config = make_config(rac)
    raw = prompt(image(6))
    ours = run(config, processor, raw)
    stock = run(config, processor, raw, name="single_turn_agent")
    assert isinstance(ours, AgentLoopOutput)
    assert ours.model_dump(exclude={"metrics"}) == stock.model_dump(exclude={"metrics"})
    assert "rac_pair" not in ours.extra_fields


def test_without_a_rac_node_the_defaults_apply(processor):
    policy = CorruptionPolicy(fraction=0.5)  # RACSettings' default corruption (pair_coef defaults to 0.1)
    session = next(i for i in range(100) if policy.selects(f"d/{i}"))
    twin, clean = run(make_config(None), processor, prompt(image(8)), uid="d", session_id=session)
    assert twin.extra_fields["rac_corruption"] == policy.choose(f"d/{session}")[0]


def test_needs_the_v1_worker_keys(processor):
    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 1.0}})

    async def go():
        loop = make_loop(config, processor)
        return await loop.run({"temperature": 1.0}, raw_prompt=prompt(image(7)), uid="u")

    with pytest.raises(ValueError, match="session_id"):
        asyncio.run(go())


def test_bad_rac_option_fails_at_construction(processor):
    with pytest.raises(hydra.errors.InstantiationException, match="unknown rac option.*pair_cof") as error:
        make_loop(make_config({"pair_cof": 0.1}), processor)
    assert isinstance(error.value.__cause__, ValueError)


def test_v1_worker_stores_twin_and_clean_rows_with_the_clean_reward(processor, monkeypatch):
    """verl's own ``AgentLoopWorkerTQ._agent_loop_postprocess`` on the loop's output, with the reward hook
    run by verl's naive reward manager and TransferQueue's put captured."""
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.v1 import agent_loop_tq

    config = make_config({**TWINS, "corruption": {**TWINS["corruption"], "fraction": 1.0}})
    sample = {
        "raw_prompt": prompt(image(9)), "uid": "u9", "session_id": 2, "global_steps": 3, "index": 0,
        "data_source": "openai/gsm8k", "reward_model": {"ground_truth": "42"}, "extra_info": {},
    }  # fmt: skip
    stored = {}

    async def put(**kwargs):
        stored.update(kwargs)

    async def rollout_and_store():  # verl's objects bind the running event loop when built
        outputs = await make_loop(config, processor).run({"temperature": 1.0}, **sample)
        manager = NaiveRewardManager(config, processor.tokenizer, get_custom_reward_fn(config))
        worker = object.__new__(agent_loop_tq.AgentLoopWorkerTQ.__ray_actor_class__)  # no Ray, no TransferQueue
        worker.__dict__.update(
            processor=processor, tokenizer=processor.tokenizer, distillation_enabled=False, mm_processor_kwargs={},
            reward_loop_worker_handles=[SimpleNamespace(compute_score=SimpleNamespace(remote=manager.run_single))],
        )  # fmt: skip
        await worker._agent_loop_postprocess(outputs, False, **sample)

    monkeypatch.setattr(agent_loop_tq.tq, "async_kv_batch_put", put)
    asyncio.run(rollout_and_store())

    assert stored["keys"] == ["u9_2_0", "u9_2_1"] and stored["partition_id"] == "train"
    rows = stored["fields"]
    for key in ("prompts", "responses", "response_mask", "rollout_log_probs", "rm_scores"):
        assert torch.equal(rows[key][0], rows[key][1]), key
    assert rows["rm_scores"][1].tolist()[-1] == pytest.approx(1.0 + (1.0 - 0.2**2))
    twin_extra, clean_extra = list(rows["extra_fields"])
    assert twin_extra["rac_pair"] == clean_extra["rac_pair"] == "u9/2"
    assert (clean_extra["rac_severity"], twin_extra["rac_severity"] > 0) == (0, True)
    assert twin_extra["reward_extra_info"] == clean_extra["reward_extra_info"]
    assert clean_extra["reward_extra_info"]["confidence"] == pytest.approx(0.8)
    twin_mm, clean_mm = list(rows["multi_modal_inputs"])
    assert torch.equal(twin_mm["image_grid_thw"], clean_mm["image_grid_thw"])
    assert not torch.equal(twin_mm["pixel_values"], clean_mm["pixel_values"])

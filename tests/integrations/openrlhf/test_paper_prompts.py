"""The reward formulation's prompts through OpenRLHF's own PromptDataset and SamplesGenerator (Ray, fake engines).

Stand-in vLLM engines (Ray actors, random delays so prompts finish in any order) return ``n`` responses per
prompt with the shape OpenRLHF's ``SingleTurnAgentExecutor`` gives. Everything else is OpenRLHF's: its
dataset preprocessing, its sample generator (collection, dispatch, dynamic filtering, rollout batches),
its split into micro-batches and its advantage step.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from types import SimpleNamespace as NS

import numpy as np
import pytest
import ray
import torch
from PIL import Image

from cpu_trainer import openrlhf_args
from rac_losses.corruption import CorruptionPolicy, corrupt
from rac_losses.corruption.pairs import image_key
from rac_losses.integrations.openrlhf import hook
from rac_losses.integrations.openrlhf.bonus import METRICS_ATTR
from rac_losses.integrations.openrlhf.options import ENV_VAR, PAPER_ENV_VAR, paper_to_env
from rac_losses.integrations.openrlhf.paper import PaperSettings, RACLabel
from rac_losses.integrations.openrlhf.prompts import PairedPrompts, with_paired_loader
from rac_losses.rewards import RESPONSE_SCHEMA

N = 2
# the stand-in engines are defined here: Ray workers get them by value, not by importing this test module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class FakeEngine:
    """``generate_responses`` as a vLLM rollout actor answers it (token ids, action span, reward fields)."""

    def get_num_unfinished_requests(self) -> int:
        return 0

    def generate_responses(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1, images=None):
        time.sleep(random.random() * 0.05)  # prompts finish in any order
        digest = int(hashlib.sha256(f"{prompt}|{getattr(label, 'level', 0)}".encode()).hexdigest(), 16)
        out = []
        for k in range(num_samples):
            acc = float((digest >> k) & 1)
            out.append({
                "prompt": prompt, "label": label, "images": images, "mm_train_inputs": None,
                "observation_tokens": [1, 2, 3, 4 + k, 5], "action_ranges": [(3, 5)], "rollout_log_probs": None,
                "truncated": False, "reward": acc, "scores": acc,
                "extra_logs": {"confidence": ((digest >> (8 + k)) % 100) / 100, "reward_acc": acc, "acc": acc, "format_ok": 1.0},
            })
        return out


class ChatTemplate:
    """A tokenizer stand-in: the chat template is the chat's JSON."""

    pad_token_id = 0

    def apply_chat_template(self, chat, tokenize=False, add_generation_prompt=True):
        return json.dumps(chat)


@pytest.fixture
def paper_run(monkeypatch):
    """``hook.install()`` of a reward-formulation run in this process, undone after the test."""
    import openrlhf.datasets.prompts_dataset as prompts_dataset
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    import openrlhf.trainer.ppo_utils.samples_generator as samples_generator
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    for module, name in ((prompts_dataset, "preprocess_data"), (samples_generator, "_collect_prompt_batch"),
                         (ppo_trainer, "prepare_datasets"), (samples_generator, "SamplingParams")):
        monkeypatch.setattr(module, name, getattr(module, name))
    for cls, name in ((samples_generator.SamplesGenerator, "_dispatch_prompts_to_vllm"),
                      (RemoteExperienceMaker, "compute_advantages_and_returns"),
                      (ppo_trainer.BasePPOTrainer, "_compute_rollout_stats"),
                      (ppo_trainer.BasePPOTrainer, "init_checkpoint_states"), (ppo_trainer.BasePPOTrainer, "train_step")):
        monkeypatch.setattr(cls, name, cls.__dict__[name])
    monkeypatch.delattr(ppo_trainer.BasePPOTrainer, "rac_steps", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    # vLLM is stubbed on CPU: its SamplingParams become a plain dict the fake engines ignore
    monkeypatch.setattr(samples_generator, "SamplingParams", lambda **kw: dict(kw))

    def install(settings: PaperSettings):
        monkeypatch.delenv(ENV_VAR, raising=False)
        monkeypatch.setenv(PAPER_ENV_VAR, paper_to_env(settings)[PAPER_ENV_VAR])
        hook.install()
        return NS(prompts_dataset=prompts_dataset, samples_generator=samples_generator, ppo_trainer=ppo_trainer)

    return install


def _rows(tmp_path, count: int = 10, text_only: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count + text_only):
        row = {"question": f"<image>What is shown in picture {i}?" if i < count else f"Compute {i} + 1.",
               "answer": "AB"[i % 2], "images": None}
        if i < count:
            path = tmp_path / f"img{i}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
            row["images"] = [str(path)]
        rows.append(row)
    return rows


def _generator(ns, settings, rows, cli, seed=0, engines=None):
    from datasets import Dataset
    from openrlhf.datasets import PromptDataset

    args = openrlhf_args(
        "--data.input_key", "question", "--data.label_key", "answer", "--data.image_key", "images",
        "--data.apply_chat_template", "--rollout.n_samples_per_prompt", str(N), *cli,
    )
    strategy = NS(args=args, is_rank_0=lambda: True)
    dataset = PromptDataset(Dataset.from_list(rows), ChatTemplate(), strategy)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True, collate_fn=dataset.collate_fn,
                                         generator=torch.Generator().manual_seed(seed))
    prepare = ns.ppo_trainer.prepare_datasets  # the hook's wrapper
    assert getattr(prepare, "rac_paper", False)
    paired, _, max_steps = with_paired_loader(lambda s, t: (loader, None, 0), settings)(strategy, None)
    assert isinstance(paired, PairedPrompts)
    generator = ns.samples_generator.SamplesGenerator(
        strategy=strategy, prompts_dataloader=paired, eval_dataloader=None, tokenizer=ChatTemplate(),
        vllm_engines=engines or [FakeEngine.remote() for _ in range(2)],
    )
    return generator, args, dataset, max_steps


def _batches(generator, args):
    batches = []
    while True:
        samples, _, _, exhausted = generator.generate_samples(n_samples_per_prompt=N, max_len=64)
        if samples:
            batches.append(samples)
        if exhausted:
            return batches


def _check_pairs_co_occur(batches, batch_size):
    seen = set()
    for b, samples in enumerate(batches):
        labels = [s.labels[0] for s in samples]
        assert all(isinstance(lab, RACLabel) for lab in labels)
        if b < len(batches) - 1:
            assert len(samples) == batch_size * N  # OpenRLHF's rollout batch, unchanged
        # a prompt's n samples are contiguous and aligned (OpenRLHF's groups: index // n)
        for start in range(0, len(samples), N):
            block = labels[start:start + N]
            assert len({(lab.unit, lab.level, s.prompts[0]) for lab, s in zip(block, samples[start:start + N])}) == 1
        pairs: dict[int, set] = {}
        for lab in labels:
            if lab.pair >= 0:
                pairs.setdefault(lab.pair, set()).add(lab.level > 0)
        for pair, kinds in pairs.items():
            assert kinds == {False, True}, f"pair {pair} split across rollout batches"
            assert pair not in seen
            seen.add(pair)
    return seen


@pytest.mark.parametrize("filtering", [False, True])
def test_generated_pairs_co_occur_in_every_rollout_batch(local_ray, paper_run, tmp_path, filtering):
    settings = PaperSettings()
    ns = paper_run(settings)
    cli = ["--rollout.batch_size", "4"]
    if filtering:  # OpenRLHF drops prompts whose mean score is 0 or 1 and draws replacements
        cli += ["--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "0.01", "0.99"]
    generator, args, _, _ = _generator(ns, settings, _rows(tmp_path), cli)
    batches = _batches(generator, args)
    pairs = _check_pairs_co_occur(batches, 4)
    if not filtering:
        assert len(pairs) == 10  # every image prompt got its copy; text-only prompts none
        assert sum(len(b) for b in batches) == (10 * 2 + 2) * N
    for samples in batches:
        for s in samples:
            lab = s.labels[0]
            turn = json.loads(s.prompts[0])[-1]  # the chat template here is the chat's JSON
            text = turn["content"] if isinstance(turn["content"], str) else turn["content"][-1]["text"]
            assert turn["role"] == "user" and text.endswith(RESPONSE_SCHEMA)  # schema on the last user turn
            if lab.level > 0:
                assert lab.level in (0.2, 0.4, 0.6)
                (img,) = s.images[0]
                assert isinstance(img, Image.Image) and img.size == (8, 8)
            assert lab.step == 0  # no training step yet


def test_copies_are_deterministic_per_prompt_and_seed(local_ray, paper_run, tmp_path):
    settings = PaperSettings()
    ns = paper_run(settings)
    rows = _rows(tmp_path, count=6, text_only=0)
    engines = [FakeEngine.remote()]

    def copies(seed_loader, policy_seed):
        s = PaperSettings(seed=policy_seed)
        generator, args, _, _ = _generator(ns, s, rows, ["--rollout.batch_size", "4"], seed=seed_loader, engines=engines)
        out = {}
        for samples in _batches(generator, args):
            for x in samples:
                if x.labels[0].level > 0:
                    out[x.prompts[0]] = (x.labels[0].level, np.asarray(x.images[0][0]).tobytes())
        return out

    first = copies(0, 0)
    assert len(first) == 6
    assert copies(1, 0) == first  # another shuffle: the same copy of each prompt
    assert copies(0, 1) != first  # another --rac.corruption.seed: other corruptions
    # the corruption and its seed are those rac-corrupt pairs chooses for the same image bytes and seed
    policy = CorruptionPolicy.paper(seed=0)
    for prompt, (level, pixels) in first.items():
        (row,) = [r for r in rows if r["question"].removeprefix("<image>") in prompt]
        with open(row["images"][0], "rb") as f:
            name, _, seed = policy.choose(image_key([f.read()]))
        expected = corrupt(Image.open(row["images"][0]).convert("RGB"), name, round(level * 5), seed=seed)
        assert np.asarray(expected).tobytes() == pixels


def test_dataset_pairs_co_occur_and_reach_the_bonus(local_ray, paper_run, tmp_path):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    settings = PaperSettings(source="dataset")
    ns = paper_run(settings)
    rows = []
    for row, pair in zip(_rows(tmp_path, count=6, text_only=0), range(6)):
        rows.append({**row, "pair_id": pair, "is_noisy": False, "corruption_level": 0.0})
        rows.append({**row, "pair_id": pair, "is_noisy": True, "corruption_level": 0.2 * (1 + pair % 3)})
    rows.append({**rows[0], "pair_id": -1, "is_noisy": False})  # an unpaired row
    rows.append({**rows[0], "pair_id": -1, "is_noisy": False, "question": "<image>Other?"})
    generator, args, _, _ = _generator(ns, settings, rows, ["--rollout.batch_size", "4"])
    batches = _batches(generator, args)
    assert len(_check_pairs_co_occur(batches, 4)) == 6
    assert sum(len(b) for b in batches) == len(rows) * N  # every row once per pass

    # OpenRLHF's own split and advantage step: the pairs reach the bonus
    maker = object.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator, maker.kl_ctl = NS(args=args), args, "group_norm", NS(value=0.0)
    maker.tokenizer = ChatTemplate()
    args.algo.advantage.estimator = "group_norm"
    experiences = maker.split_rollout_samples(batches[0])
    for e in experiences:
        e.kl = torch.zeros(e.action_mask.shape)
    maker.compute_advantages_and_returns(experiences)
    metrics = getattr(maker, METRICS_ATTR)
    assert metrics["rac/pair/clean_prompts"] == metrics["rac/pair/corrupted_prompts"] == 2


def test_the_training_step_reaches_the_labels():
    from rac_losses.integrations.openrlhf.prompts import with_training_step

    class Trainer:  # OpenRLHF's BasePPOTrainer methods the hook wraps, as they behave
        def init_checkpoint_states(self):
            return {"global_step": 7}  # resumed at step 7

        def train_step(self, rollout_samples, global_step):
            return {}, global_step + 1

    with_training_step(Trainer)
    trainer = Trainer()
    trainer.prompts_dataloader = PairedPrompts(NS(dataset=None), PaperSettings(source="off"))
    trainer.init_checkpoint_states()
    assert trainer.prompts_dataloader.step == 7
    trainer.train_step([], 7)
    assert trainer.prompts_dataloader.step == 8


@pytest.mark.parametrize("label", [RACLabel("B", pair=3, level=0.4, unit=2, step=5, choices=["x", "y"], multiple_choice=True)])
def test_labels_survive_rays_round_trip(local_ray, label):
    back = ray.get(ray.put(label))
    assert back == "B" and isinstance(back, RACLabel) and back.__dict__ == label.__dict__
    assert json.dumps([label]) == '["B"]'  # OpenRLHF's HTTP reward path sends plain strings

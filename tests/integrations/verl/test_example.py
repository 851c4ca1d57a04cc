"""The verl example script: the command it runs composes with verl 0.9.1's Hydra config and starts the rac trainer.

The script is run by bash as written, with ``python3`` on ``PATH`` replaced by a stub that records its
arguments, so what is checked is the command line a user's shell would launch (no GPU is needed for that;
the run itself needs GPUs and vLLM or SGLang and was not made).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.utils.config import omega_conf_to_dataclass

import hydra_config
from rac_losses.integrations.verl.trainer import RACTrainer

# from the source tree: the examples are not package data
EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "integrations" / "verl" / "examples"
SCRIPT = EXAMPLES / "run_qwen2_5_vl_3b_geo3k_rac.sh"
PAPER_SCRIPT = EXAMPLES / "run_qwen2_5_vl_7b_rac_paper.sh"


def _command(tmp_path, *args: str, script: pathlib.Path = SCRIPT, **env: str) -> list[str]:
    """The arguments the script passes to ``python3``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python3"
    stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@"\n')
    stub.chmod(0o755)
    done = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_example_is_verls_example_plus_the_rac_flags_and_composes(tmp_path):
    command = _command(tmp_path)
    assert command[:2] == ["-m", "verl.trainer.main_ppo"]
    overrides = command[2:]
    config = hydra_config.compose_ppo(*overrides, base=())
    # verl's memory settings and kernels as verl ships them; console logging (no API key needed)
    assert config.actor_rollout_ref.rollout.free_cache_engine is True
    assert not any(o.startswith("actor_rollout_ref.rollout.free_cache_engine") for o in overrides)
    assert config.actor_rollout_ref.model.use_fused_kernels is True
    assert list(config.trainer.logger) == ["console"]
    assert config.trainer.use_v1 is True and config.trainer.v1.trainer_mode == "rac"
    assert config.data.train_files == f"{tmp_path}/data/geo3k/train.parquet"

    assert get_trainer_cls(config.trainer.v1.trainer_mode) is RACTrainer
    trainer = RACTrainer(config)  # validates the rac options against the rest of the config
    assert trainer.rac.config.rank_coef == 1.0 and trainer.rac.config.pair_coef == 0.1
    assert trainer.rac.corruption.fraction == 0.5
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "rac_single_turn"
    for node in (config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout):
        omega_conf_to_dataclass(node)  # verl's own schema accepts them
    hook = OmegaConf.to_container(config.reward.custom_reward_function)
    assert hook["path"] == "pkg://rac_losses.integrations.verl.reward" and hook["name"] == "compute_score"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_the_engine_logger_and_extra_overrides_are_the_users(tmp_path, engine):
    command = _command(tmp_path, engine, "trainer.total_epochs=1", LOGGER='["console","wandb"]')
    config = hydra_config.compose_ppo(*command[2:], base=())
    assert config.actor_rollout_ref.rollout.name == engine
    assert list(config.trainer.logger) == ["console", "wandb"]
    assert config.trainer.total_epochs == 1  # the user's override comes last and wins


@pytest.mark.parametrize(("exp", "rank", "pair", "train", "source"), [
    ("pair_main", 0.2, 0.3, "train_pair_main", "dataset"), ("pair_generated", 0.2, 0.3, "train", "generate"),
    ("ranking", 0.2, 0.0, "train", "off"), ("baseline", 0.0, 0.0, "train", "off"),
])
def test_the_papers_recipe_composes_and_runs_the_reward_formulation(tmp_path, exp, rank, pair, train, source):
    command = _command(tmp_path, script=PAPER_SCRIPT, DATA_ROOT=str(tmp_path / "rac"), EXP=exp)
    assert command[:2] == ["-m", "verl.trainer.main_ppo"]
    config = hydra_config.compose_ppo(*command[2:], base=())
    assert config.algorithm.adv_estimator == "reinforce_plus_plus" and config.actor_rollout_ref.rollout.n == 8
    assert config.data.train_files == f"{tmp_path}/rac/train/{train}.parquet"
    assert len(config.data.val_files) == 6 * 6 and config.data.val_files[1].endswith("m3cot_test_processed_T0.2/test.parquet")
    assert list(config.trainer.logger) == ["console"]

    trainer = RACTrainer(config)
    assert trainer.formulation == "reward"
    assert (trainer.rac.rank_coef, trainer.rac.pair_coef, trainer.rac.tail_penalty_coef) == (rank, pair, 0.1)
    assert trainer.rac.source == source
    hook = OmegaConf.to_container(config.reward.custom_reward_function)
    assert hook["path"] == "pkg://rac_losses.integrations.verl.paper_reward"
    assert hook["reward_kwargs"]["format_coef"] == 0.3 and hook["reward_kwargs"]["format_warmup_steps"] == 10
    assert config.data.custom_cls.name == "RACSchemaDataset"
    for node in (config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout):
        omega_conf_to_dataclass(node)  # verl's own schema accepts them


def test_the_papers_recipe_needs_its_data_folder(tmp_path):
    done = subprocess.run(["bash", str(PAPER_SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "DATA_ROOT"})
    assert done.returncode != 0 and "set DATA_ROOT to the RAC data folder" in done.stderr

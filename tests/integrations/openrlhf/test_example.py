"""The GPU example scripts' command lines: OpenRLHF's parser accepts their flags, the RAC ones validate.

The scripts themselves cannot run here (GPUs, vLLM); a stand-in ``rac-openrlhf`` on ``PATH`` records their
arguments.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from cpu_trainer import openrlhf_args
from rac_losses.corruption import CorruptionPolicy
from rac_losses.integrations.openrlhf.launcher import (
    REWARD_FILE, prepare_paper_run, prepare_run, read_settings, split_args,
)
from rac_losses.integrations.openrlhf.paper import PaperSettings
from rac_losses.integrations.settings import RACSettings

# from the source tree: the examples are not package data
EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "integrations" / "openrlhf" / "examples"


def _script_argv(tmp_path, script: str, *extra: str, env: dict | None = None) -> list[str]:
    """The arguments ``script`` hands to ``rac-openrlhf``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "args"
    fake = bin_dir / "rac-openrlhf"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > {record}\n')
    fake.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])
    subprocess.run(["bash", str(EXAMPLES / script), *extra], cwd=tmp_path, check=True, timeout=120,
                   env={**os.environ, "PATH": path, **(env or {})})
    return record.read_bytes().decode().split("\0")[:-1]


def test_loss_example_command_line_parses(tmp_path):
    argv = _script_argv(tmp_path, "train_qwen2_5_vl_rac.sh", "--rac.rank_margin", "0.1")
    options, rest = split_args(argv)
    settings = read_settings(options)
    assert isinstance(settings, RACSettings)  # --rac.formulation loss
    assert settings.corruption.severities == (3, 4, 5) and settings.config.rank_margin == 0.1  # extra flags pass
    assert settings.uses_twins and settings.needs_entropy
    checked, run_args = prepare_run(settings, rest)
    assert checked == settings
    args = openrlhf_args(*run_args)
    assert args.rollout.n_samples_per_prompt == 8 and args.algo.advantage.estimator == "group_norm"
    assert args.actor.entropy_coef == 0.0 and args.data.max_images_per_prompt == 1
    assert args.reward.remote_url.endswith("integrations/openrlhf/reward.py")


def test_paper_example_has_the_recipes_hyper_parameters(tmp_path):
    argv = _script_argv(tmp_path, "train_qwen2_5_vl_7b_paper.sh", "--eval.steps", "6", env={"DATA": "train.parquet"})
    options, rest = split_args(argv)
    settings = read_settings(options)
    assert isinstance(settings, PaperSettings)
    # every RAC value the script spells out is the release's (and this package's default), but the tail
    # penalty, which the recipe sets to 0.1
    assert settings == PaperSettings(tail_penalty_coef=0.1, names=("paper",))
    assert settings.policy == CorruptionPolicy.paper()  # the 8 corruptions, 50/40/10 over levels 0.2-0.6
    checked, run_args = prepare_paper_run(settings, rest)
    assert checked == settings and run_args[-2:] == ["--reward.remote_url", REWARD_FILE]  # the paper's reward
    args = openrlhf_args(*run_args)
    assert args.data.prompt_dataset == "train.parquet" and args.data.max_images_per_prompt == 1
    assert (args.rollout.batch_size, args.rollout.n_samples_per_prompt, args.train.batch_size) == (512, 8, 1024)
    assert (args.rollout.temperature, args.rollout.top_p) == (0.6, 0.95)
    assert args.algo.advantage.estimator == "reinforce"  # REINFORCE++
    assert args.algo.kl.use_loss and args.algo.kl.init_coef == 0.005 and args.algo.kl.estimator == "k3"
    assert list(args.actor.eps_clip_low_high) == [0.2, 0.28]
    assert (args.actor.adam.lr, args.actor.min_lr_ratio, args.train.num_episodes) == (1e-6, 0.5, 2)
    assert args.data.max_len == 2500 + 3072 and args.rollout.max_new_tokens == 3072
    assert args.eval.steps == 6  # extra flags reach OpenRLHF


def test_paper_example_needs_data(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    done = subprocess.run(["bash", str(EXAMPLES / "train_qwen2_5_vl_7b_paper.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "set DATA to a training parquet" in done.stderr

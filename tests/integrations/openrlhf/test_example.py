"""The GPU example script's command line: OpenRLHF's parser accepts its flags, the RAC ones validate.

The script itself cannot run here (GPUs, vLLM); a stand-in ``rac-openrlhf`` on ``PATH`` records its
arguments.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from cpu_trainer import openrlhf_args
from rac_losses.integrations.openrlhf.launcher import prepare_run, read_settings, split_args
from rac_losses.integrations.settings import RACSettings

# from the source tree: the example is not package data
SCRIPT = pathlib.Path(__file__).resolve().parents[3] / "integrations" / "openrlhf" / "examples" / "train_qwen2_5_vl_rac.sh"


def test_example_command_line_parses(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "args"
    fake = bin_dir / "rac-openrlhf"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\0" "$@" > {record}\n')
    fake.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])
    subprocess.run(["bash", str(SCRIPT), "--rac.rank_margin", "0.1"], cwd=tmp_path, check=True, timeout=120,
                   env={**os.environ, "PATH": path})
    argv = record.read_bytes().decode().split("\0")[:-1]
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

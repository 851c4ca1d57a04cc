"""``rac-openrlhf ARGS``: ``python -m openrlhf.cli.train_ppo_ray ARGS`` with RAC inside.

``ARGS`` are OpenRLHF's own arguments, passed on unchanged, plus ``--rac.NAME VALUE`` (or
``--rac.NAME=VALUE``). ``--rac.formulation reward`` (the default, the paper's method) takes the options of
:class:`~rac_losses.integrations.openrlhf.paper.PaperSettings`; ``--rac.formulation loss`` those of
:class:`~rac_losses.integrations.settings.RACSettings`. The RAC options are validated before Ray starts. Then Ray starts with the options in an environment variable and
the setup hook :func:`rac_losses.integrations.openrlhf.hook.install` in every worker, and OpenRLHF's
``train_ppo_ray`` runs as ``__main__`` (its ``train()`` uses the running Ray instead of starting its own).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import runpy
import sys
from collections.abc import Sequence

from rac_losses.integrations.openrlhf.hook import HOOK, check_supported
from rac_losses.integrations.openrlhf.options import paper_to_env, settings_to_env
from rac_losses.integrations.openrlhf.paper import FORMULATIONS, PaperSettings, paper_option_names
from rac_losses.integrations.settings import OPTION_NAMES, RACSettings

__all__ = ["TRAIN_MODULE", "main", "prepare_paper_run", "prepare_run", "read_settings", "runtime_env", "split_args"]

logger = logging.getLogger(__name__)

TRAIN_MODULE = "openrlhf.cli.train_ppo_ray"
_PREFIX = "--rac."
_HELP = {
    "rank_coef": "weight of the ranking loss (better reward -> more confident, within a prompt's group); 0 turns it off",
    "rank_confidence": "confidence of the ranking loss: mean_logprob, prob or neg_entropy",
    "rank_link": "comparison loss: logistic, hinge or squared_hinge",
    "rank_scale": "inverse temperature of the comparison",
    "rank_margin": "margin of the comparison",
    "rank_pair_weight": "uniform, or reward_gap (weight a comparison by its reward difference)",
    "rank_tie_tolerance": "reward differences up to this are ties (no comparison)",
    "pair_coef": "weight of the clean-vs-corrupted loss (needs images); 0 turns twins off",
    "pair_confidence": "confidence of the pairwise loss: neg_entropy, mean_logprob or prob",
    "pair_link": "comparison loss of the pairwise term",
    "pair_scale": "inverse temperature of the pairwise comparison",
    "pair_margin": "margin of the pairwise comparison",
    "pair_severity_margin": "extra margin per unit of severity gap",
    "pair_detach_clean": "true: only the corrupted side gets gradient from the pairwise loss",
    "corruption.names": "comma-separated corruptions for twins",
    "corruption.severities": "comma-separated severities to draw from (1..5)",
    "corruption.fraction": (
        "share of clean rollouts with a corrupted counterpart, drawn per rollout: its twin (a no-grad forward "
        "before the update, a forward and backward per epoch)"
    ),
    "corruption.seed": "seed of the per-rollout choice of twin and corruption",
    "refresh_partners": (
        "true: rebuild the partner tables at the current parameters before every optimiser step after the "
        "first (a no-grad forward over the buffer each); false: fixed before the update"
    ),
}
_PAPER_HELP = {
    "schema": "append the release's response schema (<think>/<answer>/<confidence>) to every prompt",
    "rank_coef": "weight of the ranking bonus (within a prompt's samples, more accurate -> more confident)",
    "pair_coef": "weight of the clean-corrupted bonus (a corrupted copy's samples less confident); 0 turns pairs off",
    "rank_margin": "hinge margin of the ranking bonus",
    "pair_margin": "hinge margin of the clean-corrupted bonus",
    "alpha": "extra clean-corrupted margin per unit of corruption level (severity / 5)",
    "reward.format_coef": "penalty of a response off the schema, after the warm-up",
    "reward.format_warmup_steps": "training steps over which the format penalty goes from its start value to format_coef",
    "reward.format_warmup_start": "format penalty at step 0",
    "reward.tail_penalty_coef": "penalty for 128+ characters after </confidence>",
    "reward.multiple_choice": "questions have options (a dataset column is_multiple_choice overrides it per row)",
    "corruption.source": "generate (corrupted copies made on the fly), dataset (columns pair_id, is_noisy, corruption_level) or off",
    "corruption.fraction": (
        "share of clean rollouts with a corrupted counterpart, drawn per image prompt: a generated copy, whose "
        "k-th sample is the counterpart of the prompt's k-th"
    ),
    "corruption.names": "comma-separated corruptions of the generated copies",
    "corruption.severities": "comma-separated severities (1..5; level = severity / 5)",
    "corruption.weights": "comma-separated weights of the severities",
    "corruption.seed": "seed of the per-prompt choice of copy and corruption",
}
#: The reward file shipped with the adapter (``--reward.remote_url`` when the run names no reward).
REWARD_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reward.py")


def split_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``(rac options by name, OpenRLHF's arguments in their order, unchanged)``.

    Raises:
        ValueError: a ``--rac.*`` flag without a value, or given twice.
    """
    options: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(_PREFIX):
            name, eq, value = arg[len(_PREFIX):].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ValueError(f"--rac.{name} needs a value")
                i += 1
                value = argv[i]
            if name in options:
                raise ValueError(f"--rac.{name} is given twice")
            options[name] = value
        else:
            rest.append(arg)
        i += 1
    return options, rest


def prepare_run(settings: RACSettings, openrlhf_args: list[str]) -> tuple[RACSettings, list[str]]:
    """Check ``settings`` against OpenRLHF's arguments; return the settings and the arguments to run with.

    On a text-only run (``--data.max_images_per_prompt 0``, OpenRLHF's default) the pairwise part has no
    images to corrupt: it is turned off (``pair_coef`` 0) with a warning. Adds ``--actor.entropy_coef 0``
    when a confidence reads entropy and the flag is absent (OpenRLHF then computes the entropy with gradient
    and adds no entropy loss).

    Raises:
        ValueError: twins with DeepSpeed ZeRO-3 (ranks would run different numbers of forwards and ZeRO-3's
            parameter gathers would hang), dynamic batching, or settings the adapter does not support.
    """
    check_supported(settings)
    known = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    known.add_argument("--data.max_images_per_prompt", dest="max_images", type=int, default=0)
    known.add_argument("--actor.entropy_coef", dest="entropy_coef", type=float, default=None)
    known.add_argument("--train.dynamic_batch_enable", dest="dynamic_batch", action="store_true")
    for name, default in (("actor.num_nodes", 1), ("actor.num_gpus_per_node", 8), ("ds.ring_attn_size", 1),
                          ("ds.tensor_parallel_size", 1), ("rollout.batch_size", 1024), ("ds.zero_stage", 2)):
        known.add_argument(f"--{name}", dest=name.replace(".", "_"), type=int, default=default)  # OpenRLHF's defaults
    args, _ = known.parse_known_args(openrlhf_args)
    dp_ranks = args.actor_num_nodes * args.actor_num_gpus_per_node // args.ds_ring_attn_size // args.ds_tensor_parallel_size
    if settings.config.rank_coef > 0 and dp_ranks > 1 and args.rollout_batch_size % dp_ranks:
        # OpenRLHF hands each rank a contiguous rollout.batch_size / dp prompts' worth of samples
        logger.warning(
            "rac: --rollout.batch_size %d is not a multiple of the %d data-parallel ranks: some prompt groups are "
            "split across ranks and lose their ranking comparisons across ranks",
            args.rollout_batch_size, dp_ranks,
        )
    if settings.uses_twins and args.max_images == 0:
        logger.warning(
            "rac: text-only run (--data.max_images_per_prompt 0): no images to corrupt, the pairwise "
            "clean-vs-corrupted part is off (rac.pair_coef 0); the ranking part runs"
        )
        settings = dataclasses.replace(settings, config=dataclasses.replace(settings.config, pair_coef=0.0))
    if settings.uses_twins and args.ds_zero_stage == 3:
        raise ValueError(
            "corrupted twins are not supported with --ds.zero_stage 3: only ranks holding twins run the twin "
            "forwards, and ZeRO-3's parameter all-gathers would hang; use --ds.zero_stage 2 (or 1), or pass "
            "--rac.pair_coef 0"
        )
    if args.dynamic_batch:
        raise ValueError("--train.dynamic_batch_enable is not supported with RAC")
    if settings.needs_entropy and args.entropy_coef is None:
        logger.info("rac: a neg_entropy confidence reads the entropy: adding --actor.entropy_coef 0")
        return settings, [*openrlhf_args, "--actor.entropy_coef", "0"]
    return settings, list(openrlhf_args)


def read_settings(options: dict[str, str]) -> RACSettings | PaperSettings:
    """The run's settings from its ``--rac.*`` options: ``formulation`` picks the kind (default ``reward``).

    Raises:
        ValueError: an unknown formulation, or options the formulation does not take or cannot read.
    """
    options = dict(options)
    formulation = options.pop("formulation", FORMULATIONS[0])
    if formulation not in FORMULATIONS:
        raise ValueError(f"--rac.formulation: expected one of {', '.join(FORMULATIONS)}, got {formulation!r}")
    if formulation == "reward":
        return PaperSettings.from_options(options)
    return RACSettings.from_options(options)


def prepare_paper_run(settings: PaperSettings, openrlhf_args: list[str]) -> tuple[PaperSettings, list[str]]:
    """Check the reward formulation against OpenRLHF's arguments; return the settings and arguments to run with.

    Adds ``--reward.remote_url`` with the shipped reward file (:data:`REWARD_FILE`) when the run names neither
    a reward file/URL nor a reward model. On a text-only run (``--data.max_images_per_prompt 0``) generated
    copies have nothing to corrupt: the source is turned off with a warning.

    Raises:
        ValueError: fewer than 2 samples per prompt (no ranking), or an odd ``--rollout.batch_size`` with
            pairs (a rollout batch holds whole units of two prompts).
    """
    known = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    known.add_argument("--data.max_images_per_prompt", dest="max_images", type=int, default=0)
    known.add_argument("--rollout.n_samples_per_prompt", dest="n", type=int, default=1)
    known.add_argument("--rollout.batch_size", dest="batch", type=int, default=1024)
    known.add_argument("--reward.remote_url", dest="remote", default=None)
    known.add_argument("--reward.model_name_or_path", dest="model", default=None)
    args, _ = known.parse_known_args(openrlhf_args)
    if settings.rank_coef > 0 and args.n < 2:
        raise ValueError(
            f"--rollout.n_samples_per_prompt {args.n}: the ranking bonus compares a prompt's samples, it needs 2 or "
            "more (or pass --rac.rank_coef 0)"
        )
    if settings.source == "generate" and settings.pairs and args.max_images == 0:
        logger.warning(
            "rac: text-only run (--data.max_images_per_prompt 0): no images to corrupt, no corrupted copies "
            "(rac.corruption.source off); the ranking bonus runs"
        )
        settings = dataclasses.replace(settings, source="off")
    if settings.pairs and args.batch % 2:
        raise ValueError(
            f"--rollout.batch_size {args.batch} must be even with clean-corrupted pairs: a rollout batch holds "
            "whole units of two prompts (pass --rac.corruption.source off or --rac.pair_coef 0 otherwise)"
        )
    run_args = list(openrlhf_args)
    if args.remote is None and args.model is None:
        logger.info("rac: no reward given: --reward.remote_url %s (the paper's reward)", REWARD_FILE)
        run_args += ["--reward.remote_url", REWARD_FILE]
    return settings, run_args


def runtime_env(settings: RACSettings | PaperSettings) -> dict:
    """Ray's ``runtime_env``: OpenRLHF's own environment defaults, the RAC options and the setup hook."""
    env = {
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
        **(paper_to_env(settings) if isinstance(settings, PaperSettings) else settings_to_env(settings)),
    }
    return {"env_vars": env, "worker_process_setup_hook": HOOK}


def _rac_help() -> str:
    parser = argparse.ArgumentParser(
        prog="rac-openrlhf",
        usage="rac-openrlhf [--rac.NAME VALUE ...] [OpenRLHF train_ppo_ray arguments ...]",
        description="OpenRLHF's PPO/GRPO training (openrlhf.cli.train_ppo_ray) with Ranking-Aware Calibration.",
        add_help=False,
    )
    parser.add_argument(
        "--rac.formulation", metavar="VALUE",
        help="reward: the paper's method (bonuses on the stated confidence, added to the reward before the "
             "advantage estimator); loss: RAC terms in the policy loss (default: reward)",
    )
    text = [parser.format_help()]
    for title, names, helps, values in (
        ("RAC options of --rac.formulation reward", paper_option_names(), _PAPER_HELP, PaperSettings().as_options()),
        ("RAC options of --rac.formulation loss", OPTION_NAMES, _HELP, RACSettings().as_options()),
    ):
        part = argparse.ArgumentParser(prog="rac-openrlhf", usage=argparse.SUPPRESS, add_help=False)
        group = part.add_argument_group(title)
        for name in names:
            default = values[name]
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            group.add_argument(f"--rac.{name}", metavar="VALUE", help=f"{helps[name]} (default: {shown})")
        text.append(part.format_help())
    return "\n".join(text)


def _missing(modules: list[str]) -> str:
    return (
        f"{' and '.join(modules)} not installed: pip install 'rac-losses[openrlhf]' (OpenRLHF 0.11.2 with vLLM, on a "
        "CUDA machine)"
    )


def _run_openrlhf(args: list[str]) -> None:
    sys.argv = [TRAIN_MODULE, *args]
    runpy.run_module(TRAIN_MODULE, run_name="__main__", alter_sys=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``rac-openrlhf`` command. Returns 0 after training, 2 on a bad ``--rac`` option (before Ray)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    missing = [m for m in ("openrlhf", "ray") if importlib.util.find_spec(m) is None]
    if "-h" in argv or "--help" in argv:
        print(_rac_help())
        if missing:
            print(f"rac-openrlhf: error: {_missing(missing)}", file=sys.stderr)
            return 2
        print("OpenRLHF's arguments (python -m openrlhf.cli.train_ppo_ray --help):\n", flush=True)
        _run_openrlhf(["--help"])
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options, openrlhf_args = split_args(argv)
        settings = read_settings(options)
        if isinstance(settings, PaperSettings):
            settings, openrlhf_args = prepare_paper_run(settings, openrlhf_args)
        else:
            settings, openrlhf_args = prepare_run(settings, openrlhf_args)
    except ValueError as e:
        print(f"rac-openrlhf: error: {e}", file=sys.stderr)
        return 2
    if missing:
        print(f"rac-openrlhf: error: {_missing(missing)}", file=sys.stderr)
        return 2
    import ray

    logger.info("rac: starting Ray with the RAC setup hook (%s)", settings)
    ray.init(runtime_env=runtime_env(settings))
    _run_openrlhf(openrlhf_args)
    return 0

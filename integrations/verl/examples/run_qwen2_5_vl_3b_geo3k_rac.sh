#!/usr/bin/env bash
# GRPO + RAC on geo3k with Qwen2.5-VL-3B-Instruct: verl's own geo3k GRPO example
# (examples/grpo_trainer/run_qwen2_5_vl-7b.sh in verl's repository) with the 3B model, plus the RAC flags at
# the end. verl's memory settings are kept as verl ships them: the colocated rollout engine frees its KV
# cache for the update (rollout.free_cache_engine left at verl's default, true) and the actor uses verl's
# fused log-prob/entropy kernels (model.use_fused_kernels=True: no [tokens, vocab] logits in the update;
# RAC reads only log-probs and entropy). Logging goes to the console; add wandb with
# LOGGER='["console","wandb"]' (it needs WANDB_API_KEY).
#
# NOT RUN HERE: written on a CPU-only machine with no GPU. It needs a GPU node (8 GPUs as set below; change
# trainer.n_gpus_per_node for fewer) and vLLM or SGLang. What was checked (tests/integrations/verl/
# test_example.py): the command this script runs composes with verl 0.9.1's ppo_trainer config (Hydra), the
# actor and rollout configs convert to verl's dataclasses, the `rac` options parse and the rac trainer
# accepts them. (verl's example also set rollout.engine_kwargs.vllm.disable_mm_preprocessor_cache, which
# 0.9.1 rejects; 0.9.1's vLLM server sets mm_processor_cache_gb=0 itself for vLLM < 0.22.)
#
# Usage: bash run_qwen2_5_vl_3b_geo3k_rac.sh [vllm|sglang] [more Hydra overrides ...]
#
# Prerequisites:
#   pip install "rac-losses[verl]" mathruler qwen-vl-utils   # mathruler: verl's geo3k scorer; qwen-vl-utils: images
#   python examples/data_preprocess/geo3k.py   # from verl's repository: writes ~/data/geo3k/{train,test}.parquet
#
# Prompt template: the reward hook's Brier term reads a confidence the model states at the end of its
# answer as <confidence>x</confidence>, x in [0, 1] (or a percentage such as 85%). verl's geo3k
# preprocessing asks for <think>...</think> and \boxed{}; append to its instruction_following something like
#   "Finally, state how likely your answer is correct as <confidence>p</confidence>, p between 0 and 1."
# Without the tag the Brier term is 0 (and reward_extra_info reports confidence=-1, confidence_valid=0).
# The ranking loss orders rollouts by the hook's `correct` (not by correct + Brier).
set -euo pipefail
ENGINE=${1:-vllm}
shift || true
LOGGER=${LOGGER:-'["console"]'}

RAC_ARGS=(
    # The `rac` trainer mode (registered by the rac-losses plugin at `import verl`): verl's sync v1 trainer
    # whose loss is verl's ppo_loss on the clean rows plus rank_coef * L_rank + pair_coef * L_pair. When
    # twins are wanted it sets rollout.agent.default_agent_loop=rac_single_turn, the corrupted-twin loop.
    trainer.v1.trainer_mode=rac
    # This script runs this package's differentiable losses; the default, +rac.formulation=reward, is the
    # paper's reward shaping on stated confidence (bonuses added to the reward before the advantages).
    +rac.formulation=loss
    # Ranking loss weight: within a GRPO group, a higher-reward rollout must get higher confidence.
    +rac.rank_coef=1.0
    # Clean-corrupted loss weight: the same response must get lower confidence on a corrupted image.
    +rac.pair_coef=0.1
    # The corruptions and severities a twin draws from (one choice per rollout, deterministic per rollout).
    '+rac.corruption.names=[gaussian_noise,defocus_blur,patch_mask]'
    '+rac.corruption.severities=[1,3,5]'
    # Share of rollouts that get a corrupted twin; each twin is one more row in the update batch.
    +rac.corruption.fraction=0.5
    # Reward: verl's geo3k scorer for correctness (0/1) plus the Brier term on the stated confidence.
    reward.custom_reward_function.path=pkg://rac_losses.integrations.verl.reward
    reward.custom_reward_function.name=compute_score
)

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    data.train_files="$HOME/data/geo3k/train.parquet" \
    data.val_files="$HOME/data/geo3k/test.parquet" \
    data.train_batch_size=512 \
    data.max_prompt_length=1024 \
    data.max_response_length=2048 \
    data.filter_overlong_prompts=True \
    data.truncation='error' \
    data.image_key=images \
    actor_rollout_ref.model.path=Qwen/Qwen2.5-VL-3B-Instruct \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.use_fused_kernels=True \
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=10 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.01 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.entropy_coeff=0 \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=20 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.name="$ENGINE" \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.enable_chunked_prefill=False \
    actor_rollout_ref.rollout.enforce_eager=False \
    actor_rollout_ref.rollout.n=5 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=20 \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    trainer.logger="$LOGGER" \
    trainer.project_name='rac_geo3k' \
    trainer.experiment_name='qwen2_5_vl_3b_grpo_rac' \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=5 \
    trainer.total_epochs=15 \
    "${RAC_ARGS[@]}" \
    "$@"

#!/usr/bin/env bash
# The RAC paper's recipe (Qwen2.5-VL-7B-Instruct, REINFORCE++, RAC's reward shaping) on stock verl 0.9.1 with
# the rac-losses plugin: the hyper-parameters of the authors' release
# (examples/confidence_rl/run_qwen2_5_vl_7b_instruct.sh in GitHub Stellaris167/RAC), with the release's own
# dataset class, reward file and reward-shaping hook replaced by one flag, trainer.v1.trainer_mode=rac
# (the paper's formulation is its default). Logging goes to the console; add wandb with
# LOGGER='["console","wandb"]' (it needs WANDB_API_KEY).
#
# NOT RUN HERE: written on a CPU-only machine with no GPU. It needs a node of 8 GPUs and vLLM. What was
# checked (tests/integrations/verl/test_example.py): the command composes with verl 0.9.1's ppo_trainer
# config (Hydra), the actor and rollout configs convert to verl's dataclasses, and the rac trainer accepts
# the rac options with the rest of the config.
#
# Left out of the release's command, because stock verl 0.9.1 has no such option: the rollout's
# repetition_penalty 1.10 (verl's v1 agent loop samples with 1.0), data.max_model_len,
# data.inject_confidence (here: +rac.schema, the default) and data.split_data_source_by_corruption (here:
# the rac trainer reports validation per data source and per corruption_level, val-rac/{source}@T0.4/...,
# for validation files with a corruption_level column, as rac-corrupt testsets writes them).
#
# Usage: DATA_ROOT=/path/to/rac-data EXP=pair_main bash run_qwen2_5_vl_7b_rac_paper.sh [more Hydra overrides]
#   DATA_ROOT: the release's data layout: train/train.parquet, train/train_pair_main.parquet (a paired set,
#     as `rac-corrupt pairs` writes it: columns pair_id, is_noisy, corruption_level) and, for validation,
#     <benchmark>_test_processed{,_T0.2,...,_T1.0}/test.parquet for the six benchmarks below.
#   EXP: pair_main (ranking + corruption bonuses on the pre-built paired set, the paper's main run),
#     pair_generated (the same bonuses, the corrupted copies made on the fly from the unpaired set: the
#     paper's corruptions and 50/40/10 mix of levels, drawn per prompt instead of counted exactly),
#     ranking (ranking bonus only, the unpaired set) or baseline (no bonus: the paper's reward alone).
set -euo pipefail

: "${DATA_ROOT:?set DATA_ROOT to the RAC data folder}"
MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
EXP=${EXP:-pair_main}
LOGGER=${LOGGER:-'["console"]'}

case $EXP in
    pair_main) TRAIN=train/train_pair_main.parquet; RANK=0.2; PAIR=0.3; SOURCE=dataset ;;
    pair_generated) TRAIN=train/train.parquet; RANK=0.2; PAIR=0.3; SOURCE=generate ;;
    ranking) TRAIN=train/train.parquet; RANK=0.2; PAIR=0.0; SOURCE=off ;;
    baseline) TRAIN=train/train.parquet; RANK=0.0; PAIR=0.0; SOURCE=off ;;
    *) echo "unknown EXP=$EXP (pair_main, pair_generated, ranking or baseline)" >&2; exit 2 ;;
esac

# Validation: each benchmark clean and at the five corruption levels, as the paper evaluates.
VAL=()
for bench in m3cot mathverse mathvision mmmu scienceqa we_math; do
    for level in "" _T0.2 _T0.4 _T0.6 _T0.8 _T1.0; do
        VAL+=("'$DATA_ROOT/${bench}_test_processed${level}/test.parquet'")
    done
done
VAL_FILES="[$(IFS=,; echo "${VAL[*]}")]"

RAC_ARGS=(
    # The rac trainer mode (registered by the plugin at `import verl`): verl's sync v1 trainer. Its default
    # formulation is the paper's: the paper's reward is the reward function, the response schema is appended
    # to every prompt, the training set is sampled pair by pair (a clean prompt and its corrupted copy in one
    # batch), and the ranking and corruption bonuses are added to each response's reward before the advantages.
    trainer.v1.trainer_mode=rac
    # Where the corrupted prompts come from: the paired set's rows (dataset), copies made on the fly from
    # each image prompt (generate, the default), or none (off).
    +rac.corruption.source=$SOURCE
    # Ranking bonus weight (the paper's 0.2): within a prompt's rollouts, a more accurate one should state
    # a higher confidence.
    +rac.rank_coef=$RANK
    # Corruption bonus weight (0.3): a clean prompt's answer should state more confidence than the same
    # rollout index of its corrupted copy, by 0.05 + 0.1 * corruption level.
    +rac.pair_coef=$PAIR
    +rac.rank_margin=0.05
    +rac.pair_margin=0.05
    +rac.alpha=0.1
    # The paper's reward: format penalty 0.3, warmed up from 1.0 over 10 steps; tail-text penalty 0.1 (the
    # release's script; the reward's own default is 0.2).
    +rac.reward.format_coef=0.3
    +rac.reward.format_warmup_start=1.0
    +rac.reward.format_warmup_steps=10
    +rac.reward.tail_penalty_coef=0.1
)

python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=reinforce_plus_plus \
    algorithm.use_kl_in_reward=false \
    data.train_files="$DATA_ROOT/$TRAIN" \
    data.val_files="$VAL_FILES" \
    data.train_batch_size=512 \
    data.max_prompt_length=2500 \
    data.max_response_length=3072 \
    data.prompt_key=message_qwenvl \
    data.image_key=images \
    data.reward_fn_key=data_source \
    data.trust_remote_code=true \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.model.trust_remote_code=true \
    actor_rollout_ref.model.use_remove_padding=true \
    +actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.optim.lr_warmup_steps=5 \
    actor_rollout_ref.actor.optim.lr_scheduler_type=cosine \
    actor_rollout_ref.actor.optim.min_lr_ratio=0.5 \
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_dynamic_bsz=true \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576 \
    actor_rollout_ref.actor.use_torch_compile=false \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.use_kl_loss=true \
    actor_rollout_ref.actor.kl_loss_coef=0.005 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.fsdp_config.param_offload=true \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=true \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=0.6 \
    actor_rollout_ref.rollout.top_p=0.95 \
    actor_rollout_ref.rollout.top_k=20 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.85 \
    actor_rollout_ref.rollout.max_num_seqs=256 \
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=20 \
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24576 \
    actor_rollout_ref.rollout.val_kwargs.n=1 \
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6 \
    actor_rollout_ref.rollout.val_kwargs.top_p=0.95 \
    actor_rollout_ref.rollout.val_kwargs.top_k=20 \
    actor_rollout_ref.rollout.val_kwargs.do_sample=true \
    actor_rollout_ref.ref.fsdp_config.param_offload=true \
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=20 \
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=49152 \
    trainer.total_epochs=2 \
    trainer.save_freq=6 \
    trainer.test_freq=6 \
    trainer.project_name=rac-paper \
    trainer.experiment_name="qwen2.5vl7b-reinforce_plus_plus-$EXP" \
    trainer.logger="$LOGGER" \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    "${RAC_ARGS[@]}" \
    "$@"

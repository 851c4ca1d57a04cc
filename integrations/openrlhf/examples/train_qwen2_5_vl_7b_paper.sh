#!/usr/bin/env bash
# The paper's RAC (reward formulation) on Qwen2.5-VL-7B-Instruct through stock OpenRLHF 0.11.x, with the
# hyper-parameters of the authors' recipe (their verl script examples/confidence_rl/run_qwen2_5_vl_7b_instruct.sh,
# EXP=pair_main), translated flag by flag. One node, 8 GPUs.
#
# NOT RUN by this project: it needs CUDA GPUs, vLLM and flash-attn, which the project's CPU machines lack.
# The test suite checks its command line (every OpenRLHF flag parses with OpenRLHF's own parser, every
# --rac flag validates), not its training behaviour. Adjust paths, GPU counts and batch sizes to your cluster.
#
#   pip install "rac-losses[openrlhf]"
#   DATA=train.parquet bash train_qwen2_5_vl_7b_paper.sh [more OpenRLHF or --rac.* flags]
#
# DATA: a parquet of prompts with an `images` column. Corrupted copies are made on the fly (default). To
# train on the paper's pre-built pairs instead, build them with
#   rac-corrupt pairs train.parquet pairs/      # writes pairs/train_pair_main.parquet (50/40/10 mix)
# and run with DATA=pairs/train_pair_main.parquet --rac.corruption.source dataset.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}
DATA=${DATA:?set DATA to a training parquet (see the header)}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-answer}
OUT=${OUT:-./ckpt/qwen2_5_vl_7b_rac_paper}

ARGS=(
  # --- OpenRLHF (colocated actor / reference / vLLM on 8 GPUs, OpenRLHF's own memory settings) ---
  --ref.num_nodes 1 --ref.num_gpus_per_node 8
  --actor.num_nodes 1 --actor.num_gpus_per_node 8
  --vllm.num_engines 8 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.6
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep
  --actor.model_name_or_path "$MODEL"
  --ckpt.output_dir "$OUT" --ckpt.save_hf --ckpt.save_steps 6
  --data.prompt_dataset "$DATA" --data.input_key "$INPUT_KEY" --data.label_key "$LABEL_KEY"
  --data.image_key images --data.max_images_per_prompt 1 --data.apply_chat_template
  # the recipe's prompt (2500) + response (3072) lengths
  --data.max_len 5572 --rollout.max_new_tokens 3072
  # 512 prompts per rollout batch (clean prompts and their corrupted copies, as the release's paired files
  # count rows), 8 samples each; 128 prompts x 8 samples per optimiser step: 4 steps per rollout batch
  --rollout.batch_size 512 --rollout.n_samples_per_prompt 8
  --train.batch_size 1024
  # memory settings (the recipe packs 24k tokens per GPU with dynamic batching)
  --train.micro_batch_size 2 --rollout.micro_batch_size 8
  # the recipe's 2 epochs over the training set
  --train.num_episodes 2
  # sampling: temperature 0.6, top-p 0.95 (the recipe's top-k 20 and repetition penalty 1.1 have no
  # OpenRLHF flag; vLLM's defaults apply)
  --rollout.temperature 0.6 --rollout.top_p 0.95
  # reinforce_plus_plus in verl is OpenRLHF's `reinforce` (REINFORCE++)
  --algo.advantage.estimator reinforce
  # KL as a loss, coefficient 0.005, the low-variance (k3) estimator; no KL in the reward
  --algo.kl.use_loss --algo.kl.init_coef 0.005 --algo.kl.estimator k3
  # asymmetric clipping 0.2 / 0.28
  --actor.eps_clip_low_high 0.2 0.28
  # learning rate 1e-6, cosine decay to half of it (the recipe warms up for 5 steps; OpenRLHF takes a ratio)
  --actor.adam.lr 1e-6 --actor.lr_scheduler cosine_with_min_lr --actor.min_lr_ratio 0.5
  --actor.gradient_checkpointing_enable --ds.zero_stage 2 --ds.adam_offload

  # --- RAC, the paper's formulation (rac-openrlhf's default; every value below is its default) ---
  --rac.formulation reward
  # append the response schema (<think>, <answer>, <confidence>) to every prompt's last user turn
  --rac.schema true
  # the per-sample reward (the shipped reward file, added by the launcher): answer accuracy, a format
  # penalty that goes from 1.0 to 0.3 over the first 10 steps, a penalty on text after </confidence>
  # (the recipe passes 0.1; the release's own default is 0.2)
  --rac.reward.format_coef 0.3 --rac.reward.format_warmup_start 1.0 --rac.reward.format_warmup_steps 10
  --rac.reward.tail_penalty_coef 0.1
  # ranking bonus: within a prompt's 8 samples, a more accurate one must state a higher confidence (margin 0.05)
  --rac.rank_coef 0.2 --rac.rank_margin 0.05
  # clean-corrupted bonus: the k-th sample of a correct clean prompt must state more confidence than the
  # k-th sample of its corrupted copy, by 0.05 + 0.1 * level
  --rac.pair_coef 0.3 --rac.pair_margin 0.05 --rac.alpha 0.1
  # corrupted copies: every image prompt gets one, as its own prompt in the same rollout batch; one of the
  # release's 8 corruptions (its own definitions), level 0.2 / 0.4 / 0.6 with probability 0.5 / 0.4 / 0.1
  --rac.corruption.source generate --rac.corruption.fraction 1.0
  --rac.corruption.names paper --rac.corruption.severities 1,2,3 --rac.corruption.weights 0.5,0.4,0.1
  --rac.corruption.seed 0
)

exec rac-openrlhf "${ARGS[@]}" "$@"

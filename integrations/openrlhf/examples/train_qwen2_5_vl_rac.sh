#!/usr/bin/env bash
# GRPO + RAC on Qwen2.5-VL-3B-Instruct with geometry3k, through OpenRLHF 0.11.x (one node, 8 GPUs).
#
# NOT RUN by this project: it needs CUDA GPUs, vLLM and flash-attn, which the project's CPU machines lack.
# Its flags are checked by the test suite (every OpenRLHF flag parses with OpenRLHF's own parser, every
# --rac flag validates), not its training behaviour. Adjust paths, GPU counts and batch sizes to your cluster.
#
#   pip install "rac-losses[openrlhf]"
#   bash train_qwen2_5_vl_rac.sh [more OpenRLHF or --rac.* flags]
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
OUT=${OUT:-./ckpt/qwen2_5_vl_3b_geo3k_rac}
# The reward file shipped with rac-losses: correct (last \boxed{} or <answer>, normalised string/number
# compare with the label) + the Brier reward of the response's <confidence>x</confidence>, in [0, 2].
REWARD=$(python -c "import rac_losses.integrations.openrlhf.reward as r; print(r.__file__)")

ARGS=(
  # --- OpenRLHF, unchanged (colocated actor / reference / vLLM on 8 GPUs) ---
  --ref.num_nodes 1 --ref.num_gpus_per_node 8
  --actor.num_nodes 1 --actor.num_gpus_per_node 8
  --vllm.num_engines 8 --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.6
  --train.colocate_all --vllm.enable_sleep --ds.enable_sleep
  --actor.model_name_or_path "$MODEL"
  --reward.remote_url "$REWARD"
  --ckpt.output_dir "$OUT" --ckpt.save_hf
  --data.prompt_dataset hiyouga/geometry3k --data.input_key problem --data.label_key answer
  --data.image_key images --data.max_images_per_prompt 1 --data.apply_chat_template
  --data.max_len 4096 --rollout.max_new_tokens 1024
  --rollout.batch_size 128 --rollout.n_samples_per_prompt 8
  # 8 samples per prompt = one group per rollout micro-batch: groups stay on one data-parallel rank
  --rollout.micro_batch_size 8
  --train.batch_size 1024 --train.micro_batch_size 2 --train.max_epochs 1
  --algo.advantage.estimator group_norm
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3
  --actor.adam.lr 1e-6 --actor.gradient_checkpointing_enable --ds.zero_stage 2
  # RAC reads per-token entropy (neg_entropy confidence of the pairwise loss): computed, not added as a loss.
  # (The launcher adds this flag itself when it is missing.)
  --actor.entropy_coef 0

  # --- RAC (every flag optional; defaults in `rac-openrlhf --help`) ---
  # This script uses the loss formulation (RAC terms in the policy loss); the paper's reward formulation,
  # rac-openrlhf's default, is in train_qwen2_5_vl_7b_paper.sh.
  --rac.formulation loss
  # Ranking loss: within a prompt's 8 rollouts, a higher reward must get a higher confidence
  # (length-normalised mean token log-prob), logistic comparison at inverse temperature 2.
  --rac.rank_coef 1.0 --rac.rank_confidence mean_logprob --rac.rank_scale 2.0
  # Clean-vs-corrupted loss: the same response must be less confident (minus mean token entropy) on a
  # corrupted image; only the corrupted side gets gradient (pair_detach_clean). Small coefficient: the
  # project's prototype saw malformed answers when it was large.
  --rac.pair_coef 0.1 --rac.pair_confidence neg_entropy
  # Half of the rollouts get a corrupted twin (one extra actor forward and backward each), with one of
  # these corruptions at severity 3..5, chosen per rollout from a hash of its tokens (reproducible).
  --rac.corruption.fraction 0.5
  --rac.corruption.names gaussian_noise,defocus_blur,pixelate,jpeg_compression,contrast
  --rac.corruption.severities 3,4,5
  --rac.corruption.seed 0
)

exec rac-openrlhf "${ARGS[@]}" "$@"

"""Test-only: a tiny random Qwen2.5-VL (about 60k parameters) saved to a folder verl can load."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

VOCAB = 160
IMAGE_TOKEN, VISION_START, VISION_END = 150, 152, 153
BOS, EOS, PAD = 1, 2, 0
PATCH, MERGE, TEMPORAL = 2, 2, 2
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH  # one row of pixel_values


def config() -> Qwen2_5_VLConfig:
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        ),
        vision_config=dict(
            depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=PATCH, spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL, out_hidden_size=32, in_channels=3, fullatt_block_indexes=[0], window_size=8,
        ),
        image_token_id=IMAGE_TOKEN, video_token_id=151, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END, tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def save(path: Path, seed: int = 0) -> Path:
    """Write the model, generation config and a word-level tokenizer to ``path``; return it."""
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config()).save_pretrained(path)
    GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD).save_pretrained(path)
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS, "<unk>": 3} | {f"t{i}": i for i in range(4, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    return path

"""A tiny Qwen2.5-VL processor built from config objects (no download), for the verl agent-loop tests.

Vocabulary: ``<pad> <s> </s> <unk>``, words ``t4 .. t149`` (ids 4..149), then the chat and vision
markers (ids 150..): ``<|image_pad|> <|video_pad|> <|vision_start|> <|vision_end|> <|im_start|>
<|im_end|>`` and ``\\n``, then the words of an answer with a stated confidence,
``#### 42 <confidence> 0.8 </confidence>`` (a response verl's gsm8k scorer and the reward hook can read).
The image processor uses 2-pixel patches merged 2x2, so a ``W x H`` image (multiples of 4, inside the
pixel bounds) becomes a ``[1, H/2, W/2]`` grid and ``H*W/16`` image tokens.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil
from transformers.video_processing_utils import BaseVideoProcessor

__all__ = ["ANSWER_WORDS", "CHAT_TEMPLATE", "MARKERS", "tiny_vl_processor"]

ANSWER_WORDS = ("####", "42", "<confidence>", "0.8", "</confidence>")
MARKERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>", "\n")

#: ChatML-like: each message is ``<|im_start|>role\n<content><|im_end|>\n``; an image block renders
#: ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands the pad to the grid's tokens).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _ImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor with a bare video processor: without torchvision, transformers' class check
    compares against a dummy ``BaseVideoProcessor`` and rejects every real one."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and isinstance(argument, BaseVideoProcessor):
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


def tiny_vl_processor() -> Qwen2_5_VLProcessor:
    """A fresh tiny processor: tokenizer, PIL image processor, a bare video processor (the tests send no
    video; Qwen2VLVideoProcessor needs torchvision) and the chat template."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"t{i}": i for i in range(4, 150)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS[:-1]])
    backend.add_tokens([AddedToken(w, special=False, normalized=False) for w in ("\n", *ANSWER_WORDS)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    sizes = {"shortest_edge": 16, "longest_edge": 64 * 64}
    image_processor = Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, temporal_patch_size=2, size=sizes)
    return _ImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=BaseVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )

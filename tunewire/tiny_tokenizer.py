"""A small byte-level BPE tokenizer with a ChatML template, trained offline.

The tokenizer is trained with Hugging Face `tokenizers` on `tiny_corpus.txt`
(bundled with the package), so building a model needs no network. Byte-level
pre-tokenization with the full 256-byte initial alphabet means every string,
in any script, can be encoded and decoded back unchanged.

Training is deterministic: `tokenizers` breaks ties between equally frequent
pairs by the pair itself, and the tests build the same tokenizer in separate
processes with different thread counts and compare the bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS_PATH = Path(__file__).with_name("tiny_corpus.txt")

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Listed first, so they get ids 0, 1 and 2, in this order.
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
EOS_TOKEN = IM_END
PAD_TOKEN = END_OF_TEXT

# The target size; BPE stops earlier when no pair in the corpus occurs twice
# more (the bundled corpus gives 1,786 tokens).
TARGET_VOCAB_SIZE = 2048

# Qwen's ChatML: `<|im_start|>role\ncontent<|im_end|>\n` per message.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(corpus_path: Path = CORPUS_PATH, vocab_size: int = TARGET_VOCAB_SIZE):
    """Train the byte-level BPE tokenizer; returns a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = corpus_path.read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def special_token_ids(tokenizer) -> dict[str, int]:
    return {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}


def tokenizer_config(model_max_length: int, ids: dict[str, int]) -> dict:
    """The `tokenizer_config.json` transformers' AutoTokenizer (and so mlx-lm) reads."""
    added = {
        str(ids[token]): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def special_tokens_map() -> dict:
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
    }


def write_tokenizer_files(out_dir: Path, tokenizer, model_max_length: int) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    # `to_str` serializes the vocabulary in id order and merges in rank order:
    # stable for a given tokenizer, and readable (unlike a key-sorted vocab).
    (out_dir / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    ids = special_token_ids(tokenizer)
    write_json(out_dir / "tokenizer_config.json", tokenizer_config(model_max_length, ids))
    write_json(out_dir / "special_tokens_map.json", special_tokens_map())


def write_json(path: Path, value: dict) -> None:
    """JSON with sorted keys and fixed formatting, so equal values give equal bytes."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")

"""The tokenizer of a GGUF model, rebuilt from its metadata with Hugging Face `tokenizers`.

GGUF keeps the vocabulary (`tokenizer.ggml.tokens`, `token_type`), the BPE
merges or SentencePiece scores, the special token ids and the chat template,
but not the pre-tokenizer: `tokenizer.ggml.pre` names one that llama.cpp
compiles in (`llama-vocab.cpp`). The table below gives each name we support
the pre-tokenizer of the original `tokenizer.json`; an unknown name is an
error rather than a tokenizer that silently splits text differently.

- `gpt2` model (byte-level BPE: SmolLM2, Llama 3, Qwen2): vocabulary and
  merges as stored.
- `llama` model (SentencePiece BPE: Llama 2, TinyLlama): merges derived from
  the scores the way transformers' `LlamaConverter` derives them, with byte
  fallback and the "▁" space marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre

from tunewire.models.gguf_arch import UnsupportedModel
from tunewire.models.gguf_file import GGUFFile

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types (`gguf.TokenType`)

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(split: str | None = None, digits: bool = False) -> pre.PreTokenizer:
    steps = []
    if digits:
        steps.append(pre.Digits(individual_digits=True))
    if split:
        steps.append(pre.Split(Regex(split), behavior="isolated", invert=False))
    steps.append(pre.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=split is None))
    return pre.Sequence(steps)


# tokenizer.ggml.pre → (pre-tokenizer, normalizer, BPE ignore_merges), as in the originals.
BPE_PRE = {
    "default": lambda: (_byte_level(), None, False),
    "gpt2": lambda: (_byte_level(), None, False),
    "smollm": lambda: (_byte_level(digits=True), None, False),
    "starcoder": lambda: (_byte_level(digits=True), None, False),
    "llama-bpe": lambda: (_byte_level(LLAMA3_SPLIT), None, True),
    "llama3": lambda: (_byte_level(LLAMA3_SPLIT), None, True),
    "qwen2": lambda: (_byte_level(QWEN2_SPLIT), normalizers.NFC(), False),
}


@dataclass
class RebuiltTokenizer:
    tokenizer: Tokenizer
    config: dict  # tokenizer_config.json
    special_tokens_map: dict
    eos_token_ids: list[int]
    bos_token_id: int | None
    pad_token_id: int | None


def rebuild_tokenizer(source: GGUFFile) -> RebuiltTokenizer:
    meta = source.metadata
    kind = meta.get("tokenizer.ggml.model")
    tokens = source.array("tokenizer.ggml.tokens")
    if not tokens:
        raise UnsupportedModel(f"{source.path} has no tokenizer (tokenizer.ggml.tokens)")
    types = source.array("tokenizer.ggml.token_type") or [1] * len(tokens)
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(source, tokens)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(source, tokens)
    else:
        raise UnsupportedModel(
            f"tokenizer model {kind!r} (tokenizer.ggml.model) is not supported; "
            "tunewire rebuilds 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE)"
        )
    tokenizer.add_tokens(
        [
            AddedToken(t, special=types[i] == CONTROL, normalized=False)
            for i, t in enumerate(tokens)
            if types[i] in (CONTROL, USER_DEFINED)
        ]
    )
    ids = _special_ids(meta)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    _post_processor(tokenizer, kind, tokens, ids.get("bos"), ids.get("eos"), add_bos, add_eos)
    named = {role: tokens[i] for role, i in ids.items() if i is not None and i < len(tokens)}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": named.get("bos"),
        "eos_token": named.get("eos"),
        "unk_token": named.get("unk"),
        "pad_token": named.get("pad"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(
            meta.get(f"{meta.get('general.architecture')}.context_length", 2048)
        ),
    }
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    specials = {f"{role}_token": text for role, text in named.items()}
    eos = [i for i in (ids.get("eos"), ids.get("eot")) if i is not None]
    return RebuiltTokenizer(
        tokenizer, config, specials, list(dict.fromkeys(eos)), ids.get("bos"), ids.get("pad")
    )


def _special_ids(meta: dict) -> dict[str, int | None]:
    keys = {
        "bos": "bos_token_id",
        "eos": "eos_token_id",
        "eot": "eot_token_id",
        "unk": "unknown_token_id",
        "pad": "padding_token_id",
    }
    found = {role: meta.get(f"tokenizer.ggml.{key}") for role, key in keys.items()}
    return {role: int(i) for role, i in found.items() if i is not None}


def _byte_level_bpe(source: GGUFFile, tokens: list[str]) -> Tokenizer:
    name = source.metadata.get("tokenizer.ggml.pre", "default")
    if name not in BPE_PRE:
        raise UnsupportedModel(
            f"pre-tokenizer {name!r} (tokenizer.ggml.pre) is not supported; "
            f"tunewire knows {', '.join(sorted(BPE_PRE))}"
        )
    merges = [tuple(m.split(" ", 1)) for m in source.array("tokenizer.ggml.merges") or []]
    pre_tokenizer, normalizer, ignore_merges = BPE_PRE[name]()
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(source: GGUFFile, tokens: list[str]) -> Tokenizer:
    scores = source.array("tokenizer.ggml.scores") or [0.0] * len(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}
    # transformers' SentencePieceExtractor: every split of a piece into two
    # pieces of the vocabulary is a merge, ranked by the merged piece's score.
    merges = []
    for piece, score in zip(tokens, scores):
        local = [
            (piece[:k], piece[k:], score)
            for k in range(1, len(piece))
            if piece[:k] in vocab and piece[k:] in vocab
        ]
        merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    merges.sort(key=lambda m: m[2], reverse=True)
    unk_id = source.metadata.get("tokenizer.ggml.unknown_token_id", 0)
    tokenizer = Tokenizer(
        models.BPE(
            vocab,
            [(a, b) for a, b, _ in merges],
            unk_token=tokens[int(unk_id)],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    steps = [normalizers.Replace(" ", "▁")]
    if source.metadata.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return tokenizer


def _post_processor(tokenizer, kind, tokens, bos, eos, add_bos, add_eos) -> None:
    single, special = "$A", []
    if add_bos and bos is not None:
        single, special = f"{tokens[bos]} {single}", [(tokens[bos], bos)]
    if add_eos and eos is not None:
        single += f" {tokens[eos]}"
        special.append((tokens[eos], eos))
    steps = []
    if kind == "gpt2":
        steps.append(processors.ByteLevel(trim_offsets=False))
    if special:
        pair = f"{single} {single.replace('$A', '$B')}"
        steps.append(
            processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
        )
    if steps:
        tokenizer.post_processor = processors.Sequence(steps) if len(steps) > 1 else steps[0]

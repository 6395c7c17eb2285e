"""A byte-level BPE tokenizer trained offline on the built-in corpus, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mmdpo.tiny.corpus import CORPUS

BOS_TOKEN = "<s>"
EOS_TOKEN = "<|im_end|>"  # a ChatML turn ends with it, so generation stops there (as in Qwen2)
PAD_TOKEN = "<|endoftext|>"  # Qwen2Tokenizer assumes it exists (its default unk and pad)
CHAT_TOKENS = ["<|im_start|>", EOS_TOKEN]
QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_IMAGE_TOKEN = "<image>"
# Idefics3Processor looks up all of these, and the row/col tags of a 6 x 6 tile grid.
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
IDEFICS3_TILE_TOKENS = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]

SPECIAL_TOKENS = list(
    dict.fromkeys(
        [PAD_TOKEN, BOS_TOKEN, *CHAT_TOKENS, *QWEN2_VL_TOKENS, LLAVA_IMAGE_TOKEN]
        + IDEFICS3_TOKENS
        + IDEFICS3_TILE_TOKENS
    )
)

# What an {"type": "image"} content part renders as, per family.
IMAGE_PLACEHOLDERS = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": "<image>",
    "idefics3": "<image>",
}

QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

DEFAULT_VOCAB_SIZE = 1024
DEFAULT_CACHE_DIR = Path(os.environ.get("MMDPO_TINY_CACHE", Path.home() / ".cache/mmdpo/tiny"))


def chat_template(image_placeholder: str = "<image>") -> str:
    """A ChatML template; content is a string or a list of text/image parts.

    `add_generation_prompt=True` appends the opening of an assistant turn. No BOS is added,
    as in Qwen2's template.
    """
    return (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'image' -%}{{ '" + image_placeholder + "' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    )


def _train(vocab_size: int) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    # Qwen2's normalizer and pre-tokenizer (digits split one by one): AutoTokenizer rebuilds a
    # saved "qwen2" checkpoint's tokenizer as Qwen2Tokenizer with these, whatever the file says,
    # so matching them keeps both load paths token-for-token identical.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in CORPUS.splitlines(keepends=True) if line.strip()]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer


def _wrap(tokenizer: tokenizers.Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
        ],
        chat_template=chat_template(),
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def _cache_key(vocab_size: int) -> str:
    settings = {
        "corpus": CORPUS,
        "special": SPECIAL_TOKENS,
        "vocab_size": vocab_size,
        "template": chat_template(),
        "tokenizers": tokenizers.__version__,
        "format": 2,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def build_tokenizer(
    cache_dir: str | os.PathLike | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    use_cache: bool = True,
) -> PreTrainedTokenizerFast:
    """Train (or load from the cache) the tiny byte-level BPE tokenizer.

    Deterministic: the same corpus and settings always give the same vocabulary. The cache
    entry is `<cache_dir>/tokenizer-<hash of corpus and settings>`; `cache_dir` defaults to
    `$MMDPO_TINY_CACHE` or `~/.cache/mmdpo/tiny`. Each call returns a fresh object, so callers
    may mutate it.
    """
    if not use_cache:
        return _wrap(_train(vocab_size))
    entry = Path(cache_dir or DEFAULT_CACHE_DIR) / f"tokenizer-{_cache_key(vocab_size)}"
    if (entry / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(entry)
    tokenizer = _wrap(_train(vocab_size))
    entry.parent.mkdir(parents=True, exist_ok=True)
    # Write elsewhere, then rename: concurrent test workers never see a half-written entry.
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".staging-"))
    try:
        tokenizer.save_pretrained(staging)
        os.replace(staging, entry)
    except OSError:  # another process won the race; its entry is identical
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer

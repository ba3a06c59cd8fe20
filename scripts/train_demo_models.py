"""Regenerate the bundled demo models from scratch: corpus, tokenizer, tiny GPT-2 and tiny OPT.

Deterministic (fixed seeds), CPU only. Both models see the same token stream: simple grammar text
(scripts/demo_corpus.py) where half of the training rows also hold a run of random tokens repeated later
at a random offset, which is what makes an induction head worth learning.

    python scripts/train_demo_models.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_corpus import corpus  # noqa: E402

OUT = ROOT / "opt_lens" / "demo_models"
SEED = 1234
VOCAB = 2048  # byte-level BPE pieces, before special tokens
CONTEXT = 256
OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # real OPT's ids 0..3
GPT2_EOS = "<|endoftext|>"


def train_bpe(texts: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    saved = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in saved["merges"]]
    return saved["vocab"], merges


def byte_level_tokenizer(vocab: dict[str, int], merges, specials: list[tuple[str, int]]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([token for token, _ in specials])
    return tokenizer


def make_tokenizers(pieces: dict[str, int], merges) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """GPT-2 style: pieces first, <|endoftext|> last. OPT style: <s> <pad> </s> <unk>, then the pieces
    shifted by four, and </s> prepended to every text, as the real OPT tokenizer does."""
    n = len(pieces)
    gpt2 = byte_level_tokenizer({**pieces, GPT2_EOS: n}, merges, [(GPT2_EOS, n)])
    opt_vocab = {token: i for i, token in enumerate(OPT_SPECIALS)} | {piece: i + 4 for piece, i in pieces.items()}
    opt = byte_level_tokenizer(opt_vocab, merges, [(t, i) for i, t in enumerate(OPT_SPECIALS)])
    opt.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)]),
    ])
    gpt2_fast = PreTrainedTokenizerFast(
        tokenizer_object=gpt2, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS,
        model_max_length=CONTEXT,
    )
    opt_fast = PreTrainedTokenizerFast(
        tokenizer_object=opt, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=CONTEXT,
    )
    return gpt2_fast, opt_fast


def training_rows(stream: torch.Tensor, n_rows: int, n_pieces: int, rng: random.Random) -> torch.Tensor:
    """Rows of CONTEXT - 1 piece ids (GPT-2 numbering); half hold a random run R repeated later: text, R,
    text, R, text, with R's length and both offsets random, so copying cannot rely on position."""
    rows = torch.empty(n_rows, CONTEXT - 1, dtype=torch.long)
    for row in range(n_rows):
        start = rng.randrange(len(stream) - CONTEXT)
        text = stream[start : start + CONTEXT - 1].clone()
        if rng.random() < 0.5:
            length = rng.randrange(8, 60)
            run = torch.tensor([rng.randrange(n_pieces) for _ in range(length)])
            first = rng.randrange(0, 40)
            second = first + length + rng.randrange(0, 40)
            text[first : first + length] = run
            end = min(second + length, CONTEXT - 1)
            text[second:end] = run[: end - second]
        rows[row] = text
    return rows


def train(model: torch.nn.Module, batches, steps: int, label: str) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = steps // 15

    def learning_rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    model.train()
    started = time.time()
    for step in range(steps):
        batch = batches(step)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{label} step {step:5d} loss {loss.item():.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    rng = random.Random(SEED)

    texts = corpus(40_000, seed=SEED)
    pieces, merges = train_bpe(texts)
    gpt2_tokenizer, opt_tokenizer = make_tokenizers(pieces, merges)
    eos = gpt2_tokenizer.eos_token_id
    stream = torch.tensor([t for text in texts for t in gpt2_tokenizer(text)["input_ids"] + [eos]])
    print(f"corpus: {len(texts)} stories, {len(stream)} tokens, {len(pieces)} pieces", flush=True)
    rows = training_rows(stream, args.steps * args.batch, len(pieces), rng)

    def gpt2_batches(step: int) -> torch.Tensor:
        return rows[step * args.batch : (step + 1) * args.batch]

    def opt_batches(step: int) -> torch.Tensor:
        # Same text in OPT's numbering: pieces shift by four, <|endoftext|> becomes </s>, and </s> leads.
        batch = torch.where(gpt2_batches(step) == eos, 2, gpt2_batches(step) + 4)
        return torch.cat([torch.full((len(batch), 1), 2), batch], dim=1)

    common = dict(n_layer=2, n_head=4, n_embd=128)
    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(pieces) + 1, n_positions=CONTEXT, bos_token_id=eos, eos_token_id=eos, **common,
    ))
    opt = OPTForCausalLM(OPTConfig(
        vocab_size=len(pieces) + 4, max_position_embeddings=CONTEXT, num_hidden_layers=2, num_attention_heads=4,
        hidden_size=128, ffn_dim=512, word_embed_proj_dim=128, do_layer_norm_before=True, activation_function="relu",
        bos_token_id=2, eos_token_id=2, pad_token_id=1, dropout=0.0, attention_dropout=0.0,
    ))
    for label, model, tokenizer, batches in (
        ("tiny-gpt2", gpt2, gpt2_tokenizer, gpt2_batches),
        ("tiny-opt", opt, opt_tokenizer, opt_batches),
    ):
        seconds = train(model, batches, args.steps, label)
        folder = args.out / label
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps(
            {"steps": args.steps, "batch": args.batch, "context": CONTEXT, "seconds": round(seconds),
             "stories": len(texts), "seed": SEED}, indent=2))
        print(f"{label}: saved to {folder} after {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()

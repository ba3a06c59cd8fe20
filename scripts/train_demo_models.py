"""Regenerate the bundled demo models from scratch: corpus, tokenizer, tiny GPT-2 and tiny OPT.

Deterministic (fixed seeds), CPU only, one process per model on a core each. Both models see the same token
stream: simple grammar text (scripts/demo_corpus.py) where a share of the training rows hold a span, mostly
random tokens, that comes back again and again at random offsets, which is what makes a previous-token head
and an induction head worth learning. Each folder gets its model card from scripts/measure_demo_models.py.

    python scripts/train_demo_models.py            # both models into opt_lens/demo_models/
    python scripts/train_demo_models.py --out /tmp/trial --models tiny-opt --steps 800
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_corpus import corpus  # noqa: E402
from measure_demo_models import best_head, measure, write_card  # noqa: E402
from train_tuned_lenses import STEPS as LENS_STEPS, train_lens_beside  # noqa: E402

import opt_lens  # noqa: E402
from opt_lens import heads  # noqa: E402
from opt_lens.tuned import DEMO_LENS_FOLDER  # noqa: E402

OUT = ROOT / "opt_lens" / "demo_models"
SEED = 1234
VOCAB = 2048  # byte-level BPE pieces, before special tokens
STORIES = 20_000
OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # real OPT's ids 0..3
GPT2_EOS = "<|endoftext|>"


@dataclass(frozen=True)
class Recipe:
    steps: int
    batch: int
    context: int  # tokens per training row, OPT's leading </s> included
    layers: int
    width: int
    heads: int
    lr: float
    repeat_share: float  # share of rows holding a span that comes back later
    sinusoid_init: bool  # start the learned positions from sinusoids (they are trained like any weight)
    random_background: float  # share of the repeat rows that are random pieces around the span too


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


def byte_level_tokenizer(vocab: dict[str, int], merges, specials: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(specials)
    return tokenizer


def make_tokenizers(
    pieces: dict[str, int], merges, context: int
) -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """GPT-2 style: pieces first, <|endoftext|> last. OPT style: <s> <pad> </s> <unk>, then the pieces
    shifted by four, and </s> prepended to every text, as the real OPT tokenizer does."""
    gpt2 = byte_level_tokenizer({**pieces, GPT2_EOS: len(pieces)}, merges, [GPT2_EOS])
    opt_vocab = {token: i for i, token in enumerate(OPT_SPECIALS)} | {piece: i + 4 for piece, i in pieces.items()}
    opt = byte_level_tokenizer(opt_vocab, merges, OPT_SPECIALS)
    opt.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)]),
    ])
    gpt2_fast = PreTrainedTokenizerFast(
        tokenizer_object=gpt2, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS, model_max_length=context
    )
    opt_fast = PreTrainedTokenizerFast(
        tokenizer_object=opt, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=context,
    )
    return gpt2_fast, opt_fast


def training_rows(
    stream: torch.Tensor, n_rows: int, width: int, n_pieces: int, rng: random.Random, recipe: Recipe
) -> torch.Tensor:
    """Rows of ``width`` piece ids (GPT-2 numbering). A ``repeat_share`` of them hold a span R that comes
    back again and again until the row ends, each time after a short random gap of text: R is mostly random
    pieces (only copying predicts it), else a span of the row's own text. R's length (2 to 47) and offsets
    are random, so copying cannot rely on position; R comes back often, so copying pays off on many tokens.
    In a ``random_background`` share of those rows everything around R is random pieces too, as in the probe
    that measures induction."""
    rows = torch.empty(n_rows, width, dtype=torch.long)
    for row in range(n_rows):
        start = rng.randrange(len(stream) - width)
        text = stream[start : start + width].clone()
        if rng.random() < recipe.repeat_share:
            if rng.random() < recipe.random_background:
                text = torch.tensor([rng.randrange(n_pieces) for _ in range(width)])
            # Log-uniform lengths: short runs, common here, teach copying itself fastest (few distinct
            # tokens to copy from); long ones need an induction head to find the right place.
            length = int(math.exp(rng.uniform(math.log(2), math.log(min(48, width // 2)))))
            at = rng.randrange(0, width - 2 * length)
            if rng.random() < 0.8:
                text[at : at + length] = torch.tensor([rng.randrange(n_pieces) for _ in range(length)])
            run = text[at : at + length].clone()
            at += length
            while at < width:
                at += 0 if rng.random() < 0.5 else rng.randrange(1, 10)
                end = min(at + length, width)
                text[at:end] = run[: max(0, end - at)]
                at = end
        rows[row] = text
    return rows


@dataclass(frozen=True)
class Probe:
    """Fixed rows to watch training by: random runs repeated once, and plain grammar text."""

    repeated: torch.Tensor  # [row, seq]: random prefix, run R, R again
    start: int
    period: int
    text: torch.Tensor  # [row, seq]


def make_probe(stream: torch.Tensor, n_pieces: int, width: int, to_model) -> Probe:
    generator = torch.Generator().manual_seed(SEED + 1)
    run = torch.randint(n_pieces, (8, 30), generator=generator)
    prefix = torch.randint(n_pieces, (8, 10), generator=generator)
    repeated, text = to_model(torch.cat([prefix, run, run], dim=1)), to_model(stream[: 8 * width].view(8, width))
    lead = repeated.shape[1] - 70  # what the model's numbering puts before the prefix (OPT's </s>)
    return Probe(repeated, lead + 10, 30, text)


def watch(model: torch.nn.Module, probe: Probe) -> str:
    """Copy gain (nats), best induction head and best previous-token head on the probe, for the log."""
    with torch.no_grad():
        out = model(input_ids=probe.repeated, output_attentions=True)
        text_attention = torch.stack(model(input_ids=probe.text, output_attentions=True).attentions, 1)
    attention = torch.stack(out.attentions, 1)  # [row, layer, head, query, key]
    induction = torch.stack([heads.induction_scores(a, probe.start, probe.period) for a in attention]).mean(0)
    previous = torch.stack([heads.previous_token_scores(a) for a in text_attention]).mean(0)  # [layer, head]
    gain = sum(
        heads.copying_loss_drop(logits, ids, probe.start, probe.period)
        for logits, ids in zip(out.logits, probe.repeated)
    ) / len(probe.repeated)
    best_ind, best_prev = best_head(induction), best_head(previous)
    return (f"copy gain {gain:.2f} induction L{best_ind[0]}.H{best_ind[1]} {induction.max():.2f}"
            f" previous L{best_prev[0]}.H{best_prev[1]} {previous.max():.2f}")


def train(model: torch.nn.Module, batches, recipe: Recipe, label: str, probe: Probe) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, recipe.steps // 20)

    def learning_rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (recipe.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    started = time.time()
    for step in range(recipe.steps):
        model.train()
        batch = batches(step)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == recipe.steps - 1:
            model.eval()
            print(f"{label} step {step:5d} loss {loss.item():.3f} {watch(model, probe)}"
                  f" ({time.time() - started:.0f} s)", flush=True)
    model.eval()
    return time.time() - started


def sinusoids(n_positions: int, width: int) -> torch.Tensor:
    """``[position, width]`` sines and cosines at geometric frequencies, scaled like the token embeddings.
    Shifting by one position is then a fixed rotation, which a previous-token head finds quickly."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]  # [position, 1]
    frequency = torch.exp(-math.log(10_000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    angles = position * frequency  # [position, width / 2]
    return 0.02 * math.sqrt(2) * torch.cat([angles.sin(), angles.cos()], dim=1)  # [position, width]


def build_gpt2(recipe: Recipe, vocab_size: int, eos: int) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=vocab_size, n_positions=recipe.context, n_layer=recipe.layers, n_head=recipe.heads,
        n_embd=recipe.width, activation_function="gelu_new", bos_token_id=eos, eos_token_id=eos,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        attn_implementation="eager",
    ))
    if recipe.sinusoid_init:
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoids(recipe.context, recipe.width))
    return model


def build_opt(recipe: Recipe, vocab_size: int) -> OPTForCausalLM:
    model = OPTForCausalLM(OPTConfig(
        vocab_size=vocab_size, max_position_embeddings=recipe.context, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, hidden_size=recipe.width, ffn_dim=4 * recipe.width,
        word_embed_proj_dim=recipe.width, do_layer_norm_before=True, activation_function="relu",
        bos_token_id=2, eos_token_id=2, pad_token_id=1, dropout=0.0, attention_dropout=0.0,
        tie_word_embeddings=True, attn_implementation="eager",
    ))
    if recipe.sinusoid_init:
        positions = model.model.decoder.embed_positions
        with torch.no_grad():  # OPT's position p is row p + 2 of its table (the offset)
            positions.weight[positions.offset :].copy_(sinusoids(recipe.context, recipe.width))
    return model


def train_one(label: str, recipe: Recipe, out: Path, lens_steps: int) -> str:
    """Build the corpus, tokenizer and rows (the same for every model, by the seeds), train one model,
    save it with its tokenizer and model card; returns the measured figures."""
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # one process per model on its own core beats two threads on one model
    rng = random.Random(SEED)
    texts = corpus(STORIES, seed=SEED)
    pieces, merges = train_bpe(texts)
    gpt2_tokenizer, opt_tokenizer = make_tokenizers(pieces, merges, recipe.context)
    eos = gpt2_tokenizer.eos_token_id
    encoded = gpt2_tokenizer.backend_tokenizer.encode_batch(texts)
    stream = torch.tensor([t for text in encoded for t in text.ids + [eos]])
    print(f"{label}: {len(texts)} stories, {len(stream)} tokens, {len(pieces)} pieces; {recipe}", flush=True)
    width = recipe.context - 1  # one token short of the context: OPT's rows get their leading </s> on top
    rows = training_rows(stream, recipe.steps * recipe.batch, width, len(pieces), rng, recipe)

    def as_gpt2(ids: torch.Tensor) -> torch.Tensor:
        return ids

    def as_opt(ids: torch.Tensor) -> torch.Tensor:
        # Same text in OPT's numbering: pieces shift by four, <|endoftext|> becomes </s>, and </s> leads.
        ids = torch.where(ids == eos, 2, ids + 4)
        return torch.cat([torch.full((len(ids), 1), 2), ids], dim=1)

    build, tokenizer, numbering = {
        "tiny-gpt2": (lambda: build_gpt2(recipe, len(pieces) + 1, eos), gpt2_tokenizer, as_gpt2),
        "tiny-opt": (lambda: build_opt(recipe, len(pieces) + 4), opt_tokenizer, as_opt),
    }[label]
    torch.manual_seed(SEED)  # each model starts from its own fixed initialisation
    model = build()
    probe = make_probe(stream, len(pieces), width, numbering)
    batches = lambda step: numbering(rows[step * recipe.batch : (step + 1) * recipe.batch])  # noqa: E731
    seconds = train(model, batches, recipe, label, probe)
    folder = out / label
    shutil.rmtree(folder, ignore_errors=True)  # nothing left over from an earlier recipe
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    facts = {"seconds": round(seconds), "stories": len(texts), "tokens": len(stream), "seed": SEED, "threads": 1}
    (folder / "training.json").write_text(json.dumps(asdict(recipe) | facts, indent=2) + "\n")
    lm = opt_lens.load(str(folder))
    figures = measure(lm)
    write_card(folder, lm, figures)
    lens = train_lens_beside(lm, folder / DEMO_LENS_FOLDER, lens_steps)  # the old lens read the old model
    return (f"{label}: saved to {folder} after {seconds:.0f} s; {figures.summary()}; its tuned lens trained in "
            f"{lens['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--repeat-share", type=float, default=0.6, help="share of rows with a repeated span")
    parser.add_argument("--random-background", type=float, default=0.0)
    parser.add_argument("--no-sinusoid-init", dest="sinusoid_init", action="store_false")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--lens-steps", type=int, default=LENS_STEPS, help="steps of each tuned lens")
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "tiny-opt"], choices=["tiny-gpt2", "tiny-opt"])
    args = parser.parse_args()
    recipe = Recipe(
        steps=args.steps, batch=args.batch, context=args.context, layers=args.layers, width=args.width,
        heads=args.heads, lr=args.lr, repeat_share=args.repeat_share, sinusoid_init=args.sinusoid_init,
        random_background=args.random_background,
    )
    started = time.time()
    # Each model trains in its own process on one core: both finish in about the time of one.
    with ProcessPoolExecutor(len(args.models), mp_context=multiprocessing.get_context("spawn")) as pool:
        for summary in pool.map(train_one, args.models, [recipe] * len(args.models), [args.out] * len(args.models),
                                [args.lens_steps] * len(args.models)):
            print(summary, flush=True)
    print(f"done in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

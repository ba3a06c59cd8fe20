"""Comparing two models on one prompt: hand-built cases with known answers, then tiny GPT-2 against tiny OPT."""

import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

import opt_lens
import tiny_models
from app import comparison
from opt_lens import compare
from opt_lens.attention import StoredPatterns
from opt_lens.lens import LensMap
from test_app import app, chart_rows, chart_title, charts, open_page
from test_capture import eager_attention

PROMPT = "The cat 😀 sat on the 日本 mat. 👩‍👧 The cat sat."


@pytest.fixture(scope="module")
def pair(tiny_lm):
    gpt2, opt = tiny_lm("gpt2"), tiny_lm("opt")
    return gpt2, opt, opt_lens.capture(gpt2, PROMPT), opt_lens.capture(opt, PROMPT)


def patterns_capture(attention: torch.Tensor) -> SimpleNamespace:
    """What match_heads reads of a capture: its patterns ``[layer, head, query, key]``, made by hand."""
    seq = attention.shape[-1]
    return SimpleNamespace(patterns=StoredPatterns(attention), seq_len=seq, attention_tokens=seq)


def fake_capture(text: str, pieces: list[tuple[str, int, int]]) -> SimpleNamespace:
    """What align_tokens reads of a capture: (display token, start, end) per token; ids are the positions."""
    return SimpleNamespace(
        text=text,
        tokens=[token for token, _, _ in pieces],
        offsets=[(start, end) for _, start, end in pieces],
        input_ids=torch.arange(len(pieces)),
        seq_len=len(pieces),
    )


# ---------------------------------------------------------------------------------------------- tokens


def test_alignment_by_characters_leaves_bos_and_different_splits_unaligned():
    text = "The 😀."
    a = fake_capture(text, [("The", 0, 3), ("␣<0xF0><0x9F><0x98>", 3, 5), ("<0x80>", 4, 5), (".", 5, 6)])
    b = fake_capture(text, [("</s>", 0, 0), ("T", 0, 1), ("he", 1, 3), ("␣<0xF0><0x9F><0x98>", 3, 5),
                            ("<0x80>", 4, 5), (".", 5, 6), ("</s>", 0, 0)])
    alignment = compare.align_tokens(a, b)
    assert alignment.pairs == [(1, 3), (2, 4), (3, 5)]
    assert [(row.token_a, row.token_b, row.start, row.end) for row in alignment.unaligned] == [
        (None, "</s>", 0, 0), (None, "T", 0, 1), ("The", None, 0, 3), (None, "he", 1, 3), (None, "</s>", 6, 6)
    ]
    table = alignment.table()
    assert table[0] == {"span": "0-0", "text": "", "token A": None, "token B": "</s>", "id A": None, "id B": 0,
                        "aligned": False}
    assert [row["text"] for row in table if row["aligned"]] == [" 😀", "😀", "."]


def test_the_same_special_at_the_same_place_pairs_up():
    text = "Hi"
    b = fake_capture(text, [("</s>", 0, 0), ("Hi", 0, 2), ("</s>", 0, 0)])
    other = fake_capture(text, [("<s>", 0, 0), ("Hi", 0, 2), ("</s>", 0, 0)])
    assert compare.align_tokens(b, b).pairs == [(0, 0), (1, 1), (2, 2)]
    alignment = compare.align_tokens(b, other)
    assert alignment.pairs == [(1, 1), (2, 2)]
    assert [(row.token_a, row.token_b) for row in alignment.unaligned] == [("</s>", None), (None, "<s>")]


def test_split_characters_pair_only_where_both_split_them_alike():
    text = "a😀"
    a = fake_capture(text, [("a", 0, 1), ("<0xF0><0x9F>", 1, 2), ("<0x98><0x80>", 1, 2)])
    # Same spans, other bytes in each piece: the spans alone would pair them wrongly.
    b = fake_capture(text, [("a", 0, 1), ("<0xF0>", 1, 2), ("<0x9F><0x98><0x80>", 1, 2)])
    assert compare.align_tokens(a, b).pairs == [(0, 0)]
    assert compare.align_tokens(a, a).pairs == [(0, 0), (1, 1), (2, 2)]


def test_real_models_align_every_piece_but_opts_bos(pair):
    _, _, a, b = pair
    alignment = compare.align_tokens(a, b)
    assert [(row.token_b, row.position_b) for row in alignment.unaligned] == [("</s>", 0)]
    assert alignment.pairs == [(i, i + 1) for i in range(a.seq_len)]  # the same BPE, shifted by OPT's </s>
    for row in alignment.rows[1:]:
        assert row.token_a == row.token_b and row.id_a == row.id_b and row.text == PROMPT[row.start : row.end]
    split = [row for row in alignment.rows if row.text in ("😀", "日", "本", "👩", "\u200d", "👧")]
    assert len(split) >= 6 and all(row.aligned for row in split), "pieces of split characters align one by one"
    assert len(alignment.table()) == a.seq_len + 1


def test_tokenized_prompts_align_without_running_a_model():
    """The real GPT-2 BPE and OPT's tokenizer (the same BPE plus a leading </s>), tokenized only."""
    from opt_lens.tokens import tokenize

    text = "The cat sat"
    a = tokenize(tiny_models.gpt2_tokenizer(), text, max_tokens=64)
    b = tokenize(tiny_models.opt_tokenizer(), text, max_tokens=64)
    assert a.tokens == ["The", "␣cat", "␣sat"] and b.tokens == ["</s>", "The", "␣cat", "␣sat"]
    alignment = compare.align_tokens(a, b)
    assert alignment.pairs == [(0, 1), (1, 2), (2, 3)]
    assert [(row.token_b, row.start, row.end) for row in alignment.unaligned] == [("</s>", 0, 0)]
    with pytest.raises(opt_lens.OptLensError, match="same prompt"):  # not an assert, which python -O drops
        compare.align_tokens(a, tokenize(tiny_models.opt_tokenizer(), "The cat sat.", max_tokens=64))


# ---------------------------------------------------------------------------------------- next token


def byte_level_lm(vocab: dict[str, int], special: str) -> SimpleNamespace:
    return SimpleNamespace(tokenizer=GPT2TokenizerFast(vocab=vocab, merges=[], eos_token=special, unk_token=special))


def sentencepiece_lm(vocab: dict[str, int], special: str) -> SimpleNamespace:
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=special))
    return SimpleNamespace(tokenizer=PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=special))


def logits_of(probs: list[float]) -> SimpleNamespace:
    return SimpleNamespace(next_logits=torch.tensor(probs, dtype=torch.float64).log())


def test_next_token_divergences_by_hand():
    # A spells bytes GPT-2's way, B SentencePiece's way ("▁" for a space, "<0x61>" for "a"), with other ids.
    lm_a = byte_level_lm({"a": 0, "b": 1, "Ġc": 2, "<|endoftext|>": 3}, "<|endoftext|>")
    lm_b = sentencepiece_lm({"▁c": 0, "<0x61>": 1, "d": 2, "b": 3, "</s>": 4}, "</s>")
    a = logits_of([0.5, 0.25, 0.15, 0.1])
    b = logits_of([0.3, 0.32, 0.08, 0.2, 0.06, 0.04])  # id 5: model padding beyond the tokenizer
    result = compare.compare_next_tokens(lm_a, a, lm_b, b, k=2)

    # Shared support: "a", "b", " c" and the end of the text (A's <|endoftext|> is B's </s>).
    # A leaves out nothing; B leaves out "d" and the padding id.
    q_a = [0.5, 0.25, 0.15, 0.1]
    q_b = [0.32 / 0.88, 0.2 / 0.88, 0.3 / 0.88, 0.06 / 0.88]
    kl = lambda p, q: sum(x * math.log(x / y) for x, y in zip(p, q))  # noqa: E731
    m = [(x + y) / 2 for x, y in zip(q_a, q_b)]
    assert result.shared_vocabulary == 4
    assert result.mass_outside_a == pytest.approx(0, abs=1e-12)
    assert result.mass_outside_b == pytest.approx(0.12, abs=1e-12)
    assert result.kl_a_b == pytest.approx(kl(q_a, q_b), abs=1e-12)
    assert result.kl_b_a == pytest.approx(kl(q_b, q_a), abs=1e-12)
    assert result.js == pytest.approx(0.5 * kl(q_a, m) + 0.5 * kl(q_b, m), abs=1e-12)
    assert result.top_a == [("a", pytest.approx(0.5)), ("b", pytest.approx(0.25))]
    assert result.top_b == [("<0x61>", pytest.approx(0.32)), ("␣c", pytest.approx(0.3))]
    assert result.shared_top == ["a"] and result.top_k_overlap == 0.5  # B's "<0x61>" is A's "a"
    everything = compare.compare_next_tokens(lm_a, a, lm_b, b, k=6)
    assert [token for token, _ in everything.top_b][-2:] == ["</s>", "<id 5>"]
    assert everything.top_k_overlap == 4 / 6  # "a", "b", " c" and the end of the text; not padding
    assert everything.shared_top == ["a", "b", "␣c", "<|endoftext|>"]


def test_only_the_end_of_text_special_is_shared():
    lm_a = byte_level_lm({"a": 0, "<|endoftext|>": 1, "<pad>": 2}, "<|endoftext|>")
    lm_b = byte_level_lm({"a": 0, "<pad>": 1, "</s>": 2}, "</s>")
    for lm in (lm_a, lm_b):
        lm.tokenizer.add_special_tokens({"pad_token": "<pad>"})
    result = compare.compare_next_tokens(lm_a, logits_of([0.5, 0.3, 0.2]), lm_b, logits_of([0.6, 0.1, 0.3]), k=3)
    # The divergences compare "a" and the end of the text; <pad>, though named alike, is no guess of a text.
    assert result.shared_vocabulary == 2
    assert result.mass_outside_a == pytest.approx(0.2) and result.mass_outside_b == pytest.approx(0.1)
    assert result.shared_top == ["a", "<|endoftext|>", "<pad>"]  # the top lists pair specials by name


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_a_number_of_guesses_that_is_not_a_positive_whole_number_is_a_clear_error(k):
    # An OptLensError, not an assert: a notebook passes k, and python -O would drop an assert (k=0 then divides by 0).
    lm = byte_level_lm({"a": 0, "<|endoftext|>": 1}, "<|endoftext|>")
    with pytest.raises(opt_lens.OptLensError, match="whole number of at least 1"):
        compare.compare_next_tokens(lm, logits_of([0.5, 0.5]), lm, logits_of([0.5, 0.5]), k=k)


def test_kl_and_js_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert compare.kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5))
    assert compare.kl_divergence(p, p) == 0 and compare.js_divergence(p, p) == 0
    # A zero in P contributes nothing; disjoint distributions reach the JS bound ln 2.
    assert compare.kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])) == pytest.approx(math.log(2))
    assert compare.js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(math.log(2))


def test_model_against_itself_agrees_completely(pair):
    gpt2, _, a, _ = pair
    result = compare.compare_next_tokens(gpt2, a, gpt2, a, k=5)
    assert result.kl_a_b == 0 and result.kl_b_a == 0 and result.js == pytest.approx(0, abs=1e-15)
    assert result.top_k_overlap == 1.0 and result.top_a == result.top_b and len(result.shared_top) == 5
    assert result.mass_outside_a == 0  # every piece, <|endoftext|> included, is on the compared support


def test_gpt2_against_opt_matches_by_piece_not_id(pair):
    gpt2, opt, a, b = pair
    result = compare.compare_next_tokens(gpt2, a, opt, b, k=10)
    assert result.shared_vocabulary == 50257  # GPT-2's 50256 pieces and the end of the text
    assert result.top_a == [(p.token, pytest.approx(p.probability)) for p in opt_lens.top_k_next(gpt2, a, k=10)]
    assert result.top_k_overlap == len(result.shared_top) / 10
    # This OPT's ordinary pieces have GPT-2's ids 0..50255; its </s> (end of text) stands for GPT-2's 50256.
    eos_b = opt.tokenizer.eos_token_id
    assert gpt2.tokenizer.eos_token_id == 50256 and eos_b > 50256
    logits_b = b.next_logits.double()
    log_a = torch.log_softmax(a.next_logits.double(), -1)
    log_b = torch.log_softmax(torch.cat([logits_b[:50256], logits_b[eos_b:eos_b + 1]]), -1)
    assert result.kl_a_b == pytest.approx(float((log_a.exp() * (log_a - log_b)).sum()), rel=1e-9)
    outside = torch.softmax(logits_b, -1)[50256:].sum() - torch.softmax(logits_b, -1)[eos_b]
    assert result.mass_outside_b == pytest.approx(outside.item())
    assert 0 < result.js < math.log(2)


def ranked_logits(vocab: int, ids: list[int]) -> SimpleNamespace:
    """Next-token logits whose top guesses are ``ids``, most likely first; every other id far below."""
    logits = torch.full((vocab,), -20.0, dtype=torch.float64)
    logits[ids] = torch.linspace(5.0, 1.0, len(ids), dtype=torch.float64)
    return SimpleNamespace(next_logits=logits)


def test_shared_guesses_are_marked_as_the_overlap_counts_them_end_of_text_as_one():
    # Issue 20.6: B's </s> was drawn "only here" beside A's <|endoftext|> "by both", and B's bars then showed
    # 7 shared guesses beside an 80 % overlap. Both models' ordinary pieces have GPT-2's ids here.
    gpt2 = SimpleNamespace(tokenizer=tiny_models.gpt2_tokenizer())
    opt = SimpleNamespace(tokenizer=tiny_models.opt_tokenizer())
    eos_a, eos_b = gpt2.tokenizer.eos_token_id, opt.tokenizer.eos_token_id
    a = ranked_logits(tiny_models.GPT2_VOCAB, [eos_a, 10, 11, 12, 13, 14, 15, 16, 17, 18])
    b = ranked_logits(tiny_models.OPT_VOCAB, [eos_b, 16, 15, 14, 13, 12, 11, 10, 300, 301])
    result = compare.compare_next_tokens(gpt2, a, opt, b, k=10)
    assert result.top_a[0][0] == "<|endoftext|>" and result.top_b[0][0] == "</s>"
    assert result.top_k_overlap == 0.8  # the end of the text and ids 10..16
    assert result.in_both_a == [True] * 8 + [False] * 2 and result.in_both_b == [True] * 8 + [False] * 2
    # What the Compare page draws: as many "by both" bars on each side as the overlap figure says.
    for top, in_both in ((result.top_a, result.in_both_a), (result.top_b, result.in_both_b)):
        bars = comparison._guesses(top, in_both)
        assert (bars.guessed == comparison.BY_BOTH).sum() == round(result.top_k_overlap * 10)
        assert bars.guessed.iloc[0] == comparison.BY_BOTH  # <|endoftext|> and </s>: one guess


def test_the_compare_pages_bars_say_by_both_as_often_as_the_overlap_figure_beside_them():
    # The demo models after two sentences: both put the end of the text first, GPT-2's way and OPT's way.
    at = open_page(app(prompt="Alice went to the park. Bob gave the ball to Alice.", model_b="demo/tiny-opt"),
                   "pages/compare.py")
    overlap = next(m.value for m in at.metric if m.label == "Top-10 overlap")
    bars = {chart_title(chart): chart_rows(chart) for chart in charts(at)[:2]}
    assert list(bars) == ["A: demo/tiny-gpt2", "B: demo/tiny-opt"]
    for rows in bars.values():
        assert f"{sum(row['guessed'] == 'by both' for row in rows) * 10}%" == overlap == "80%"
    assert [row["guessed"] for row in bars["B: demo/tiny-opt"] if row["token"] == "</s>"] == ["by both"]


# ----------------------------------------------------------------------------------------------- heads


def test_head_similarity_by_hand():
    # A: one layer, two heads on three tokens. B: the same tokens after a </s> at position 0.
    previous = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])  # attends to the token before
    uniform = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    a = patterns_capture(torch.stack([previous, uniform])[None])  # [layer, head, query, key]
    # B's head puts half of each row on </s>; over the aligned keys it is `uniform` again.
    with_bos = torch.zeros(4, 4)
    with_bos[:, 0] = 0.5
    with_bos[1:, 1:] = uniform / 2
    with_bos[0, 0] = 1
    b = patterns_capture(with_bos[None, None])
    alignment = SimpleNamespace(pairs=[(0, 1), (1, 2), (2, 3)])
    matches = compare.match_heads(a, b, alignment)
    # previous vs uniform, per row TV: 0, 0.5, 2/3; similarity 1 - mean.
    assert matches.similarity.tolist() == [[pytest.approx(1 - (0 + 0.5 + 2 / 3) / 3)], [pytest.approx(1.0)]]
    assert matches.heads_a == [(0, 0), (0, 1)] and matches.heads_b == [(0, 0)]
    assert matches.best_b == [0, 0] and matches.n_tokens == 3
    assert matches.top_pairs(1) == [((0, 1), (0, 0), pytest.approx(1.0))]
    # Against the uniform causal pattern: `uniform` is it, `previous` is as far from it as from B's head.
    assert matches.uniform_a == [pytest.approx(1 - (0 + 0.5 + 2 / 3) / 3), pytest.approx(1.0)]
    assert matches.uniform_b == [pytest.approx(1.0)]
    assert matches.above_baseline(1) == pytest.approx(0.0)  # two uniform heads: alike, but no shared job


@pytest.mark.parametrize("model", ["gpt2", "opt"])
def test_each_real_head_best_matches_itself(pair, model):
    capture = pair[2] if model == "gpt2" else pair[3]
    alignment = compare.align_tokens(capture, capture)
    assert alignment.pairs == [(i, i) for i in range(capture.seq_len)]  # OPT's </s> too
    matches = compare.match_heads(capture, capture, alignment)
    assert matches.similarity.shape == (12, 12)
    assert matches.best_b == list(range(12))
    assert matches.best_score == pytest.approx([1.0] * 12, abs=1e-6)


def test_real_heads_across_models_match_a_direct_computation(pair):
    _, _, a, b = pair
    matches = compare.match_heads(a, b, compare.align_tokens(a, b))
    # Every A position aligns with the B position after it; drop B's </s> column and renormalise.
    eager_a, eager_b = eager_attention("gpt2", a.input_ids), eager_attention("opt", b.input_ids)
    for i, (layer_a, head_a) in enumerate(matches.heads_a):
        for j, (layer_b, head_b) in enumerate(matches.heads_b):
            pa = eager_a[layer_a, head_a].double()
            pb = eager_b[layer_b, head_b, 1:, 1:].double()
            pb = pb / pb.sum(-1, keepdim=True)
            mean_tv = 0.5 * (pa - pb).abs().sum(-1).mean()
            assert matches.similarity[i, j].item() == pytest.approx(1 - mean_tv.item(), abs=1e-6)
    assert all(0 <= s <= 1 for s in matches.best_score)
    scores = [score for *_, score in matches.top_pairs(5)]
    assert scores == sorted(scores, reverse=True) and scores[0] == max(matches.best_score)


def test_blocks_of_query_rows_add_up_to_the_whole(pair, monkeypatch):
    _, _, a, b = pair
    alignment = compare.align_tokens(a, b)
    whole = compare.match_heads(a, b, alignment)
    monkeypatch.setattr(compare.head_matching, "_CELLS_PER_BLOCK", 7)  # many uneven blocks of query rows
    assert torch.allclose(compare.match_heads(a, b, alignment).similarity, whole.similarity, atol=1e-6)


def test_heads_match_on_the_tokens_both_prefix_captures_hold(pair, tiny_lm):
    gpt2, opt, a, b = pair
    short_a = opt_lens.capture(gpt2, PROMPT, attention_prefix=6)
    short_b = opt_lens.capture(opt, PROMPT, attention_prefix=9)
    alignment = compare.align_tokens(short_a, short_b)
    within = [(i, j) for i, j in alignment.pairs if i < 6 and j < 9]
    matches = compare.match_heads(short_a, short_b, alignment)
    assert matches.n_tokens == len(within) < len(alignment.pairs)
    expected = compare.match_heads(a, b, SimpleNamespace(pairs=within))  # full captures, the same tokens
    assert torch.allclose(matches.similarity, expected.similarity, atol=1e-6)


def test_match_heads_finds_every_head_at_gpt2_size():
    # Its cost at this size: benchmarks/small_costs.py.
    seq = 256
    scores = torch.randn(12, 12, seq, seq, generator=torch.Generator().manual_seed(0))
    attention = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), -math.inf).softmax(-1)
    a = patterns_capture(attention)
    b = patterns_capture(attention.flip(0, 1))  # the same heads in reverse order
    matches = compare.match_heads(a, b, SimpleNamespace(pairs=[(i, i) for i in range(seq)]))
    assert matches.best_b == list(reversed(range(144)))


# ----------------------------------------------------------------------------------------------- depth


def test_depth_curve_by_hand():
    # Two layers, one position: the top guess is "x" from the embeddings, "y" from layer 1 on.
    lens = LensMap(
        positions=[4],
        top_ids=torch.tensor([[7], [8], [8]]),
        top_probs=torch.tensor([[0.5], [0.4], [0.9]]),
        top_tokens=[["x"], ["y"], ["y"]],
        final_token_probs=torch.tensor([[0.1], [0.4], [0.9]]),
    )
    curve = compare.lens_depth_curve(lens, "m")
    assert curve == compare.DepthCurve(
        model_name="m", position=4, depth=[0, 0.5, 1], final_token="y",
        final_token_prob=pytest.approx([0.1, 0.4, 0.9]), top_token=["x", "y", "y"],
        top_prob=pytest.approx([0.5, 0.4, 0.9]), settled_depth=0.5,
    )


def test_real_depth_curves_share_one_scale(pair):
    gpt2, opt, a, b = pair
    curve_a = compare.lens_depth_curve(opt_lens.logit_lens_map(gpt2, a), gpt2.name)
    curve_b = compare.lens_depth_curve(opt_lens.logit_lens_map(opt, b), opt.name)
    assert curve_a.depth == curve_b.depth == [0, 1 / 3, 2 / 3, 1]  # both tiny models have three blocks
    assert (curve_a.position, curve_b.position) == (a.seq_len - 1, b.seq_len - 1)
    assert curve_a.final_token == opt_lens.top_k_next(gpt2, a, k=1)[0].token == curve_a.top_token[-1]
    assert curve_a.final_token_prob[-1] == pytest.approx(curve_a.top_prob[-1])
    direct = compare.depth_curve(opt, b)
    assert direct.top_token == curve_b.top_token and direct.model_name == opt.name
    assert direct.final_token_prob == pytest.approx(curve_b.final_token_prob, abs=1e-6)

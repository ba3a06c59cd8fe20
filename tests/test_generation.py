"""opt_lens.generate against independent references: transformers' own generate, and a plain forward pass."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import opt_lens
from opt_lens.generation import MAX_NEW_TOKENS, N_ALTERNATIVES, _draw

PROMPT = "The cat sat on the mat and"


@pytest.fixture(scope="module")
def demo_gpt2():
    return opt_lens.load("demo/tiny-gpt2")


def reference_greedy(lm, prompt_ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    ids = prompt_ids[None]  # [1, prompt]
    with torch.inference_mode():
        out = lm.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )  # [1, prompt + new]
    return out[0, ids.shape[1] :].tolist()


def plain_forward_logits(lm, ids: list[int]) -> torch.Tensor:
    """``[vocab]`` next-token logits from one forward over all of ``ids``, no cache."""
    with torch.inference_mode():
        return lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()  # [vocab]


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_greedy_equals_transformers_generate_on_tiny_models(tiny_lm, kind):
    lm = tiny_lm(kind)
    gen = opt_lens.generate(lm, PROMPT, max_new_tokens=12)
    assert gen.token_ids.tolist() == reference_greedy(lm, gen.prompt.input_ids, 12)
    assert len(gen.steps) == len(gen.tokens) == gen.token_ids.shape[0]


def test_greedy_equals_transformers_generate_on_demo_model(demo_gpt2):
    gen = opt_lens.generate(demo_gpt2, "Alice went to the park. Bob", max_new_tokens=30)
    reference = reference_greedy(demo_gpt2, gen.prompt.input_ids, 30)
    assert gen.token_ids.tolist() == reference
    assert gen.stop_reason == ("end_of_text" if len(reference) < 30 else "max_new_tokens")
    assert gen.text == demo_gpt2.tokenizer.decode(reference, skip_special_tokens=True)


def test_prompt_is_tokenized_like_capture(tiny_lm):
    lm = tiny_lm("opt")  # its tokenizer adds </s> in front
    gen = opt_lens.generate(lm, PROMPT, max_new_tokens=1)
    cap = opt_lens.capture(lm, PROMPT)
    assert torch.equal(gen.prompt.input_ids, cap.input_ids)
    assert gen.prompt.tokens == cap.tokens


def test_sampling_is_reproducible_from_the_seed(demo_gpt2):
    settings = dict(max_new_tokens=25, temperature=1.5)
    first = opt_lens.generate(demo_gpt2, PROMPT, seed=7, **settings)
    torch.manual_seed(123)  # the global generator must play no part
    again = opt_lens.generate(demo_gpt2, PROMPT, seed=7, **settings)
    other = opt_lens.generate(demo_gpt2, PROMPT, seed=8, **settings)
    assert first.token_ids.tolist() == again.token_ids.tolist()
    assert first.token_ids.tolist() != other.token_ids.tolist()


def test_sampling_leaves_the_global_random_state_alone(demo_gpt2):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    opt_lens.generate(demo_gpt2, PROMPT, max_new_tokens=5, temperature=1.0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "kind, temperature, top_k", [("gpt2", 0.0, None), ("gpt2", 0.7, 20), ("opt", 2.0, None), ("opt", 0.0, 3)]
)
def test_each_step_reports_the_distribution_a_plain_forward_gives(tiny_lm, kind, temperature, top_k):
    lm = tiny_lm(kind)
    gen = opt_lens.generate(lm, PROMPT, max_new_tokens=6, temperature=temperature, top_k=top_k, seed=1)
    ids = gen.prompt.input_ids.tolist()
    for step in gen.steps:
        logits = plain_forward_logits(lm, ids)  # [vocab]
        scaled = logits / (temperature or 1.0)  # [vocab]
        if top_k is not None:
            kept = torch.topk(logits, top_k).indices
            scaled = torch.full_like(scaled, float("-inf")).index_copy(0, kept, scaled[kept])
        probs = torch.softmax(scaled, dim=-1)  # [vocab]
        assert step.probability == pytest.approx(probs[step.token_id].item(), rel=1e-4, abs=1e-7)
        assert step.model_probability == pytest.approx(torch.softmax(logits, -1)[step.token_id].item(), rel=1e-4, abs=1e-7)
        top = torch.topk(probs, N_ALTERNATIVES)
        assert [alt.token_id for alt in step.alternatives] == top.indices.tolist()
        assert [alt.probability for alt in step.alternatives] == pytest.approx(top.values.tolist(), rel=1e-4, abs=1e-7)
        assert [alt.logit for alt in step.alternatives] == pytest.approx(logits[top.indices].tolist(), rel=1e-4, abs=1e-5)
        if temperature == 0:
            assert step.token_id == int(torch.argmax(logits)) and step.rank == 1
        ids.append(step.token_id)


def test_top_k_sampling_never_draws_outside_the_top_k(tiny_lm):
    lm = tiny_lm("gpt2")
    gen = opt_lens.generate(lm, PROMPT, max_new_tokens=40, temperature=5.0, top_k=3, seed=0)
    ids = gen.prompt.input_ids.tolist()
    for step in gen.steps:
        assert step.token_id in torch.topk(plain_forward_logits(lm, ids), 3).indices.tolist()
        assert step.rank <= 3 and len([a for a in step.alternatives if a.probability > 0]) == 3
        ids.append(step.token_id)
    # A temperature this high spreads the draws over the three: not always the most likely one.
    assert {step.rank for step in gen.steps} != {1}


def test_stops_when_the_context_is_full(tiny_lm):
    lm = tiny_lm("gpt2")  # a context of 128 tokens
    prompt = " cat" * 120  # one token each
    gen = opt_lens.generate(lm, prompt, max_new_tokens=20)
    assert gen.prompt.seq_len == 120
    assert len(gen.steps) == 8 and gen.stop_reason == "context_full" and gen.context_full
    assert gen.token_ids.tolist() == reference_greedy(lm, gen.prompt.input_ids, 8)


def test_a_prompt_that_fills_the_context_gets_no_new_tokens(tiny_lm):
    gen = opt_lens.generate(tiny_lm("gpt2"), " cat" * 200, max_new_tokens=5)
    assert gen.prompt.truncated and gen.prompt.seq_len == 128
    assert gen.steps == [] and gen.text == "" and gen.stop_reason == "context_full"


def test_stops_at_end_of_text_and_keeps_it_out_of_the_text(demo_gpt2):
    eos = demo_gpt2.model.generation_config.eos_token_id
    gen = opt_lens.generate(demo_gpt2, "Olga counted 7 goats near the valley", max_new_tokens=60)
    assert gen.stop_reason == "end_of_text"
    assert gen.token_ids[-1].item() == eos and eos not in gen.token_ids[:-1].tolist()
    assert gen.text == demo_gpt2.tokenizer.decode(gen.token_ids[:-1].tolist())


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(max_new_tokens=0), "new tokens"),
        (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "new tokens"),
        (dict(max_new_tokens=2.5), "new tokens"),
        (dict(max_new_tokens=True), "new tokens"),
        (dict(temperature=-0.1), "negative"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_k=0), "Top-k"),
        (dict(top_k=1.5), "Top-k"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**32), "seed"),
        (dict(seed="1"), "seed"),
    ],
)
def test_bad_settings_raise_a_clear_error(tiny_lm, settings, message):
    with pytest.raises(opt_lens.OptLensError, match=message):
        opt_lens.generate(tiny_lm("gpt2"), PROMPT, **settings)


def test_an_empty_prompt_raises_a_clear_error(tiny_lm):
    with pytest.raises(opt_lens.OptLensError, match="empty"):
        opt_lens.generate(tiny_lm("gpt2"), "")


def test_concurrent_runs_on_one_model_each_get_what_they_get_alone(demo_gpt2):
    seeds = [1, 2, 3]
    alone = [opt_lens.generate(demo_gpt2, PROMPT, max_new_tokens=10, temperature=1.0, seed=s).token_ids for s in seeds]
    with ThreadPoolExecutor(max_workers=len(seeds) + 1) as pool:
        capture = pool.submit(opt_lens.capture, demo_gpt2, PROMPT)
        together = list(
            pool.map(lambda s: opt_lens.generate(demo_gpt2, PROMPT, max_new_tokens=10, temperature=1.0, seed=s), seeds)
        )
    assert [gen.token_ids.tolist() for gen in together] == [ids.tolist() for ids in alone]
    assert torch.equal(capture.result().next_logits, opt_lens.capture(demo_gpt2, PROMPT).next_logits)


def test_draws_follow_the_distribution_they_are_drawn_from():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.15, 0.05, 0.0])
    generator = torch.Generator().manual_seed(0)
    n = 20_000
    drawn = Counter(_draw(probs, generator) for _ in range(n))
    assert set(drawn) == {1, 3, 4, 5}  # never a token of probability 0
    for token_id, count in drawn.items():  # within 4 standard deviations of a binomial count
        p = probs[token_id].item()
        assert abs(count / n - p) < 4 * (p * (1 - p) / n) ** 0.5

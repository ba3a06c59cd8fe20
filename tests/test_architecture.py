"""Architecture detection: every fact comes from the config and the module tree."""

import pytest
import torch
from transformers import BertConfig, GPT2Config, OPTConfig

import opt_lens
import tiny_models
from opt_lens.surgery import get_module

# Real configurations, built in code: the Hub is unreachable in tests.
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
OPT_125M = dict(
    num_hidden_layers=12, num_attention_heads=12, hidden_size=768, ffn_dim=3072, word_embed_proj_dim=768,
    max_position_embeddings=2048, vocab_size=50272,
)
OPT_350M = dict(
    num_hidden_layers=24, num_attention_heads=16, hidden_size=1024, ffn_dim=4096, word_embed_proj_dim=512,
    max_position_embeddings=2048, vocab_size=50272, do_layer_norm_before=False,
)


def test_gpt2_small_from_config_alone():
    arch = opt_lens.describe(GPT2Config(**GPT2_SMALL)).to_dict()
    assert arch["n_params"] == 124_439_808  # the published count, tied embeddings counted once
    assert (arch["n_layers"], arch["n_heads"], arch["d_model"], arch["d_head"], arch["d_mlp"]) == (12, 12, 768, 64, 3072)
    assert arch["norm"] == "pre" and arch["positional"] == "learned" and arch["position_offset"] == 0
    assert arch["activation"] == "gelu_new" and arch["tied_embeddings"] is True
    assert arch["attn_path"] == "transformer.h.N.attn" and arch["unembed_path"] == "lm_head"
    assert sum(arch["param_breakdown"].values()) == arch["n_params"]


def test_opt_125m_is_pre_ln_with_offset_two():
    arch = opt_lens.describe(OPTConfig(**OPT_125M))
    assert arch.n_params == 125_239_296
    assert arch.norm == "pre" and arch.position_offset == 2 and arch.activation == "relu"
    assert arch.paths.final_norm == "model.decoder.final_layer_norm"
    assert arch.paths.project_in is None and arch.paths.project_out is None
    assert arch.to_dict()["attn_path"] == "model.decoder.layers.N.self_attn"


def test_opt_350m_is_post_ln_with_projected_embeddings():
    arch = opt_lens.describe(OPTConfig(**OPT_350M))
    assert arch.norm == "post"
    assert arch.embed_dim == 512 and arch.d_model == 1024
    assert arch.paths.project_in == "model.decoder.project_in"
    assert arch.paths.project_out == "model.decoder.project_out"
    assert arch.paths.final_norm is None  # post-LN: the last block's output is already normalised
    assert arch.paths.readout() == ("model.decoder.project_out", "lm_head")
    assert arch.n_params == 331_196_416


def test_norm_placement_follows_the_config_not_the_name():
    config = OPTConfig(**{**OPT_125M, "do_layer_norm_before": False})
    config.name_or_path = "facebook/opt-125m"
    assert opt_lens.describe(config).norm == "post"


@pytest.mark.parametrize("kind", sorted(tiny_models.CONFIGS))
def test_every_family_resolves_its_parts(kind):
    model = tiny_models.build(kind)
    arch = opt_lens.describe(model)
    n_layers = model.config.num_hidden_layers
    assert arch.n_layers == n_layers
    for layer in range(n_layers):
        get_module(model, arch.paths.attn_of(layer))
        get_module(model, arch.paths.mlp_out_of(layer))
    assert get_module(model, arch.paths.embed) is model.get_input_embeddings()
    assert get_module(model, arch.paths.unembed) is model.get_output_embeddings()
    assert arch.n_params == sum(p.numel() for p in model.parameters())
    assert sum(arch.param_breakdown.values()) == arch.n_params
    assert arch.param_breakdown["attention"] > 0 and arch.param_breakdown["mlp"] > 0


@pytest.mark.parametrize("kind", sorted(tiny_models.CONFIGS))
def test_the_attention_output_projection_is_what_the_attention_returns(kind):
    """The detected projection is the last map of attention: what it outputs is the attention's output."""
    model = tiny_models.build(kind)
    arch = opt_lens.describe(model)
    seen = {}
    handles = []
    for layer in range(arch.n_layers):
        for name, path in (("attn", arch.paths.attn_of(layer)), ("proj", arch.paths.attn_out_proj_of(layer))):
            handles.append(get_module(model, path).register_forward_hook(
                lambda m, a, out, key=(name, layer): seen.__setitem__(key, out[0] if isinstance(out, tuple) else out)))
    try:
        with torch.no_grad():
            model(torch.arange(5)[None])
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(arch.n_layers):
        assert torch.equal(seen[("attn", layer)], seen[("proj", layer)]), (kind, layer)


@pytest.mark.parametrize(
    "kind, detection, positional",
    [
        ("gpt2", "family description", "learned"),
        ("opt", "family description", "learned"),
        ("gpt_neo", "generic detection", "learned"),
        ("gpt_neox", "generic detection", "rotary"),
        ("llama", "generic detection", "rotary"),
        ("qwen2", "generic detection", "rotary"),
    ],
)
def test_detection_kind_and_positions(kind, detection, positional):
    arch = opt_lens.describe(tiny_models.build(kind))
    assert arch.detection == detection and arch.positional == positional


def test_grouped_query_attention_is_reported():
    arch = opt_lens.describe(tiny_models.build("llama"))
    assert (arch.n_heads, arch.n_kv_heads) == (4, 2)
    assert arch.activation == "silu" and arch.norm == "pre"


def test_untied_unembedding_is_counted_separately():
    model = tiny_models.build("gpt_neox")  # Pythia-style: separate embed_out
    arch = opt_lens.describe(model)
    assert arch.tied_embeddings is False
    assert arch.param_breakdown["unembedding"] == model.get_output_embeddings().weight.numel()


def test_generic_detection_names_what_it_could_not_find():
    model = tiny_models.build("llama")
    for layer in model.model.layers:
        layer.feed_forward_renamed = layer.mlp
        del layer.mlp
    with pytest.raises(opt_lens.OptLensError, match="MLP"):
        opt_lens.describe(model)


def test_encoder_only_config_is_refused():
    with pytest.raises(opt_lens.OptLensError):
        opt_lens.describe(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64))


def test_describing_a_large_config_allocates_no_weights():
    config = OPTConfig(
        num_hidden_layers=32, num_attention_heads=32, hidden_size=2560, ffn_dim=10240, word_embed_proj_dim=2560,
        max_position_embeddings=2048, vocab_size=50272,
    )  # facebook/opt-2.7b
    arch = opt_lens.describe(config)
    assert 2.6e9 < arch.n_params < 2.7e9


def test_describe_rejects_other_objects():
    with pytest.raises(opt_lens.OptLensError):
        opt_lens.describe(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind", sorted(tiny_models.CONFIGS))
def test_the_attention_capture_path_is_reported_from_the_config(kind):
    from opt_lens import attention

    # GPT-Neo computes attention in its own classes, not through transformers' attention interface.
    expected = attention.EAGER if kind == "gpt_neo" else attention.RECORDED
    assert opt_lens.describe(tiny_models.CONFIGS[kind]()).attention_capture == expected
    assert opt_lens.describe(tiny_models.build(kind)).attention_capture == attention.EAGER  # built with eager

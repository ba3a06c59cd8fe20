"""Loading: demo names, local folders, the Hub (a stand-in on 127.0.0.1, see conftest.py), and every refusal."""

import errno
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from model_folders import copy_model, edit_config

import opt_lens
from opt_lens import hub, loading


@pytest.mark.parametrize(
    "name",
    ["", "   ", "../../etc/passwd", "/etc/passwd", "https://huggingface.co/gpt2", "http://evil.example/x",
     "a/b/c", "gpt2; rm -rf /", "org/..", "x" * 200, "foo--bar/baz", "-gpt2", None],
)
def test_bad_names_get_a_clear_error(name):
    with pytest.raises(opt_lens.OptLensError) as error:
        opt_lens.load(name, allow_local=False)
    assert "Traceback" not in str(error.value) and len(str(error.value)) < 200


def test_url_gets_a_hint_to_paste_the_id():
    with pytest.raises(opt_lens.OptLensError, match="ID"):
        opt_lens.validate_name("https://huggingface.co/facebook/opt-125m")


@pytest.mark.parametrize("name", ["gpt2", "facebook/opt-125m", "EleutherAI/pythia-70m", "demo/tiny-opt", "a.b_c-d/x.y"])
def test_good_names_pass_validation(name):
    assert opt_lens.validate_name(name, allow_local=False) == name


def test_local_folders_are_refused_when_not_allowed(tiny_folder):
    folder = str(tiny_folder("gpt2"))
    with pytest.raises(opt_lens.OptLensError):
        opt_lens.load(folder, allow_local=False)
    assert opt_lens.load(folder).source == "local"


def test_loaded_model_is_eval_float32_eager(tiny_lm):
    lm = tiny_lm("opt")
    assert not lm.model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in lm.model.parameters())
    assert lm.model.config._attn_implementation == opt_lens.attention.IMPLEMENTATION  # sdpa that records q and k
    assert lm.weights_bytes == lm.arch.n_params * 4


def test_unreachable_hub_fails_fast_with_a_clear_message(hub_unreachable):
    start = time.perf_counter()
    with pytest.raises(opt_lens.OptLensError, match="Cannot reach the Hugging Face Hub"):
        opt_lens.load("gpt2", allow_local=False)
    assert time.perf_counter() - start < 5


def test_remote_code_is_never_run(tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "gpt2", tmp_path / "custom")
    marker = tmp_path / "code_ran"
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (folder / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    edit_config(
        folder,
        model_type="custom_gpt",
        auto_map={"AutoConfig": "configuration_custom.C", "AutoModelForCausalLM": "modeling_custom.M"},
    )
    with pytest.raises(opt_lens.OptLensError, match="custom code"):
        opt_lens.load(str(folder))
    assert not marker.exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "not a decoder-only"),
        ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, "not a decoder-only"),
        ({"model_type": "no_such_model"}, "does not know"),
    ],
)
def test_non_causal_or_unknown_models_are_refused(tiny_folder, tmp_path, changes, message):
    folder = copy_model(tiny_folder, "gpt2", tmp_path / "m")
    edit_config(folder, **changes)
    with pytest.raises(opt_lens.OptLensError, match=message):
        opt_lens.load(str(folder))


def test_unreadable_config_is_refused(tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "gpt2", tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(opt_lens.OptLensError, match="config"):
        opt_lens.load(str(folder))


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(opt_lens.OptLensError, match="config.json"):
        opt_lens.load(str(tmp_path))


def test_corrupt_weights_are_refused(tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "opt", tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(opt_lens.OptLensError, match="corrupt"):
        opt_lens.load(str(folder))


def test_bin_checkpoint_loads_weights_only(tiny_folder, tiny_lm, tmp_path):
    folder = copy_model(tiny_folder, "gpt2", tmp_path / "m")
    state = opt_lens.load(str(folder)).model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    lm = opt_lens.load(str(folder))
    cap = opt_lens.capture(lm, "Hello there")
    torch.testing.assert_close(cap.next_logits, opt_lens.capture(tiny_lm("gpt2"), "Hello there").next_logits)


class _Payload:
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_in_a_bin_checkpoint_never_runs(tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "gpt2", tmp_path / "m")
    (folder / "model.safetensors").unlink()
    payload = _Payload()
    payload.marker = tmp_path / "pickle_ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"transformer.wte.weight": payload}))
    with pytest.raises(opt_lens.OptLensError):
        opt_lens.load(str(folder))
    assert not payload.marker.exists()


def test_model_too_large_for_the_memory_limit_is_refused(tiny_folder, monkeypatch):
    monkeypatch.setenv("OPT_LENS_MEMORY_LIMIT_MB", "1")
    with pytest.raises(opt_lens.OptLensError) as error:
        opt_lens.load(str(tiny_folder("gpt2")))
    message = str(error.value)
    assert "13.5 MB" in message and "OPT_LENS_MEMORY_LIMIT_MB" in message  # both sizes and where the limit came from


def test_memory_limit_override_and_fallbacks(monkeypatch):
    from opt_lens import memory

    monkeypatch.setenv(memory.LIMIT_ENV, "2700")
    assert memory.memory_limit() == (2700 * 2**20, f"{memory.LIMIT_ENV}=2700")
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    limit, source = memory.memory_limit()
    assert limit > 0 and memory.LIMIT_ENV not in source
    assert 0 <= memory.memory_budget().available_bytes <= limit


@pytest.mark.parametrize(
    ("cgroup_value", "expected"),
    [
        ("2147483648", (2 * 2**30, "the container's memory limit")),  # a 2 GiB container on a 16 GiB machine
        ("max", (16 * 2**30, "this machine's memory")),  # cgroup v2: no limit
        ("9223372036854771712", (16 * 2**30, "this machine's memory")),  # cgroup v1's "no limit": above the RAM
    ],
)
def test_a_container_limit_below_the_machine_s_memory_is_the_limit(monkeypatch, tmp_path, cgroup_value, expected):
    from opt_lens import memory

    limit_file = tmp_path / "memory.max"
    limit_file.write_text(cgroup_value + "\n")
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    monkeypatch.setattr(memory, "_CGROUP_LIMIT_FILES", (str(tmp_path / "missing"), str(limit_file)))
    monkeypatch.setattr(memory, "_physical_bytes", lambda: 16 * 2**30)
    assert memory.memory_limit() == expected


ROOT = Path(__file__).resolve().parents[1]
FREED_TENSORS_SCRIPT = """
import sys, torch
from opt_lens import memory
if sys.argv[1] == "return": memory.return_large_blocks_when_freed()
large = torch.ones(30 * 2**20 // 4)  # left to itself, glibc now keeps blocks up to 30 MB in its heaps once freed
del large
before = memory.process_rss_bytes()
block = torch.ones(16 * 2**20 // 4)  # written, so that its pages are resident
grown = memory.process_rss_bytes() - before
del block
kept = memory.process_rss_bytes() - before
memory.release_freed_memory()
print(grown // 2**20, kept // 2**20, (memory.process_rss_bytes() - before) // 2**20)
"""


@pytest.mark.parametrize("policy", ["return", "glibc default"])
def test_freed_tensors_go_back_to_the_system(policy):
    # A fresh process: the setting is for a server's start, before its heaps hold free space.
    done = subprocess.run([sys.executable, "-c", FREED_TENSORS_SCRIPT, policy], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    grown_mb, kept_mb, kept_after_trim_mb = map(int, done.stdout.split())
    assert grown_mb >= 15
    if policy == "return":
        assert kept_mb <= 1, "a freed 16 MB tensor should leave no resident memory behind"
    else:
        assert kept_mb >= 15, "without the setting glibc keeps the block (else this test proves nothing)"
    assert kept_after_trim_mb <= 1, "release_freed_memory hands the heaps' free pages back"


SERVER_START_SCRIPT = """
import os, sys
from app import frame
frame.configure_server()  # what streamlit_app.py does first
print("torch" in sys.modules, os.environ.get("MKL_DISABLE_FAST_MM"))
"""


@pytest.mark.parametrize("teacher_setting, expected", [(None, "1"), ("0", "0")])
def test_server_stops_mkl_keeping_buffers_per_thread_before_torch_loads(teacher_setting, expected):
    # MKL reads the switch when torch loads: set later, it does nothing (without it, classroom.py's memory
    # scenario had 3.0 GB of glibc-mapped blocks instead of 0.36 GB, and its first 100 s peaked 534 MB higher).
    env = {key: value for key, value in os.environ.items() if key != "MKL_DISABLE_FAST_MM"}
    if teacher_setting is not None:
        env["MKL_DISABLE_FAST_MM"] = teacher_setting
    done = subprocess.run([sys.executable, "-c", SERVER_START_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120, check=True)
    assert done.stdout.split() == ["False", expected]


def test_hub_download_reports_progress_and_loads(hub_answering):
    events = []
    lm = opt_lens.load("someone/tiny-opt", progress=lambda done, total, name: events.append((done, total, name)))
    assert lm.source == "hub" and lm.name == "someone/tiny-opt"
    gets = [r.rsplit("/", 1)[-1] for r in hub_answering.requests if r.startswith("GET") and "/resolve/" in r]
    assert gets[0] == "config.json" and "model.safetensors" in gets
    totals = {total for _, total, _ in events}
    assert len(totals) == 1 and events[-1][0] == totals.pop()
    assert [done for done, _, _ in events] == sorted(done for done, _, _ in events)


def test_hub_model_too_large_is_refused_before_downloading_weights(hub_answering, monkeypatch):
    monkeypatch.setenv("OPT_LENS_MEMORY_LIMIT_MB", "1")
    with pytest.raises(opt_lens.OptLensError, match="needs about"):
        opt_lens.load("someone/tiny-opt")
    gets = [r.rsplit("/", 1)[-1] for r in hub_answering.requests if r.startswith("GET") and "/resolve/" in r]
    assert gets == ["config.json"]


@pytest.mark.parametrize(
    "status, headers, message",
    [
        (404, {"X-Error-Code": "RepoNotFound"}, "no model called"),
        (403, {"X-Error-Code": "GatedRepo"}, "gated"),
        (401, {"X-Error-Message": "Invalid credentials in Authorization header"}, "HF_TOKEN"),
        (429, {}, "try again in a minute"),
        (500, {}, "HTTP 500"),
    ],
)
def test_hub_errors_become_clear_messages_and_keep_their_cause_in_the_log(hub_answering, caplog, status, headers, message):
    hub_answering.fail_with = (status, headers)
    with caplog.at_level(logging.WARNING, logger="opt_lens.hub"):
        with pytest.raises(opt_lens.OptLensError, match=message) as error:
            opt_lens.load("someone/tiny-opt")
    assert "connection" not in str(error.value)
    [record] = [r for r in caplog.records if r.exc_info]
    assert str(status) in str(record.exc_info[1]) and record.getMessage() == str(error.value)


def test_a_full_disk_is_not_a_network_error(hub_answering, monkeypatch, caplog):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hub, "hf_hub_download", disk_full)
    with caplog.at_level(logging.WARNING, logger="opt_lens.hub"):
        with pytest.raises(opt_lens.OptLensError, match="disk is full") as error:
            opt_lens.load("someone/tiny-opt")
    assert "connection" not in str(error.value) and "reach" not in str(error.value)
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[1].errno == errno.ENOSPC


def test_an_unreachable_hub_leaves_its_cause_in_the_log(hub_unreachable, caplog):
    with caplog.at_level(logging.WARNING, logger="opt_lens.hub"):
        with pytest.raises(opt_lens.OptLensError, match="check the connection"):
            opt_lens.load("someone/tiny-opt")
    [record] = [r for r in caplog.records if r.exc_info]
    assert "onnect" in type(record.exc_info[1]).__name__  # the client's ConnectError: connection refused


def test_a_hub_repository_without_a_tokenizer_is_refused_before_its_weights_download(hub_answering, tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "opt", tmp_path / "no-tokenizer")
    for file_name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / file_name).unlink(missing_ok=True)
    hub_answering.add("someone/no-tokenizer", folder)
    with pytest.raises(opt_lens.OptLensError, match="no tokenizer"):
        opt_lens.load("someone/no-tokenizer")
    assert not any("model.safetensors" in r for r in hub_answering.requests)


def test_weight_file_choice_prefers_safetensors():
    files = {"pytorch_model.bin": 10, "model.safetensors": 10, "tf_model.h5": 10, "config.json": 1}
    assert hub.weight_files(files) == ["model.safetensors"]
    sharded = {"pytorch_model-00001-of-00002.bin": 1, "pytorch_model-00002-of-00002.bin": 1, "pytorch_model.bin.index.json": 1}
    assert hub.weight_files(sharded) == [*sorted(sharded)[:2], "pytorch_model.bin.index.json"]
    assert hub.weight_files({"flax_model.msgpack": 1}) == []


def test_describe_pretrained_needs_no_weights(tiny_folder, tmp_path):
    folder = copy_model(tiny_folder, "opt-post-ln", tmp_path / "m")
    (folder / "model.safetensors").unlink()
    arch = opt_lens.describe_pretrained(str(folder))
    assert arch.norm == "post" and arch.embed_dim == 32


def test_demo_names_resolve_locally_before_the_hub():
    assert set(opt_lens.DEMO_MODELS) == {"demo/tiny-gpt2", "demo/tiny-opt"}
    assert all(Path(folder).is_relative_to(Path(loading.__file__).parent) for folder in opt_lens.DEMO_MODELS.values())


def test_hub_reachability_probe_is_fast_offline(hub_unreachable):
    start = time.perf_counter()
    assert hub.hub_reachable() is False
    assert time.perf_counter() - start < 5


def test_hub_reachability_probe_sees_an_answering_hub(hub_answering):
    hub_answering.add("gpt2", hub_answering.repos["someone/tiny-gpt2"])  # the probe asks about gpt2
    assert hub.hub_reachable() is True


def test_a_model_downloaded_before_loads_and_is_listed_with_the_hub_gone(hub_answering):
    online = opt_lens.load("someone/tiny-gpt2")
    assert [m.repo_id for m in hub.cached_models()] == ["someone/tiny-gpt2"]
    hub_answering.stop()  # connections are now refused
    offline = opt_lens.load("someone/tiny-gpt2")
    assert offline.source == "hub" and offline.arch.n_params == online.arch.n_params
    torch.testing.assert_close(opt_lens.capture(offline, "Hello").next_logits, opt_lens.capture(online, "Hello").next_logits)
    [cached] = hub.cached_models()
    commit = hub_answering.commit("someone/tiny-gpt2")
    assert cached.revision == commit
    assert cached.folder == hub_answering.cache / "models--someone--tiny-gpt2" / "snapshots" / commit


def test_the_cache_offers_only_models_that_can_load(hub_answering, tiny_folder, tmp_path):
    from huggingface_hub import hf_hub_download

    opt_lens.load("someone/tiny-opt")
    opt_lens.describe_pretrained("someone/tiny-gpt2")  # downloads config.json only
    custom = copy_model(tiny_folder, "gpt2", tmp_path / "custom")
    edit_config(custom, model_type="custom_gpt", auto_map={"AutoModelForCausalLM": "modeling_custom.M"})
    bert = copy_model(tiny_folder, "gpt2", tmp_path / "bert")
    edit_config(bert, model_type="bert", architectures=["BertForMaskedLM"])
    for repo_id, folder in (("someone/custom-code", custom), ("someone/bert", bert)):
        hub_answering.add(repo_id, folder)
        for file_name in ("config.json", "model.safetensors", "tokenizer.json"):
            hf_hub_download(repo_id, file_name)  # the real client fills the cache, whatever the files hold
    assert [m.repo_id for m in hub.cached_models()] == ["someone/tiny-opt"]


def test_an_empty_or_missing_cache_offers_nothing(hub_unreachable):
    assert not hub_unreachable.exists() and hub.cached_models() == []



def test_a_tokenizer_loads_without_the_weights_and_splits_as_the_model_reads(hub_answering):
    text = "The cat sat on the mat. 日本語 " * 3
    alone = opt_lens.load_tokenizer("someone/tiny-opt")
    gets = [r.rsplit("/", 1)[-1] for r in hub_answering.requests if r.startswith("GET") and "/resolve/" in r]
    assert gets[0] == "config.json" and "model.safetensors" not in gets and "tokenizer.json" in gets
    lm = opt_lens.load("someone/tiny-opt")  # now the weights too
    assert alone.max_positions == lm.arch.max_positions
    assert alone.tokenizer(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
    demo = opt_lens.load_tokenizer("demo/tiny-gpt2")
    assert demo.tokenizer(text)["input_ids"] == opt_lens.load("demo/tiny-gpt2").tokenizer(text)["input_ids"]
    only_tokenizer = opt_lens.load_tokenizer("someone/tiny-gpt2")  # its weights never downloaded
    hub_answering.stop()  # the class's network goes away: the tokenizer alone comes from the cache
    again = opt_lens.load_tokenizer("someone/tiny-gpt2")
    assert again.tokenizer(text)["input_ids"] == only_tokenizer.tokenizer(text)["input_ids"]


def test_a_tokenizer_never_downloaded_is_a_clear_error_offline(hub_unreachable):
    with pytest.raises(opt_lens.OptLensError, match="Cannot reach the Hugging Face Hub"):
        opt_lens.load_tokenizer("someone/never-cached")

"""The app's speed and memory, measured with AppTest, one fresh process per figure.

  (a) interaction: on a cached 256-token capture of a GPT-2-size model, server time of a rerun after
      switching layer or head on the Attention page (target <= 150 ms);
  (b) first render of the entry page before any model is needed (target <= 1.5 s);
  (c) peak resident memory with GPT-2-size and OPT-125m-size models both loaded and a 1024-token prompt
      on the Compare page (target < 1.8 GB): in an AppTest process, and (c') in a real ``streamlit run``
      server that Chromium opens at the Compare page's shared URL.

The Hub is unreachable here, so random-weight stand-ins of gpt2 and facebook/opt-125m (real shapes,
the genuine GPT-2 tokenizer) are saved once to artifacts/benchmark_models/ and put in place of the hub
names inside the worker processes only: the app itself has no test hooks.

    python benchmarks/app_speed_memory.py [--memory-limit-mb 2700]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "artifacts" / "benchmark_models"
STANDINS = {"gpt2": MODELS_DIR / "gpt2", "facebook/opt-125m": MODELS_DIR / "opt-125m"}
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def build_standins() -> None:
    from transformers import AutoModelForCausalLM, GPT2Config, OPTConfig

    import tiny_models

    configs = {
        "gpt2": (GPT2Config(), tiny_models.gpt2_tokenizer),
        "facebook/opt-125m": (
            OPTConfig(num_hidden_layers=12, num_attention_heads=12, hidden_size=768, ffn_dim=3072,
                      word_embed_proj_dim=768, max_position_embeddings=2048, vocab_size=50272),
            tiny_models.opt_tokenizer,
        ),
    }
    for name, (config, tokenizer) in configs.items():
        folder = STANDINS[name]
        if (folder / "config.json").is_file():
            continue
        print(f"saving a random-weight stand-in for {name} to {folder}", flush=True)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        tokenizer().save_pretrained(folder)


def prompt_of(n_tokens: int) -> str:
    """Ordinary English text cut to exactly ``n_tokens`` GPT-2 tokens."""
    import tiny_models

    tokenizer = tiny_models.gpt2_tokenizer()
    words = ("the students looked at the attention of every head while the teacher explained how a model "
             "reads a sentence one token at a time and guesses what comes next ").split()
    text = " ".join(words[i % len(words)] + ("." if i % 17 == 16 else "") for i in range(2 * n_tokens))
    return tokenizer.decode(tokenizer(text)["input_ids"][:n_tokens])


def use_standins() -> None:
    import opt_lens.loading

    opt_lens.loading.DEMO_MODELS.update(STANDINS)


def page_app(page: str, **query):
    """The entry's frame around one page, as the AppTest suite drives it (tests/test_app.py)."""
    from test_app import app

    at = app(page, **query)
    at.default_timeout = 900
    return at


def worker_interaction() -> dict:
    use_standins()
    at = page_app("pages/attention.py", model="gpt2", prompt=os.environ["BENCHMARK_PROMPT_256"]).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    times = {"layer": [], "head": []}
    for step in range(1, 7):
        for label in ("Layer", "Head"):
            box = next(b for b in at.selectbox if b.label == label)
            box.set_value(step % 12)
            start = time.perf_counter()
            at.run()
            times[label.lower()].append(time.perf_counter() - start)
            assert not at.exception and not at.error
    return {key: [round(t * 1e3, 1) for t in values] for key, values in times.items()}


def worker_entry() -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    start = time.perf_counter()
    at.run()
    rerun = time.perf_counter() - start
    since_start = time.perf_counter() - T_START
    fresh = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)  # a new student, warm server
    start = time.perf_counter()
    fresh.run()
    return {"first_run_s": first, "second_run_s": rerun, "new_session_s": time.perf_counter() - start,
            "since_process_start_s": since_start, "title": at.title[0].value if at.title else ""}


def worker_memory() -> dict:
    use_standins()
    from opt_lens.memory import process_rss_bytes

    before = process_rss_bytes()
    at = page_app("pages/compare.py", model="gpt2", model_b="facebook/opt-125m", prompt=os.environ["BENCHMARK_PROMPT_1024"])
    at.run()
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    from app import caches

    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": before / 2**20, "rss_after_mb": process_rss_bytes() / 2**20,
            "models_cached": caches.model_cache().keys(), "problems": problems}


def _peak_rss_mb(pid: int) -> float:
    """The high-water mark of a process's resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def worker_server_memory() -> dict:
    """(c) again, through a real ``streamlit run`` server that Chromium opens at the shared URL."""
    import urllib.parse

    from playwright.sync_api import sync_playwright

    from browser_support import StreamlitServer, exception_texts, launch_chromium, main_text, wait_for_app

    server = StreamlitServer(launcher=[__file__, SERVE_WITH_STANDINS])
    try:
        server.wait_healthy()
        idle = _peak_rss_mb(server.process.pid)
        query = {"model": "gpt2", "model_b": "facebook/opt-125m", "prompt": os.environ["BENCHMARK_PROMPT_1024"]}
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/compare?{urllib.parse.urlencode(query)}")
            wait_for_app(page, timeout=900_000)
            shown = "Heads that behave alike" in main_text(page)
            problems = exception_texts(page)
            browser.close()
        return {"peak_rss_mb": _peak_rss_mb(server.process.pid), "idle_rss_mb": idle,
                "page_complete": shown, "problems": problems}
    finally:
        server.stop()


WORKERS = {"interaction": worker_interaction, "entry": worker_entry, "memory": worker_memory,
           "server_memory": worker_server_memory}
SERVE_WITH_STANDINS = "--serve-with-standins"


def serve_with_standins() -> None:
    """``streamlit run`` in this process, with the stand-ins in place of the hub names."""
    from streamlit.web import cli

    use_standins()
    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(cli.main())


def run_worker(name: str, memory_limit_mb: int) -> dict:
    # Prompts are made here: the test tokenizer that cuts them would weigh on the worker's memory, not the app's.
    env = {**os.environ, "OPT_LENS_MEMORY_LIMIT_MB": str(memory_limit_mb), "PYTHONPATH": str(ROOT),
           "BENCHMARK_PROMPT_256": prompt_of(256), "BENCHMARK_PROMPT_1024": prompt_of(1024)}
    done = subprocess.run([sys.executable, __file__, "--worker", name], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"worker {name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def in_units(mib: float) -> str:
    """A memory figure in MiB, decimal GB and GiB: the target's "GB" could be read either way."""
    return f"{mib:.0f} MiB = {mib * 2**20 / 1e9:.2f} GB = {mib / 1024:.2f} GiB"


def main() -> None:
    if sys.argv[1:2] == [SERVE_WITH_STANDINS]:
        serve_with_standins()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=WORKERS)
    parser.add_argument("--memory-limit-mb", type=int, default=2700,
                        help="OPT_LENS_MEMORY_LIMIT_MB for the app (Community Cloud gives about 2.7 GB)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker]()), flush=True)
        return
    build_standins()
    print(f"app speed and memory (torch threads default, OPT_LENS_MEMORY_LIMIT_MB={args.memory_limit_mb}, "
          f"Python {sys.executable}; run it in an environment made from requirements.txt alone, as the cloud has:\n"
          f"packages that happen to be installed elsewhere, such as scipy, add to what transformers imports)\n")

    entry = run_worker("entry", args.memory_limit_mb)
    print(f"(b) entry page, first render before any model, fresh server process: {entry['first_run_s']:.2f} s "
          f"(target <= 1.5 s; whole process incl. Python start-up {entry['since_process_start_s']:.2f} s); "
          f"a new session on a warm server: {entry['new_session_s'] * 1e3:.0f} ms; "
          f"rerun {entry['second_run_s'] * 1e3:.0f} ms")

    inter = run_worker("interaction", args.memory_limit_mb)
    for what, values in inter.items():
        print(f"(a) Attention page, GPT-2-size, 256 tokens, switch {what}: median {statistics.median(values):.0f} ms, "
              f"max {max(values):.0f} ms over {len(values)} reruns (target <= 150 ms) {values}")

    memory = run_worker("memory", args.memory_limit_mb)
    print(f"(c) Compare page, gpt2 + opt-125m stand-ins, 1024 tokens: peak RSS {in_units(memory['peak_rss_mb'])} "
          f"(target < 1.8 GB); RSS before the app {memory['rss_before_mb']:.0f} MB, after {memory['rss_after_mb']:.0f} MB; "
          f"models cached {memory['models_cached']}; messages shown: {memory['problems'] or 'none'}")

    served = run_worker("server_memory", args.memory_limit_mb)
    print(f"(c') the same through `streamlit run` and Chromium: server peak RSS {in_units(served['peak_rss_mb'])} "
          f"(target < 1.8 GB); idle server "
          f"{served['idle_rss_mb']:.0f} MiB; page complete: {served['page_complete']}; "
          f"exceptions shown: {served['problems'] or 'none'}")


if __name__ == "__main__":
    main()

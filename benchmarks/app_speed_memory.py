"""The app's speed and memory at full context, in a real ``streamlit run`` server driven by Chromium.

Two measurements (issue 9's app targets); each prints figures, none is a pass/fail test:

  (a) interaction speed: the Attention page of a GPT-2-size model on a cached capture of a prompt of exactly
      256 GPT-2 tokens, then of exactly 1000. After a warm-up (the first view builds the capture and the head
      scores), the Layer and Head selectboxes are switched in turn (the layer's views are an ``st.fragment``
      and the head's a fragment inside it, so only that fragment reruns), and each switch is timed in the
      page, with ``performance.now()``: from the pointer going down on the option to the redrawn page, i.e.
      the script run finished, no element left stale (what ``tests/browser_support.wait_for_app`` waits for)
      and the new head's map drawn, plus two animation frames so it is painted. That is what a student
      waits for; the wall time around the Playwright calls is printed beside it. Targets: median <= 300 ms
      at 256 tokens, <= 600 ms at 1000 tokens.
  (b) memory walk: every page of ``app/navigation.py``'s PAGES opened at a 1000-token prompt with
      model=gpt2 and model_b=facebook/opt-125m in the URL, each until its script run has finished and no
      spinner or progress bar is left (on Cause and effect, its "Run ..." buttons are clicked too), while
      the resident memory (RSS) of the server's process tree is sampled every 50 ms. Prints the peak per
      page and overall (and the anonymous part of it: the weights are memory-mapped from the safetensors
      files, so they count as file-backed), and each page's wall time to a finished run. Target: overall
      peak <= 1.4 GB.

The Hub is unreachable here, so random-weight stand-ins of gpt2 and facebook/opt-125m (their real shapes,
the genuine GPT-2 tokenizer, OPT's with its leading ``</s>``) are saved once into a Hugging Face cache under
``artifacts/benchmark_hf_home/`` (git-ignored), in the hub cache layout (blobs, snapshots/<commit>, refs/main).
The server runs with HF_HOME there and HF_ENDPOINT on a closed local port: like a classroom server that
downloaded the models earlier, the app finds them itself (``opt_lens.hub.cached_models``) and loads them
from the cache. The app has no test hooks.

    python benchmarks/app_speed_memory.py [--lengths 256 1000] [--samples 12] [--skip-speed] [--skip-walk]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import OFFLINE_HUB, StreamlitServer, exception_texts, launch_chromium, wait_for_app  # noqa: E402

HF_HOME = ROOT / "artifacts" / "benchmark_hf_home"
MODEL_A, MODEL_B = "gpt2", "facebook/opt-125m"
LOAD_TIMEOUT = 900_000  # ms: a first view loads a 124M model and runs it on 1000 tokens, on a busy machine
BUSY = '[data-testid="stSpinner"], [data-testid="stProgress"]'


# ------------------------------------------------------------------------------------------- the stand-ins


def standin_configs() -> dict:
    """Each hub name's real shape, with the genuine tokenizer the tests build offline."""
    from transformers import GPT2Config, OPTConfig

    import tiny_models

    return {
        MODEL_A: (GPT2Config(), tiny_models.gpt2_tokenizer),
        MODEL_B: (OPTConfig(num_hidden_layers=12, num_attention_heads=12, hidden_size=768, ffn_dim=3072,
                            word_embed_proj_dim=768, max_position_embeddings=2048, vocab_size=50272),
                  tiny_models.opt_tokenizer),
    }


def put_in_hub_cache(repo_id: str, folder: Path, hub_cache: Path) -> Path:
    """Move a saved model into ``hub_cache`` as huggingface_hub lays a download out; returns the snapshot.

    Files go to blobs/<sha256>, the snapshot links to them, and refs/main names the (made-up) commit.
    """
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"random-weight stand-in of {repo_id}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        shutil.move(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def build_standins() -> None:
    """Save the stand-ins into the benchmark's Hugging Face cache, once."""
    import torch
    from transformers import AutoModelForCausalLM

    hub_cache = HF_HOME / "hub"
    for repo_id, (config, tokenizer) in standin_configs().items():
        repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
        if (repo / "refs" / "main").is_file():
            continue
        shutil.rmtree(repo, ignore_errors=True)  # an interrupted build
        print(f"saving a random-weight stand-in of {repo_id} into {hub_cache}", flush=True)
        torch.manual_seed(0)
        HF_HOME.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=HF_HOME) as saved:
            AutoModelForCausalLM.from_config(config).save_pretrained(saved)
            tokenizer().save_pretrained(saved)
            put_in_hub_cache(repo_id, Path(saved), hub_cache)


def check_standins_are_found() -> None:
    """The app's own cache scan must offer both stand-ins, or the server would fall back to the demo models."""
    import opt_lens.hub
    from huggingface_hub import constants

    constants.HF_HUB_CACHE = str(HF_HOME / "hub")  # read by cached_models at each call
    found = [model.repo_id for model in opt_lens.hub.cached_models()]
    if found != sorted([MODEL_A, MODEL_B]):
        raise SystemExit(f"opt_lens.hub.cached_models() finds {found} in {HF_HOME / 'hub'}")


def prompt_of(n_tokens: int) -> str:
    """Plain English prose of exactly ``n_tokens`` GPT-2 tokens, short words so that 1000 tokens fit the
    prompt box's 4,000 characters."""
    import tiny_models
    from app.state import MAX_PROMPT_CHARS

    tokenizer = tiny_models.gpt2_tokenizer()
    sentences = ["The cat sat on the mat.", "A dog ran to the park and back.", "She gave him a red ball.",
                 "He said it was not his.", "So they went home for tea.", "It was a cold day in May.",
                 "Then the cat saw a bird on the wall.", "We can see it from here."]
    text = " ".join(sentences[i % len(sentences)] for i in range(n_tokens))
    ids = tokenizer(text)["input_ids"][:n_tokens]
    prompt = tokenizer.decode(ids).strip()
    assert len(tokenizer(prompt)["input_ids"]) == n_tokens, "the cut changed the tokenization"
    assert len(prompt) <= MAX_PROMPT_CHARS, f"{n_tokens} tokens take {len(prompt)} characters"
    return prompt


# -------------------------------------------------------------------------------------------- the server


def start_server(memory_limit_mb: int) -> StreamlitServer:
    """``streamlit run`` on the benchmark's Hugging Face cache, with a Hub that is never there."""
    env = {"HF_HOME": str(HF_HOME), "HF_ENDPOINT": OFFLINE_HUB, "HF_HUB_DISABLE_TELEMETRY": "1",
           "OPT_LENS_MEMORY_LIMIT_MB": str(memory_limit_mb)}
    server = StreamlitServer(env=env)
    server.wait_healthy()
    return server


def page_url(server: StreamlitServer, path: str, **query) -> str:
    return f"{server.url}/{path}?{urllib.parse.urlencode(query)}"


QUIET_MS = 1_000  # a page counts as finished once it has stayed so for this long


def settle(page, timeout: float = LOAD_TIMEOUT) -> float:
    """Wait until the run an action started has finished, nothing is stale, no spinner or progress bar is left,
    and no new run starts within QUIET_MS (a deep link to a fresh server reruns once more, through the entry
    point); returns the perf_counter time at which the page was first seen finished for good."""
    while True:
        wait_for_app(page, timeout=timeout)
        page.wait_for_selector(BUSY, state="detached", timeout=timeout)
        finished = time.perf_counter()
        page.wait_for_timeout(QUIET_MS)
        if page.evaluate(STILL_FINISHED):
            return finished


STILL_FINISHED = f"""() => document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state')
    === 'notRunning' && !document.querySelector('[data-stale="true"], {BUSY}')"""


def prompt_tokens_note(page) -> str:
    """The sidebar's note on the prompt's length ("The prompt is N of the 1,024 tokens gpt2 reads.")."""
    note = page.locator('[data-testid="stSidebar"]', has_text="The prompt is").get_by_text("The prompt is")
    return note.first.inner_text() if note.count() else "(no token count shown)"


# --------------------------------------------------------------------------------- (a) interaction speed

# Installed before each option click, with the title the redrawn head map will have: times the click (pointer
# down on the option), the first change of the script state (the run requested), the moment the run has finished
# with no stale element left and the new head's map drawn, and two animation frames later (painted). A quick run
# may go from running to finished within one render of the page, so that the script state is never seen to
# change: such a switch has no "started" time, and the new map's title is what says the run has been and gone.
WATCH_SWITCH = """(title) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const t = window.__switch = {clicked: null, started: null, finished: null, done: null};
    const drawn = () => [...document.querySelectorAll('.role-title-text')].some((e) => e.textContent.includes(title));
    const observer = new MutationObserver((records) => {
        if (t.clicked === null || t.finished !== null) return;
        if (t.started === null && records.some((r) => r.target === app && r.attributeName === 'data-test-script-state'))
            t.started = performance.now();
        if (app.getAttribute('data-test-script-state') !== 'notRunning') return;
        if (document.querySelectorAll('[data-stale="true"]').length || !drawn()) return;
        t.finished = performance.now();
        observer.disconnect();
        requestAnimationFrame(() => requestAnimationFrame(() => { t.done = performance.now(); }));
    });
    // Elements are also removed at the end of a run (a spinner, a caption left empty), and the last stale one
    // may go that way rather than by losing its mark: without childList the observer missed that run's end.
    // characterData: a redrawn title may change only its text.
    observer.observe(app, {attributes: true, childList: true, subtree: true, characterData: true,
                           attributeFilter: ['data-test-script-state', 'data-stale']});
    document.addEventListener('pointerdown', () => { t.clicked = performance.now(); }, {capture: true, once: true});
}"""


SCRIPT_STATE = "() => document.querySelector('[data-testid=\"stApp\"]').getAttribute('data-test-script-state')"
STALE_COUNT = "() => document.querySelectorAll('[data-stale=\"true\"]').length"


def switch(page, label: str, value: int, title: str) -> dict:
    """Pick ``value`` in the selectbox ``label``, after which the head map's title holds ``title``; ms from the
    click to the painted page in the browser, split into click -> run requested -> run finished -> painted (the
    first part None where the run was too quick to be seen starting), and the wall time around the click and
    the wait."""
    page.locator('[data-testid="stMain"]').get_by_role("combobox", name=label, exact=True).first.click()
    option = page.get_by_role("option", name=str(value), exact=True).first
    option.wait_for()
    page.evaluate(WATCH_SWITCH, title)
    start = time.perf_counter()
    option.click()
    try:
        page.wait_for_function("() => window.__switch.done !== null", timeout=120_000)
    except Exception:
        raise SystemExit(f"a switch of {label} to {value} did not finish: {page.evaluate('() => window.__switch')}, "
                         f"script state {page.evaluate(SCRIPT_STATE)}, stale {page.evaluate(STALE_COUNT)}")
    wall = (time.perf_counter() - start) * 1e3
    t = page.evaluate("() => window.__switch")
    started = t["started"]
    return {"browser": t["done"] - t["clicked"], "wall": wall,
            "to_request": None if started is None else started - t["clicked"],
            "run": None if started is None else t["finished"] - started, "paint": t["done"] - t["finished"]}


def interaction_speed(browser, server: StreamlitServer, floor: StreamlitServer, n_tokens: int, samples: int) -> dict:
    """Layer and head switches on the Attention page at ``n_tokens``, alternating, ``samples`` of each; each
    switch followed by the same switch in the floor app (``switch_floor_app.py``) in a tab of the same browser,
    so that both see the same load."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    floor_page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.perf_counter()
    page.goto(page_url(server, "attention", model=MODEL_A, prompt=prompt_of(n_tokens)))
    first_view = settle(page) - start
    floor_page.goto(floor.url)
    settle(floor_page)
    note = prompt_tokens_note(page)
    assert f"The prompt is {n_tokens:,} of the" in note and f"tokens {MODEL_A} reads" in note, note
    shown = {"Layer": 0, "Head": 0}

    def both(label: str, value: int) -> tuple[dict, dict]:
        shown[label] = value
        layer, head = shown["Layer"], shown["Head"]
        return (switch(page, label, value, f"layer {layer} · head {head}"),
                switch(floor_page, label, value, f"L{layer}.H{head}"))

    for label, value in (("Layer", 11), ("Head", 11)):  # warm-up, not counted
        both(label, value)
    times = {"Layer": [], "Head": []}
    floor_times = {"Layer": [], "Head": []}
    for step in range(samples):
        for label in times:
            timed, floor_timed = both(label, step % 12)
            times[label].append(timed)
            floor_times[label].append(floor_timed)
    title = page.locator('[data-testid="stVegaLiteChart"] .role-title-text').first.text_content()
    problems = exception_texts(page) + exception_texts(floor_page)
    page.close()
    floor_page.close()
    return {"first_view_s": first_view, "times": times, "floor": floor_times, "last_title": title,
            "problems": problems}


def report_speed(n_tokens: int, result: dict, target_ms: float | None) -> None:
    print(f"\n(a) Attention page, {MODEL_A} stand-in (GPT2Config(), 124M), {n_tokens} tokens: first view "
          f"{result['first_view_s']:.1f} s (load, capture, head scores); last chart: {result['last_title']!r}; "
          f"exceptions shown: {result['problems'] or 'none'}")
    def median(part, switches):
        seen = [s[part] for s in switches if s[part] is not None]
        return statistics.median(seen) if seen else float("nan")

    every = []
    for label, switches in result["times"].items():
        floor = median("browser", result["floor"][label])
        every += [s["browser"] for s in switches]
        typical = median("browser", switches)
        print(f"    switch {label:5}: click -> painted page (browser) median {typical:4.0f} ms, "
              f"{typical / floor:.2f}x the floor's {floor:.0f} ms (two select boxes and one small chart "
              f"in a fragment, interleaved; target for a head switch <= 1.25x); samples "
              f"{[round(s['browser']) for s in switches]}, floor {[round(s['browser']) for s in result['floor'][label]]}")
        for who, parts in (("", switches), ("floor's ", result["floor"][label])):
            print(f"    {'':13}{who}medians: click -> run requested {median('to_request', parts):.0f} ms, run until "
                  f"finished with nothing stale and the new map drawn {median('run', parts):.0f} ms, then painted "
                  f"{median('paint', parts):.0f} ms (the first two over the {sum(s['run'] is not None for s in parts)} "
                  "switches whose run was seen starting)")
        print(f"    {'':13}wall time around the Playwright calls: median {median('wall', switches):4.0f} ms; "
              f"samples {[round(s['wall']) for s in switches]}")
    target = f" (target <= {target_ms:.0f} ms)" if target_ms else ""
    print(f"    all {len(every)} switches: median {statistics.median(every):.0f} ms{target}, "
          f"min {min(every):.0f}, max {max(every):.0f}")


# ------------------------------------------------------------------------------------------ (b) memory walk


class RssSampler:
    """The resident memory of a process and its children, sampled every ``interval`` seconds in a thread:
    in all, and its anonymous part (the rest is file-backed: the memory-mapped safetensors weights, libraries)."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (perf_counter, RSS bytes, anonymous RSS bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> tuple[int, int]:
        import psutil

        total = anonymous = 0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                status = dict(line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines())
            except (OSError, psutil.NoSuchProcess):
                continue
            total += int(status["VmRSS"].split()[0]) * 1024
            anonymous += int(status["RssAnon"].split()[0]) * 1024
        return total, anonymous

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), *self._rss()))
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float, column: int = 1) -> int:
        """The highest RSS (column 1) or anonymous RSS (column 2) sampled between two perf_counter times."""
        return max((sample[column] for sample in self.samples if start <= sample[0] <= end), default=0)


def click_run_buttons(page, limit: int = 6) -> list[tuple[str, float]]:
    """Click each of Cause and effect's "Run ..." buttons (runs too large to start by themselves) once, one at
    a time; (label, seconds until the page had finished again) for each click. The run a click starts draws
    its button again (st.button always draws), so a label already clicked is not clicked again."""
    clicked = []
    for _ in range(limit):
        buttons = page.locator('[data-testid="stMain"] button', has_text="Run ")
        labels = [buttons.nth(i).inner_text().replace("play_arrow", "").strip()  # the icon's name is its text
                  for i in range(buttons.count())]
        new = [i for i, label in enumerate(labels) if label not in {done for done, _ in clicked}]
        if not new:
            break
        start = time.perf_counter()
        buttons.nth(new[0]).click()
        clicked.append((labels[new[0]], settle(page) - start))
    return clicked


def peak_hwm_bytes(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory (VmHWM): catches peaks between samples."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def memory_walk(browser, server: StreamlitServer) -> dict:
    """Every page at a 1000-token prompt with both models in the URL, RSS sampled throughout."""
    from app.navigation import PAGES

    query = {"model": MODEL_A, "model_b": MODEL_B, "prompt": prompt_of(1000)}
    rows = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    with RssSampler(server.process.pid) as sampler:
        time.sleep(0.5)
        idle = max(rss for _, rss, _ in sampler.samples)
        for script, title, _, path in PAGES:
            start = time.perf_counter()
            page.goto(page_url(server, path, **query))
            finished = settle(page)
            clicked = click_run_buttons(page) if script == "pages/cause_and_effect.py" else []
            end = time.perf_counter()
            rows.append({"title": title, "path": path, "run_s": finished - start, "buttons_s": end - finished,
                         "clicked": clicked, "peak": sampler.peak_between(start, end),
                         "peak_anon": sampler.peak_between(start, end, column=2),
                         "end_rss": sampler.samples[-1][1], "problems": exception_texts(page),
                         "note": prompt_tokens_note(page)})
            print(f"    ... {title}: {finished - start:.1f} s, peak {rows[-1]['peak'] / 1e9:.2f} GB", flush=True)
    page.close()
    return {"idle": idle, "rows": rows, "peak": max(rss for _, rss, _ in sampler.samples),
            "peak_anon": max(anon for _, _, anon in sampler.samples),
            "hwm": peak_hwm_bytes(server.process.pid), "n_samples": len(sampler.samples)}


def gb(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB ({n_bytes / 2**30:.2f} GiB)"


def report_walk(walk: dict) -> None:
    print(f"\n(b) memory walk, {MODEL_A} + {MODEL_B} stand-ins, 1000-token prompt, server RSS sampled every 50 ms "
          f"({walk['n_samples']} samples); idle server before the walk {gb(walk['idle'])}")
    for row in walk["rows"]:
        print(f"    {row['title']:26} run finished after {row['run_s']:5.1f} s; peak {gb(row['peak'])}, of it "
              f"anonymous {row['peak_anon'] / 1e9:.2f} GB; after {row['end_rss'] / 1e9:.2f} GB; "
              f"exceptions: {row['problems'] or 'none'}")
        for label, seconds in row["clicked"]:
            print(f"    {'':26} clicked “{label}”: finished again after {seconds:.1f} s")
    print(f"    sidebar on the last page: {walk['rows'][-1]['note']!r}")
    print(f"    overall peak {gb(walk['peak'])} (target <= 1.4 GB), of it anonymous {gb(walk['peak_anon'])}; the "
          f"kernel's high-water mark of the server process (VmHWM) {gb(walk['hwm'])}")


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1000], help="prompt lengths for (a), in tokens")
    parser.add_argument("--samples", type=int, default=12, help="layer switches and head switches each, per length")
    parser.add_argument("--skip-speed", action="store_true", help="skip (a)")
    parser.add_argument("--skip-walk", action="store_true", help="skip (b)")
    parser.add_argument("--memory-limit-mb", type=int, default=2700,
                        help="OPT_LENS_MEMORY_LIMIT_MB for the server (Community Cloud gives about 2.7 GB)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    build_standins()
    check_standins_are_found()
    targets = {256: 300, 1000: 600}
    print(f"app speed and memory: streamlit run + Chromium, OPT_LENS_MEMORY_LIMIT_MB={args.memory_limit_mb}, "
          f"HF_HOME={HF_HOME}; load average {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            if not args.skip_speed:
                server = start_server(args.memory_limit_mb)
                floor = StreamlitServer("benchmarks/switch_floor_app.py")
                try:
                    floor.wait_healthy()
                    for n_tokens in args.lengths:
                        report_speed(n_tokens, interaction_speed(browser, server, floor, n_tokens, args.samples),
                                     targets.get(n_tokens))
                finally:
                    server.stop()
                    floor.stop()
            if not args.skip_walk:
                server = start_server(args.memory_limit_mb)  # a fresh server: nothing cached yet
                try:
                    report_walk(memory_walk(browser, server))
                finally:
                    server.stop()
        finally:
            browser.close()
    print(f"\nload average at the end: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()

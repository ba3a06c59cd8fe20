"""How fast hostile and careless input is refused (issue 12), with huggingface_hub's default timeouts.

Prints the median time to refuse a config bomb (20,000 layers of width 8), the time a load takes to fail
against a Hub that accepts connections and never replies (tests/hub_standin.py's HangingHub, on
127.0.0.1), the reachability probe against it, and how long a demo model takes to load in another thread
while that load waits.

    python benchmarks/hostile_input.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hub_standin  # noqa: E402  (standard library only)

# Set before huggingface_hub is imported, which reads them once; no real Hub, cache or token is touched.
HANGING = hub_standin.HangingHub()
os.environ.update(HF_ENDPOINT=HANGING.endpoint, HF_HOME=tempfile.mkdtemp(prefix="opt_lens_bench_hf_"),
                  HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
for variable in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
    os.environ.pop(variable, None)

import opt_lens  # noqa: E402
from opt_lens import hub  # noqa: E402


def seconds(call) -> float:
    start = time.perf_counter()
    try:
        call()
    except opt_lens.OptLensError:
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="opt_lens_bench_bomb_"))
    bomb = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 20_000, "n_embd": 8, "n_head": 1}
    (folder / "config.json").write_text(json.dumps(bomb))
    for call in (opt_lens.describe_pretrained, opt_lens.load):
        times = [seconds(lambda: call(str(folder))) for _ in range(args.repeats)]
        print(f"config bomb, {call.__name__}: refused in {statistics.median(times) * 1000:.2f} ms (median)")

    print(f"hanging Hub, timeout {hub.hub_timeout():.0f} s (HF_HUB_ETAG_TIMEOUT)")
    print(f"  hub_reachable(): {seconds(hub.hub_reachable):.2f} s")
    waited = {}
    waiting = threading.Thread(target=lambda: waited.update(s=seconds(lambda: opt_lens.load("facebook/opt-125m"))))
    waiting.start()
    time.sleep(0.5)
    demo = seconds(lambda: opt_lens.load("demo/tiny-gpt2"))
    still_waiting = waiting.is_alive()
    waiting.join()
    print(f"  load('facebook/opt-125m') failed after {waited['s']:.2f} s")
    print(f"  meanwhile load('demo/tiny-gpt2') in another thread: {demo:.2f} s (the other load still waiting: {still_waiting})")
    HANGING.stop()


if __name__ == "__main__":
    main()

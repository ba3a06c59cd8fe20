"""A class on one server: N students against a real ``streamlit run`` server (issue 16's benchmark).

Students are clients speaking Streamlit's own websocket protocol (``tests/streamlit_client.py``), not
browsers: they send what a browser sends (open a page with a query string) and read what the server sends
back, so no Chromium competes with the server for the CPUs. The server loads random-weight stand-ins of gpt2
and facebook/opt-125m from a local Hugging Face cache (built once by ``benchmarks/app_speed_memory.py``'s
code). Server CPU is read from ``/proc/<pid>/stat`` of the server process alone.

Scenarios, per N:
  * one lesson link for all: every student opens the start page, Attention, Predictions and Compare on the
    same prompt (the first student's views build the shared captures; the others are warm);
  * different prompts: each student the same pages on a prompt of their own;
  * heavy jobs: five students start a head sweep on Cause and effect at once while the others open a page;
  * fair: cheap warm views one after another, on the idle server and beside one student's head sweep;
  * memory: on a fresh server, each student walks every page with a prompt of their own (about 100 tokens).
It prints, per N: server CPU-seconds per page view and per new session (beside a one-line Streamlit app's
new session), p50/p95/max step time, the longest time any student saw nothing arrive (no message from the
server between a click and the end of its run), failures, and the server's peak resident memory.

    python benchmarks/classroom.py [--students 1 10 30] [--scenarios lesson prompts heavy fair memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from app_speed_memory import MODEL_A, MODEL_B, build_standins, check_standins_are_found, start_server  # noqa: E402
from browser_support import StreamlitServer  # noqa: E402
from streamlit_client import StreamlitClient  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGES = ("", "attention", "predictions", "compare")
EVERY_PAGE = ("", "architecture", "tokens", "attention", "predictions", "generate", "cause_and_effect", "compare",
              "inside", "flow")
SUBJECTS = ["The cat", "Alice", "My teacher", "The dog", "Bob", "The red ball", "A bird", "The king", "Mary", "The sun"]


def lesson_prompt(index: int = 0, repeats: int = 2) -> str:
    """About 30 tokens of plain prose per repeat; ``index`` varies the subject and the place (different prompts)."""
    subject, place = SUBJECTS[index % len(SUBJECTS)], ["mat", "chair", "roof", "wall"][index // len(SUBJECTS) % 4]
    return (f"{subject} sat on the {place} and looked at the garden. When the rain stopped, {subject.lower()} went "
            f"outside to play. {subject} sat on the {place} again, and the sun came out over the garden.") * repeats


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mb(pid: int) -> float:
    return peak_rss_mb(pid, "VmRSS")


def query(prompt: str) -> str:
    return urllib.parse.urlencode({"model": MODEL_A, "model_b": MODEL_B, "prompt": prompt})


def walk(server: StreamlitServer, prompt: str, pages=PAGES) -> dict:
    """One student: a new session, then each page in turn; step times and the longest silence."""
    client = StreamlitClient(server.url, timeout=900)
    steps, silent, after, failures = [], 0.0, "", 0
    try:
        for page in pages:
            steps.append(client.open(page, query(prompt)))
            if client.longest_silence > silent:
                silent, after = client.longest_silence, f"{page or 'home'}: {client.silence_before[:70]!r}"
            failures += bool(client.problems())
    except Exception:  # noqa: BLE001 - a student who gets no page is a failure to count, not a crash
        failures += 1
    finally:
        client.close()
    return {"steps": steps, "silent": silent, "after": after, "failures": failures}


def longest_silence(results: list[dict]) -> dict:
    """The longest time any student saw nothing arrive, and what their page showed last before it."""
    worst = max(results, key=lambda r: r["silent"])
    return {"silent": worst["silent"], "after": worst["after"]}


def class_run(server: StreamlitServer, students: int, prompt_of, pages=PAGES) -> dict:
    before = cpu_seconds(server.process.pid)
    with ThreadPoolExecutor(max_workers=students) as pool:
        results = list(pool.map(lambda i: walk(server, prompt_of(i), pages), range(students)))
    cpu = cpu_seconds(server.process.pid) - before
    steps = sorted(s for r in results for s in r["steps"])
    return {"cpu per view": cpu / max(len(steps), 1), "p50": statistics.median(steps) if steps else 0,
            "p95": steps[int(0.95 * (len(steps) - 1))] if steps else 0, "max": max(steps, default=0),
            **longest_silence(results), "failures": sum(r["failures"] for r in results)}


def new_session_cpu(server: StreamlitServer, sessions: int, page: str = "", prompt: str | None = None,
                    student=StreamlitClient) -> float:
    """Server CPU-seconds per new session opening ``page`` (warm: run once before measuring); ``student(url)``
    makes a client with ``open(page, query)`` and ``close()`` (a websocket client, or a browser's).

    The first session stays open, as the teacher's tab would in a class: when its last session closes,
    Streamlit forgets the compiled page scripts, and every student would pay for compiling them again.
    """
    q = query(prompt) if prompt else ""
    teacher = student(server.url)
    teacher.open(page, q)
    try:
        before = cpu_seconds(server.process.pid)
        for _ in range(sessions):
            client = student(server.url)
            client.open(page, q)
            client.close()
        return (cpu_seconds(server.process.pid) - before) / sessions
    finally:
        teacher.close()


def one_line_app_cpu(sessions: int, student=StreamlitClient) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", dir=ROOT, delete=False) as script:
        script.write("import streamlit as st\nst.write('Hello')\n")
    server = StreamlitServer(script=script.name)
    try:
        server.wait_healthy()
        return new_session_cpu(server, sessions, student=student)
    finally:
        server.stop()
        Path(script.name).unlink()


def heavy_run(server: StreamlitServer, students: int) -> dict:
    """Five students open Cause and effect's head sweep on prompts of their own while ``students`` others open
    the Tokens and Predictions pages of the lesson's prompt (cached)."""
    heavy, students = 5, students + 5

    def student(index: int) -> dict:
        if index < heavy:
            return walk(server, lesson_prompt(100 + index), pages=("cause_and_effect",))
        return walk(server, lesson_prompt(0), pages=("tokens", "predictions"))

    before = cpu_seconds(server.process.pid)
    with ThreadPoolExecutor(max_workers=students) as pool:
        results = list(pool.map(student, range(students)))
    steps = sorted(s for r in results[heavy:] for s in r["steps"]) or [0.0]
    return {"cpu": cpu_seconds(server.process.pid) - before, "cheap p50": statistics.median(steps),
            "cheap max": max(steps), "heavy max": max((s for r in results[:heavy] for s in r["steps"]), default=0),
            **longest_silence(results), "failures": sum(r["failures"] for r in results)}


def fairness_run(server: StreamlitServer, views: int = 8) -> dict:
    """Issue 16, item 4: cheap warm views (Tokens, Predictions of the lesson's prompt), one after another, on the
    idle server and then while one student's head sweep runs; each view's time, medians compared."""
    def cheap_views() -> list[float]:
        client = StreamlitClient(server.url, timeout=300)
        try:
            return [client.open(page, query(lesson_prompt(0))) for _ in range(views // 2)
                    for page in ("tokens", "predictions")]
        finally:
            client.close()

    cheap_views()  # warm
    idle = cheap_views()
    with ThreadPoolExecutor(max_workers=1) as pool:
        heavy_start = time.monotonic()
        heavy = pool.submit(walk, server, lesson_prompt(200), ("cause_and_effect",))
        time.sleep(3)  # its capture first, then the sweep
        busy = cheap_views()
        heavy_running = not heavy.done()
        heavy.result()
    return {"idle": statistics.median(idle), "busy": statistics.median(busy), "busy max": max(busy),
            "heavy s": time.monotonic() - heavy_start, "overlapped": heavy_running}


def memory_run(students: int) -> dict:
    """Issue 16, item 5: on a fresh server, ``students`` students with prompts of their own (about 100 tokens)
    walk every page at once; the server's peak resident memory, beside its floor (the runtime and both models'
    weights, with a one-word prompt's captures)."""
    server = start_server(2700)
    try:
        walk(server, "Hello", pages=("compare",))
        floor = current_rss_mb(server.process.pid)
        r = class_run(server, students, lambda i: lesson_prompt(i + 1, repeats=3), pages=EVERY_PAGE)
        return {**r, "floor": floor, "peak": peak_rss_mb(server.process.pid)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--scenarios", nargs="+", default=["lesson", "prompts", "heavy", "fair", "memory"],
                        choices=["lesson", "prompts", "heavy", "fair", "memory"])
    parser.add_argument("--sessions", type=int, default=5, help="new sessions timed for the per-session figures")
    args = parser.parse_args()
    build_standins()
    check_standins_are_found()
    floor = one_line_app_cpu(args.sessions)
    print(f"one-line Streamlit app: {floor:.3f} CPU-s per new session")
    for n in args.students:
        if "memory" in args.scenarios:
            r = memory_run(n)
            print(f"\nN = {n}, memory: {n} prompts of about 100 tokens, every page: peak RSS {r['peak']:.0f} MB "
                  f"(floor, the runtime and both models: {r['floor']:.0f} MB; limit 2700 MB); p50/p95/max step "
                  f"{r['p50']:.2f}/{r['p95']:.2f}/{r['max']:.2f} s, silent {r['silent']:.2f} s, failures {r['failures']}")
        if not set(args.scenarios) - {"memory"}:
            continue
        server = start_server(2700)
        try:
            walk(server, lesson_prompt(0))  # a cold walk builds what the lesson link needs
            per_page = {page or "home": new_session_cpu(server, args.sessions, page, lesson_prompt(0)) for page in PAGES}
            print(f"\nN = {n}: CPU-s per new session, warm: "
                  + ", ".join(f"{page} {cpu:.3f} ({cpu / floor:.1f}x)" for page, cpu in per_page.items()))
            print(f"{'scenario':<10} {'CPU-s/view':>10} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'silent s':>9} "
                  f"{'failures':>8} {'peak RSS MB':>11}")
            for scenario in args.scenarios:
                if scenario == "memory":
                    continue
                if scenario == "fair":
                    r = fairness_run(server)
                    print(f"fair: a cheap view {r['idle']:.3f} s idle, {r['busy']:.3f} s (max {r['busy max']:.3f}) beside "
                          f"a sweep: {r['busy'] / r['idle']:.2f}x (sweep {r['heavy s']:.1f} s, still running after the "
                          f"views: {r['overlapped']})")
                    continue
                if scenario == "heavy":
                    r = heavy_run(server, n)
                    print(f"{'heavy':<10} {r['cpu']:>10.1f} {r['cheap p50']:>7.2f} {'':>7} {r['cheap max']:>7.2f} "
                          f"{r['silent']:>9.2f} {r['failures']:>8} {peak_rss_mb(server.process.pid):>11.0f}"
                          f"   (cheap views beside 5 sweeps; slowest sweep {r['heavy max']:.1f} s; CPU-s in total)")
                    continue
                prompt_of = (lambda i: lesson_prompt(0)) if scenario == "lesson" else (lambda i: lesson_prompt(i + 1))
                r = class_run(server, n, prompt_of)
                print(f"{scenario:<10} {r['cpu per view']:>10.3f} {r['p50']:>7.2f} {r['p95']:>7.2f} {r['max']:>7.2f} "
                      f"{r['silent']:>9.2f} {r['failures']:>8} {peak_rss_mb(server.process.pid):>11.0f}")
                if r["silent"] > 1:
                    print(f"{'':<10} the longest silence came after {r['after']}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""Server CPU-seconds of one warm new session per page, beside a one-line Streamlit app's (issue 16, item 1).

Students are websocket clients (``tests/streamlit_client.py``), so the figures are the app's own cost; with
``--browser`` each is a fresh Chromium context, whose first visit also fetches Streamlit's static files (the
same for every app: that is how issue 16 measured the one-line app's 0.23-0.25 CPU-s). The pages are opened
once (cold) on the lesson's prompt with gpt2 and facebook/opt-125m stand-ins, then timed warm.

    python benchmarks/page_view_cost.py [page ...] [--browser]   # "home" is the start page; default: every page
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classroom import (  # noqa: E402  (it puts tests/ on the path too)
    build_standins, check_standins_are_found, lesson_prompt, new_session_cpu, one_line_app_cpu, start_server, walk,
)
from browser_support import launch_chromium, wait_for_app  # noqa: E402
from streamlit_client import StreamlitClient  # noqa: E402

PAGES = ["home", "architecture", "tokens", "attention", "predictions", "generate", "cause_and_effect", "compare",
         "inside", "flow"]


class BrowserStudent:
    """A student in a fresh Chromium context (an empty browser cache), as ``StreamlitClient`` opens pages."""

    browser = None  # set by main

    def __init__(self, url: str):
        self.url, self.context = url, self.browser.new_context(viewport={"width": 1280, "height": 900})

    def open(self, page: str, query: str) -> None:
        tab = self.context.new_page()
        tab.goto(f"{self.url}/{page}?{query}")
        wait_for_app(tab, timeout=120_000)

    def close(self) -> None:
        self.context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", default=PAGES, choices=PAGES, metavar="page")
    parser.add_argument("--sessions", type=int, default=10, help="new sessions timed per page")
    parser.add_argument("--browser", action="store_true", help="students in Chromium rather than websocket clients")
    args = parser.parse_args()
    build_standins()
    check_standins_are_found()
    if not args.browser:
        return measure(args.pages, args.sessions, StreamlitClient)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        BrowserStudent.browser = launch_chromium(playwright)
        try:
            measure(args.pages, args.sessions, BrowserStudent)
        finally:
            BrowserStudent.browser.close()


def measure(pages: list[str], sessions: int, student) -> None:
    paths = ["" if page == "home" else page for page in pages]
    floor = one_line_app_cpu(sessions, student)
    print(f"one-line Streamlit app: {floor:.3f} CPU-s per new session ({student.__name__})")
    server = start_server(2700)
    try:
        walk(server, lesson_prompt(0), pages=paths)
        for page, path in zip(pages, paths):
            cpu = new_session_cpu(server, sessions, path, lesson_prompt(0), student)
            print(f"{page:<18} {cpu:.3f} CPU-s per new session ({cpu / floor:.1f}x)", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

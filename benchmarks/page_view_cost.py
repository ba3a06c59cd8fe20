"""Server CPU-seconds of one warm new session per page, beside a one-line Streamlit app's (issue 16, item 1).

Students are websocket clients (``tests/streamlit_client.py``), so the figures are the app's own cost. With
``--browser`` they are Chromium tabs, twice: a student's first visit (a fresh context, which also fetches
Streamlit's static files: that is how issue 16 measured the one-line app's 0.23-0.25 CPU-s), then a new
session in a browser that has visited before (its cache holds the hashed static files). A page with charts and
tables fetches more of Streamlit's files than a one-line app (about 130 requests and 4.2 MB against 66 and
2.7 MB), served by Streamlit's own server once per browser. The pages are opened once (cold) on the lesson's
prompt with gpt2 and facebook/opt-125m stand-ins, then timed warm.

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
    """A student's first visit: a fresh Chromium context (an empty browser cache), opening pages as
    ``StreamlitClient`` does."""

    browser = None  # set by main

    def __init__(self, url: str):
        self.url, self.context = url, self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.tabs = []

    def open(self, page: str, query: str) -> None:
        self.tabs.append(self.context.new_page())
        self.tabs[-1].goto(f"{self.url}/{page}?{query}")
        wait_for_app(self.tabs[-1], timeout=120_000)

    def close(self) -> None:
        self.context.close()


class ReturningBrowserStudent(BrowserStudent):
    """A new session in a browser that has visited before (a lesson link opened in another tab): one shared
    context, whose cache already holds Streamlit's hashed static files."""

    shared_context = None

    def __init__(self, url: str):
        cls = ReturningBrowserStudent
        if cls.shared_context is None:
            cls.shared_context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.url, self.context, self.tabs = url, cls.shared_context, []

    def close(self) -> None:
        for tab in self.tabs:
            tab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", metavar="page", help=f"any of {', '.join(PAGES)}; none: every page")
    parser.add_argument("--sessions", type=int, default=10, help="new sessions timed per page")
    parser.add_argument("--browser", action="store_true", help="students in Chromium rather than websocket clients")
    args = parser.parse_args()
    # argparse checks nargs="*" choices against the empty list too, so the pages are checked here.
    unknown = sorted(set(args.pages) - set(PAGES))
    if unknown:
        parser.error(f"unknown page {', '.join(unknown)}")
    build_standins()
    check_standins_are_found()
    if not args.browser:
        return measure(args.pages or PAGES, args.sessions, StreamlitClient)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        BrowserStudent.browser = launch_chromium(playwright)
        try:
            for student in (BrowserStudent, ReturningBrowserStudent):
                measure(args.pages or PAGES, args.sessions, student)
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

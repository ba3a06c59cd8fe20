"""Server CPU-seconds of one warm new session per page, beside a one-line Streamlit app's (issue 16, item 1).

Students are websocket clients (``tests/streamlit_client.py``), not browsers, so the figures are the app's
own cost; a browser's first visit adds the static files, the same for every app. The pages are opened once
(cold) on the lesson's prompt with gpt2 and facebook/opt-125m stand-ins, then timed warm.

    python benchmarks/page_view_cost.py [page ...]   # "home" is the start page; default: every page
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classroom import (  # noqa: E402
    build_standins, check_standins_are_found, lesson_prompt, new_session_cpu, one_line_app_cpu, start_server, walk,
)

PAGES = ["home", "architecture", "tokens", "attention", "predictions", "generate", "cause_and_effect", "compare",
         "inside", "flow"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pages", nargs="*", default=PAGES, choices=PAGES, metavar="page")
    parser.add_argument("--sessions", type=int, default=10, help="new sessions timed per page")
    args = parser.parse_args()
    paths = ["" if page == "home" else page for page in args.pages]
    build_standins()
    check_standins_are_found()
    floor = one_line_app_cpu(args.sessions)
    print(f"one-line Streamlit app: {floor:.3f} CPU-s per new session")
    server = start_server(2700)
    try:
        walk(server, lesson_prompt(0), pages=paths)
        for page, path in zip(args.pages, paths):
            cpu = new_session_cpu(server, args.sessions, path, lesson_prompt(0))
            print(f"{page:<18} {cpu:.3f} CPU-s per new session ({cpu / floor:.1f}x)", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

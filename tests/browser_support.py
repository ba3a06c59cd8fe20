"""Run the app with ``streamlit run`` on a free local port and drive it with Debian's Chromium.

Used by ``tests/test_browser.py``. Never downloads a browser: Playwright launches ``/usr/bin/chromium``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
OFFLINE_HUB = "http://127.0.0.1:9"  # the discard port: a Hub that is never there
HEALTH_TIMEOUT = 60.0  # seconds until the server must answer /_stcore/health


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``streamlit run streamlit_app.py`` in a subprocess; its output goes to ``artifacts/streamlit-<script>.log``,
    one file per script, so that a second server beside the app's (a benchmark's floor) keeps its own."""

    def __init__(self, script: str = "streamlit_app.py", env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = ARTIFACTS / f"streamlit-{Path(script).stem}.log"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable, "-m", "streamlit", "run", script,
            "--server.headless", "true",
            "--server.port", str(self.port),
            "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]
        # Never the real Hub nor the machine's cache: nothing listens on port 9, and the cache starts empty.
        self._hf_home = tempfile.TemporaryDirectory(prefix="opt_lens_hf_home_")
        offline = {"HF_ENDPOINT": OFFLINE_HUB, "HF_HOME": self._hf_home.name}
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **offline, **(env or {})}
        )

    def __enter__(self) -> StreamlitServer:
        """``with StreamlitServer() as server``: healthy inside, stopped after (also when it never became so)."""
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"streamlit did not become healthy within {timeout:.0f} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self._hf_home.cleanup()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


APP = '[data-testid="stApp"]'
RUN_START_TIMEOUT = 1_500  # ms to wait for the script run an action requests to start


def wait_for_app(page, timeout: float = 30_000) -> None:
    """Wait until the script run that an action started has finished and no element is left stale."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page.wait_for_selector(f'{APP}[data-test-connection-state="CONNECTED"]', timeout=timeout)
    # The rerun a click or keypress requests starts asynchronously, later on a busy machine: see it start
    # (requested or running), unless it was over before we looked.
    try:
        page.wait_for_selector(f'{APP}:not([data-test-script-state="notRunning"])', timeout=RUN_START_TIMEOUT)
    except PlaywrightTimeoutError:
        pass
    page.wait_for_selector(f'{APP}[data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-stale=\"true\"]').length === 0", timeout=timeout
    )


def exception_texts(page) -> list[str]:
    """What exception boxes and error alerts on the page say."""
    boxes = page.locator('[data-testid="stException"]')
    return [boxes.nth(i).inner_text() for i in range(boxes.count())]


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # The app scrolls inside its main pane, so a full-page shot would stop at the window: grow the window
    # to the content's height for the shot, then put it back.
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), 6000)})
    page.wait_for_timeout(400)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    return path


def count_script_runs(page, seconds: float) -> int:
    """How many script runs start in the next ``seconds``: a settled page starts none."""
    page.evaluate("""() => {
        window.__scriptRuns = 0;
        const app = document.querySelector('[data-testid="stApp"]');
        window.__runObserver = new MutationObserver(() => {
            if (app.getAttribute('data-test-script-state') === 'running') window.__scriptRuns += 1;
        });
        window.__runObserver.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
    }""")
    page.wait_for_timeout(seconds * 1000)
    return page.evaluate("() => { window.__runObserver.disconnect(); return window.__scriptRuns; }")


def watch_stale_marks(page, container: str) -> None:
    """Start counting the times an element in ``container`` is marked stale: a full script run marks the
    elements it has not drawn again yet; a fragment's run leaves everything outside the fragment alone."""
    page.evaluate("""(selector) => {
        window.__staleMarks = 0;
        window.__staleObserver = new MutationObserver((mutations) => {
            for (const m of mutations) if (m.target.getAttribute('data-stale') === 'true') window.__staleMarks += 1;
        });
        window.__staleObserver.observe(document.querySelector(selector),
                                       {attributes: true, subtree: true, attributeFilter: ['data-stale']});
    }""", container)


def stale_marks(page) -> int:
    return page.evaluate("() => { window.__staleObserver.disconnect(); return window.__staleMarks; }")

"""A stand-in Hugging Face Hub on 127.0.0.1, so that tests set the network state they need.

``AnsweringHub`` serves model folders through the three routes the real client uses to load a model:
``GET /api/models/<id>`` (model_info), ``HEAD`` and ``GET /<id>/resolve/<revision>/<file>``. ``HangingHub``
accepts every connection and never replies, like a captive portal or a stalled school proxy. The fixtures
in conftest.py point huggingface_hub at one of them for the length of a test.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Not a listening port anywhere (the discard service is never run), so a connection is refused at once.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"


class _StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler):
        super().__init__(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class AnsweringHub(_StandinServer):
    """Serves ``repos`` ({repo_id: folder}) at one fixed commit; records every request path."""

    def __init__(self):
        self.repos: dict[str, Path] = {}
        self.requests: list[str] = []
        # A status to answer every request with instead (429, 401...), as the real Hub does under load.
        self.fail_with: tuple[int, dict[str, str]] | None = None
        super().__init__(_AnsweringHandler)

    def add(self, repo_id: str, folder: Path) -> None:
        self.repos[repo_id] = folder

    def commit(self, repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()


class _AnsweringHandler(BaseHTTPRequestHandler):
    server: AnsweringHub

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")
        if self.server.fail_with is not None:
            status, headers = self.server.fail_with
            return self._send(status, b'{"error": "refused by the stand-in"}', headers, send_body)
        if path.startswith("/api/models/"):
            return self._model_info(path.removeprefix("/api/models/"), send_body)
        repo_id, _, rest = path.lstrip("/").partition("/resolve/")
        _, _, file_name = rest.partition("/")
        folder = self.server.repos.get(repo_id)
        if folder is None or not (folder / file_name).is_file():
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound" if folder else "RepoNotFound"}, send_body)
        body = (folder / file_name).read_bytes()
        headers = {"X-Repo-Commit": self.server.commit(repo_id), "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
        self._send(200, body, headers, send_body)

    def _model_info(self, repo_id: str, send_body: bool) -> None:
        repo_id = repo_id.split("/revision/")[0]
        folder = self.server.repos.get(repo_id)
        if folder is None:
            return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, send_body)
        siblings = [{"rfilename": p.name, "size": p.stat().st_size} for p in sorted(folder.iterdir()) if p.is_file()]
        info = {"id": repo_id, "sha": self.server.commit(repo_id), "siblings": siblings}
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, send_body)

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class HangingHub(_StandinServer):
    """Accepts connections and never answers, until ``stop``."""

    def __init__(self):
        self.released = threading.Event()
        super().__init__(_HangingHandler)

    def stop(self) -> None:
        self.released.set()
        super().stop()


class _HangingHandler(BaseHTTPRequestHandler):
    server: HangingHub

    def handle(self):
        self.server.released.wait()

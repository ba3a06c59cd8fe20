"""A student without a browser: a client speaking Streamlit's own websocket protocol to a ``streamlit run`` server.

It sends the BackMsg protobufs the browser sends (open a page with a query string, Streamlit's "Clear cache")
and reads the ForwardMsgs back, so tests and benchmarks put no Chromium on the server's CPUs. Used by
``tests/test_app_classroom.py`` and ``benchmarks/classroom.py``.
"""

from __future__ import annotations

import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect


class StreamlitClient:
    """One browser tab's session on the server at ``base_url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, base_url: str, timeout: float = 120.0):
        self.timeout = timeout
        url = base_url.replace("http", "ws", 1) + "/_stcore/stream"
        self._ws = connect(url, subprotocols=["streamlit"], open_timeout=timeout, max_size=None)  # noqa: SIM115
        self.page_name = ""
        self.texts: list[str] = []  # markdown, captions, alerts and spinners the last run drew, in order
        self._charts: dict[tuple, object] = {}  # the last run's Vega-Lite charts by place on the page
        # The last run's longest wait with nothing arriving and no spinner or progress bar saying what it waits for.
        self.longest_silence = 0.0
        self.silence_before = ""  # the last text drawn before that wait

    def open(self, page_name: str, query_string: str = "") -> float:
        """Run page ``page_name`` (its URL path, "" for the start page) with ``query_string``; seconds it took."""
        self.page_name = page_name
        message = BackMsg()
        message.rerun_script.query_string = query_string
        message.rerun_script.page_name = page_name
        return self._send_and_wait(message)

    def clear_cache(self) -> None:
        """What the browser's "Clear cache" menu item (or shortcut ``c``) sends."""
        message = BackMsg()
        message.clear_cache = True
        self._ws.send(message.SerializeToString())

    def _send_and_wait(self, message: BackMsg) -> float:
        start = last = time.monotonic()
        self._ws.send(message.SerializeToString())
        self.texts, self._charts, self.longest_silence, waiting_shown = [], {}, 0.0, False
        while True:
            remaining = self.timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise TimeoutError(f"the run of {self.page_name!r} did not finish within {self.timeout:.0f} s")
            forward = ForwardMsg()
            forward.ParseFromString(self._ws.recv(timeout=remaining))
            now = time.monotonic()
            if not waiting_shown and now - last > self.longest_silence:
                self.longest_silence, self.silence_before = now - last, self.texts[-1] if self.texts else "(start)"
            last = now
            kind = forward.WhichOneof("type")
            if kind == "delta":
                self.texts.append(_text_of(forward))
                self._keep_chart(forward)
                waiting_shown = _shows_waiting(forward, waiting_shown)
            elif kind == "script_finished" and forward.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                return time.monotonic() - start  # a page handed over to the entry point runs again first

    def problems(self) -> list[str]:
        """What the last run showed that reads as a failure: Streamlit's "Something went wrong", a traceback."""
        return [text for text in self.texts if "went wrong" in text or "Traceback" in text]

    @property
    def charts(self) -> list:
        """The Vega-Lite charts the last run left on the page, top to bottom (each ``.spec`` and ``.datasets``,
        as AppTest's ``chart.proto``)."""
        return [self._charts[place] for place in sorted(self._charts)]

    def _keep_chart(self, forward: ForwardMsg) -> None:
        place = tuple(forward.metadata.delta_path)
        element = forward.delta.new_element
        if element.HasField("vega_lite_chart"):
            self._charts[place] = element.vega_lite_chart
        else:  # a later element in the same place (a spinner's, a placeholder's) replaces the chart
            self._charts.pop(place, None)

    def close(self) -> None:
        self._ws.close()


def _text_of(forward: ForwardMsg) -> str:
    element = forward.delta.new_element
    for field in ("markdown", "alert", "progress", "text", "exception"):
        if element.HasField(field):
            part = getattr(element, field)
            return getattr(part, "body", "") or getattr(part, "text", "") or getattr(part, "message", "")
    return ""


def _shows_waiting(forward: ForwardMsg, shown: bool) -> bool:
    """Whether a spinner (a transient element), a progress bar or a waiting caption (the app's waiting texts
    end in "…": "Drawing the chart, 3 students ahead of you…") is on the page after this delta."""
    delta = forward.delta
    if delta.HasField("new_transient"):
        return len(delta.new_transient.elements) > 0
    if delta.HasField("new_element") and delta.new_element.HasField("progress"):
        return True
    if delta.HasField("new_element") and delta.new_element.markdown.body.endswith("…"):
        return True
    if delta.HasField("new_element") and delta.new_element.HasField("empty"):  # a bar taken away
        return False
    return shown

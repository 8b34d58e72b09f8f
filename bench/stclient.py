"""A Streamlit visitor without a browser: Streamlit's own websocket protocol, for benches.

A student's browser opens ``/_stcore/stream``, asks for a page (a ``rerun_script`` message
with the page's name and query string), and gets the page's elements back until the
server says the script finished. Widgets are set or clicked by sending their states with
the next run; live fragments (``st.fragment(run_every=...)``) are re-run on the interval
the server asks for, as the browser would. What this does not do is draw anything: the
server-side work of a class of thirty is what it measures, while each student's drawing
happens on their own computer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlparse

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import connect

USER_COOKIE = "cnn_classroom_user"  # ui.state.USER_COOKIE (not imported: no Streamlit app here)

# A run ended early for a rerun (a button's st.switch_page) is followed by the new run.
FINISHED = {
    ForwardMsg.FINISHED_SUCCESSFULLY,
    ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
    ForwardMsg.FINISHED_WITH_COMPILE_ERROR,
}
WIDGETS = ("button", "selectbox", "number_input", "slider", "checkbox", "text_input",
           "select_slider", "toggle")  # fmt: skip


@dataclass
class Widget:
    id: str
    kind: str
    label: str
    proto: object = field(repr=False)


class Session:
    """One visitor's websocket session with a Streamlit server at ``url``."""

    def __init__(self, url: str, timeout: float = 60, user: str | None = None):
        """``user``: the visitor's token, sent as the app's cookie (a browser that visited
        before); None: a new visitor."""
        self.url = url.rstrip("/")
        netloc = urlparse(self.url).netloc
        cookie = {"Cookie": f"{USER_COOKIE}={user}"} if user else None
        self.ws = connect(f"ws://{netloc}/_stcore/stream", subprotocols=["streamlit"],
                          origin=self.url, max_size=None, open_timeout=timeout,
                          additional_headers=cookie)  # fmt: skip
        self.timeout = timeout
        self.widgets: dict[str, Widget] = {}  # label -> the widget last drawn with it
        self.buttons: list[Widget] = []  # every button, in page order
        self.texts: list[str] = []  # markdown, info, success, warning, error, caption
        self.exceptions: list[str] = []
        self.query: dict[str, str] = {}
        self.page = ""
        self._page_hash = ""
        self.states: dict[str, WidgetState] = {}  # widget id -> the value we set
        self._seen: set[str] = set()  # widget ids the last whole run drew
        self._fragments: dict[str, float] = {}  # fragment id -> rerun interval (s)
        self._last_fragment: dict[str, float] = {}  # fragment id -> when it last ran
        self.fragment_runs = 0

    # -- running pages ---------------------------------------------------------------------
    def open(self, page: str, **query: str) -> float:
        """Ask for ``page`` (its url path) and wait until its script has finished; the
        seconds it took."""
        self.page, self.query = page, {**self.query, **query}
        self.widgets, self.buttons, self.states, self._fragments = {}, [], {}, {}
        self._page_hash = ""  # the server names it in its answer (a rerun it asks needs it)
        return self._run()

    def click(self, label: str, key: str | None = None) -> float:
        """Press the button labelled ``label`` (the one whose widget key ends in ``key``,
        when several share the label), as a browser does: one run with its trigger."""
        widget = self.widgets[label]
        if key is not None:
            widget = next(w for w in self.buttons if w.label == label and w.id.endswith(key))
        trigger = WidgetState(id=widget.id, trigger_value=True)
        return self._run(extra=[trigger])

    def set(self, label: str, value) -> float:
        """Set a widget's value: an option (selectbox, by its index), a number or a bool."""
        w = self.widgets[label]
        state = WidgetState(id=w.id)
        if w.kind == "selectbox":  # by the option as shown, or the start of it
            state.string_value = next(o for o in w.proto.options if o.startswith(str(value)))
        elif w.kind in ("checkbox", "toggle"):
            state.bool_value = bool(value)
        elif w.kind == "number_input":  # ints too: Streamlit sends every number as a double
            state.double_value = float(value)
        elif w.kind == "slider":
            state.double_array_value.data.append(float(value))
        elif w.kind == "text_input":
            state.string_value = str(value)
        else:
            raise ValueError(f"cannot set a {w.kind}")
        self.states[w.id] = state
        return self._run()

    def tick(self) -> int:
        """Re-run each live fragment whose interval has passed, as the browser's timer does;
        how many ran."""
        ran = 0
        for fragment_id, interval in list(self._fragments.items()):
            last = self._last_fragment.get(fragment_id, 0.0)
            if time.monotonic() - last >= interval:
                self._last_fragment[fragment_id] = time.monotonic()
                self._run(fragment=fragment_id)
                ran += 1
        self.fragment_runs += ran
        return ran

    def _run(self, extra: list | None = None, fragment: str = "") -> float:
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = urlencode(self.query)
        cs.page_name = self.page
        cs.page_script_hash = self._page_hash
        if fragment:
            cs.fragment_id, cs.is_auto_rerun = fragment, True
        cs.widget_states.widgets.extend([*self.states.values(), *(extra or [])])
        if not fragment:
            self.texts, self.exceptions, self.buttons, self._seen = [], [], [], set()
        started = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        self._read_until_finished(started, fragment=bool(fragment))
        if not fragment:  # a browser forgets the widgets a whole run no longer drew
            self.states = {i: s for i, s in self.states.items() if i in self._seen}
        return time.perf_counter() - started

    def _read_until_finished(self, started: float, fragment: bool) -> None:
        own_run = fragment  # a fragment's run starts with a new_session too, not a new page
        while True:
            left = self.timeout - (time.perf_counter() - started)
            if left <= 0:
                raise TimeoutError(f"page {self.page!r} did not finish in {self.timeout} s")
            fm = ForwardMsg()
            fm.ParseFromString(self.ws.recv(timeout=left))
            kind = fm.WhichOneof("type")
            if kind == "new_session" and own_run:
                own_run = False
            elif kind == "new_session":  # a whole run (a page, or one a fragment asked for)
                self._fragments, self.buttons, self.texts = {}, [], []
            elif kind == "navigation":  # the page this run is on
                self._page_hash = fm.navigation.page_script_hash
            elif kind == "delta":
                self._element(fm.delta)
            elif kind == "auto_rerun":
                self._fragments[fm.auto_rerun.fragment_id] = fm.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for f in fm.stop_auto_rerun.fragment_ids:
                    self._fragments.pop(f, None)
            elif kind == "page_info_changed":
                self.query = dict(
                    p.split("=", 1) for p in fm.page_info_changed.query_string.split("&") if p
                )
            elif kind == "script_finished" and fm.script_finished in FINISHED:
                return

    def _element(self, delta) -> None:
        if delta.WhichOneof("type") != "new_element":
            return
        el = delta.new_element
        kind = el.WhichOneof("type")
        if kind in WIDGETS:
            proto = getattr(el, kind)
            widget = Widget(proto.id, kind, proto.label, proto)
            self.widgets[proto.label] = widget
            self._seen.add(proto.id)
            if kind == "button":
                self.buttons.append(widget)
        elif kind in ("markdown", "alert"):
            self.texts.append(getattr(el, kind).body)
        elif kind == "progress":
            self.texts.append(el.progress.text)
        elif kind == "exception":
            self.exceptions.append(f"{el.exception.type}: {el.exception.message}")

    def text(self) -> str:
        return "\n".join(self.texts)

    def close(self) -> None:
        self.ws.close()

"""The Gradio classify tab as a child process of the Streamlit server (``ui.state`` starts
it once per server).

The Streamlit app starts ``gradio_app.py`` once, on the same network interface as itself
(localhost, or every interface when the app is opened to the classroom network), and its
Classify page embeds it. The page builds the address from the host name the visitor's own
browser used, so the embedding works from other computers too, not only on localhost.

    CNN_CLASSROOM_GRADIO_PORT=7860   the port to try first (a free one is taken if it is busy)
    CNN_CLASSROOM_GRADIO=off         do not start it (the page then says how to start it)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.device import THREADS_ENV

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7860
# A host name or an address, as a Host header may carry one (anything else is not used).
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})$")


def _port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``port``. Connections of a server killed a moment ago
    linger in TIME_WAIT; uvicorn binds past them (SO_REUSEADDR), and so does this check, or
    a restarted app would move its tab to another port under the clients' feet."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _pick_port(host: str, preferred: int) -> int:
    if _port_free(host, preferred):
        return preferred
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def browser_url(browser_host: str | None, port: int, scheme: str = "http") -> str:
    """The address a visitor's browser reaches the tab at: the host name that browser used
    for the Streamlit app (its ``Host`` header, port dropped) with the tab's port. A header
    that is not a plain host name or address gives localhost."""
    name = (browser_host or "").strip()
    if name.startswith("[") and "]" in name:  # IPv6 literal: [::1]:8501
        name = name[: name.index("]") + 1]
    else:
        name = name.rsplit(":", 1)[0]
    if not _HOST.match(name):
        name = "localhost"
    scheme = scheme if scheme in ("http", "https") else "http"
    return f"{scheme}://{name}:{port}/"


class ClassifyServer:
    """``gradio_app.py`` running beside this process; it exits when this process does."""

    def __init__(self, host: str, port: int | None = None):
        self.bind = host or "0.0.0.0"  # Streamlit with no address listens everywhere
        wanted = port or int(os.environ.get("CNN_CLASSROOM_GRADIO_PORT", DEFAULT_PORT))
        self.port = _pick_port(self.bind, wanted)
        # A private file (mode 0600, a name nobody can guess or plant a link at beforehand),
        # removed when the tab stops: a fixed name in /tmp could be another user's.
        fd, log = tempfile.mkstemp(prefix="cnn-classroom-gradio-", suffix=".log")
        self.log = Path(log)
        # One intra-op thread: a drawing takes milliseconds on one core, and the cores belong
        # to this server's training queue; a tab that ran its own threads beside a training
        # run oversubscribed them and slowed both many times over.
        env = {**os.environ, THREADS_ENV: "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "gradio_app.py"), "--host", self.bind,
             "--port", str(self.port), "--parent", str(os.getpid())],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fd,
        )  # fmt: skip
        os.close(fd)  # the child has its own copy
        atexit.register(self.stop)

    def _probe_host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "localhost", "") else self.bind

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether it accepts connections (waiting up to ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self._probe_host(), self.port), timeout=1),
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def failure(self) -> str | None:
        """Why it stopped (the last line of its log), or None while it runs."""
        if self.proc.poll() is None:
            return None
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = text.strip().splitlines()
        return lines[-1] if lines else f"exit status {self.proc.returncode}"

    def url(self, browser_host: str | None, scheme: str = "http") -> str:
        return browser_url(browser_host, self.port, scheme)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.unlink(missing_ok=True)

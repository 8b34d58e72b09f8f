"""The app as ``make run`` starts it, for benches: Streamlit (and its Gradio tab) on
127.0.0.1, on free ports, on a store of the bench's own; its whole process tree can be
measured (resident memory, CPU time) and killed at once with ``kill -9``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self, store: str, port: int | None = None, gradio_port: int | None = None,
                 gradio: bool = True, env: dict | None = None):  # fmt: skip
        self.store, self.port = store, port or free_port()
        self.gradio_port = gradio_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            CNN_CLASSROOM_STORE=store,
            CNN_CLASSROOM_OFFLINE="1",
            CNN_CLASSROOM_GRADIO_PORT=str(self.gradio_port),
            CNN_CLASSROOM_GRADIO="on" if gradio else "off",
            **(env or {}),
        )
        self.proc: subprocess.Popen | None = None  # fmt: skip

    def start(self, timeout: float = 120) -> float:
        """Start it and wait for its health check; the seconds that took."""
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address",
             "127.0.0.1", "--server.port", str(self.port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: kill() takes all of it
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1)
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("the app did not start")

    def pids(self) -> list[int]:
        """The server and everything it started (the Gradio tab, the training workers)."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True,
                             text=True).stdout  # fmt: skip
        return [int(p) for p in out.split()]

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return total * os.sysconf("SC_PAGE_SIZE") / 2**20

    def cpu_seconds(self, pid: int | None = None) -> float:
        """CPU time (user + system) of the server process alone (``pid``: another one)."""
        fields = Path(f"/proc/{pid or self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """``kill -9`` of the whole app: the server, its Gradio tab and its workers."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

"""A SQLite file several processes share: the job queue's and the class's.

One connection per thread (WAL: readers go on while a writer writes; rows read by name),
and every write one short transaction taken at once (BEGIN IMMEDIATE: no lost updates
between processes that read, check and write).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path


class Database:
    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().executescript(schema)  # its own transaction

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                  check_same_thread=False)  # fmt: skip
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    @contextlib.contextmanager
    def _tx(self):
        """One write transaction, taken at once."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

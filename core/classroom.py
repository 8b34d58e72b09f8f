"""The class, as the teacher sees it: display names, assignments, who handed in which run,
and the board that ranks them.

Kept in SQLite beside the store (``<store>/class.sqlite3``), so a restart of the server
loses nothing and every server process sees the same class:

- ``people``: the display name each browser chose (its private token is never shown);
- ``handins``: every run a student started from the Train or Experiments page (a run
  answered from the store counts too: it is the student's result all the same), with the
  assignment it was started under (``""``: free practice);
- ``settings``: the assignments the teacher loaded, and when this lesson started (the
  board shows the hand-ins since then; a new lesson starts it afresh, deleting nothing).

A display name is text: the pages show it as text, and ``to_csv`` writes it so that a
spreadsheet reads it as text too, never as a formula.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from datetime import datetime
from pathlib import Path

from core import UserError, assignments
from core.sqlite import Database
from core.store import Store

MAX_DISPLAY_NAME = 40
KEEP_PEOPLE = 5000  # display names kept (the least recently set go first)
KEEP_HANDINS = 50_000  # hand-ins kept (the oldest go first)
SCHEMA = """
CREATE TABLE IF NOT EXISTS people (owner TEXT PRIMARY KEY, name TEXT NOT NULL,
                                   updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS handins (owner TEXT NOT NULL, run_id TEXT NOT NULL,
                                    assignment TEXT NOT NULL, created REAL NOT NULL,
                                    PRIMARY KEY (owner, run_id, assignment));
CREATE INDEX IF NOT EXISTS handins_created ON handins (created);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COLUMNS = ("student", "assignment", "model", "dataset", "test_accuracy", "macro_f1",
           "train_seconds", "handed_in", "run_id")  # fmt: skip


def clean_name(name: str) -> str:
    """A display name as kept: printable characters, spaces collapsed, at most 40."""
    kept = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in str(name))
    return " ".join(kept.split())[:MAX_DISPLAY_NAME]


def anonymous(owner: str) -> str:
    """How the board names a student who chose no name: stable, and not their token."""
    return "#" + hashlib.sha256(owner.encode()).hexdigest()[:6]


class Classroom(Database):
    def __init__(self, store: Store | None = None):
        self.store = store or Store()
        super().__init__(Path(self.store.root) / "class.sqlite3", SCHEMA)

    # -- display names -------------------------------------------------------------------
    def set_name(self, owner: str, name: str) -> str:
        """Keep ``owner``'s display name (empty: forget it); returns it as kept."""
        name = clean_name(name)
        with self._tx() as con:
            if not name:
                con.execute("DELETE FROM people WHERE owner = ?", (owner,))
                return ""
            con.execute(
                "INSERT OR REPLACE INTO people VALUES (?, ?, ?)", (owner, name, time.time())
            )
            con.execute("DELETE FROM people WHERE owner NOT IN (SELECT owner FROM people "
                        "ORDER BY updated DESC LIMIT ?)", (KEEP_PEOPLE,))  # fmt: skip
        return name

    def name(self, owner: str) -> str:
        row = self._con().execute("SELECT name FROM people WHERE owner = ?", (owner,)).fetchone()
        return row[0] if row else ""

    def names(self) -> dict[str, str]:
        return dict(self._con().execute("SELECT owner, name FROM people").fetchall())

    # -- hand-ins ------------------------------------------------------------------------
    def hand_in(self, owner: str, run_ids: list[str], assignment: str = "") -> None:
        """Record that ``owner`` started these runs (under ``assignment``), now: a run handed
        in again (after a new lesson, say) counts from now."""
        if assignment and assignment not in {a.id for a in self.assignments()}:
            raise UserError(f"no assignment {assignment!r} is open in this class")
        now = time.time()
        with self._tx() as con:
            rows = [(owner, run_id, assignment, now) for run_id in dict.fromkeys(run_ids)]
            con.executemany(
                "INSERT INTO handins VALUES (?, ?, ?, ?) ON CONFLICT (owner, "
                "run_id, assignment) DO UPDATE SET created = excluded.created",
                rows,
            )
            con.execute("DELETE FROM handins WHERE created < (SELECT created FROM handins "
                        "ORDER BY created DESC LIMIT 1 OFFSET ?)", (KEEP_HANDINS - 1,))  # fmt: skip

    # -- settings: the lesson and the assignments --------------------------------------------
    def _setting(self, key: str) -> str | None:
        row = self._con().execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set(self, key: str, value: str | None) -> None:
        with self._tx() as con:
            if value is None:
                con.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def lesson_start(self) -> float:
        """When this lesson started (0: the board shows every hand-in kept)."""
        return float(self._setting("lesson_start") or 0.0)

    def new_lesson(self) -> float:
        now = time.time()
        self._set("lesson_start", repr(now))
        return now

    def assignments(self) -> list[assignments.Assignment]:
        kept = self._setting("assignments")
        return assignments.loads(kept) if kept else []

    def assignment(self, assignment_id: str) -> assignments.Assignment | None:
        return next((a for a in self.assignments() if a.id == assignment_id), None)

    def load_assignments(self, data: bytes, name: str) -> list[assignments.Assignment]:
        """Replace the class's assignments with a file's (checked first: a bad file is one
        line and the class keeps what it had)."""
        items = assignments.parse(data, name)
        self._set("assignments", assignments.dumps(items))
        return items

    def clear_assignments(self) -> None:
        self._set("assignments", None)

    # -- the board ---------------------------------------------------------------------------
    def board(self, since: float | None = None, assignment: str | None = None,
              best_only: bool = True) -> list[dict]:  # fmt: skip
        """The hand-ins since ``since`` (default: this lesson's start) of stored classifier
        runs, best test accuracy first: every one, or each student's best of each model per
        assignment (an assignment that compares models wants the best of each).
        ``assignment``: only that assignment's ("" for free practice; None: all)."""
        since = self.lesson_start() if since is None else since
        query, args = (
            "SELECT owner, run_id, assignment, created FROM handins WHERE created >= ?",
            [since],
        )
        if assignment is not None:
            query += " AND assignment = ?"
            args.append(assignment)
        names = self.names()
        rows = []
        for owner, run_id, task, created in self._con().execute(query, args).fetchall():
            try:
                meta = self.store.meta(run_id)
            except ValueError:
                continue
            if meta is None or "accuracy" not in meta.get("test", {}):
                continue  # still training, deleted since, or an autoencoder
            rows.append({
                "student": names.get(owner) or anonymous(owner),
                "owner": owner,
                "assignment": task,
                "model": meta["model"],
                "dataset": meta["dataset"]["name"],
                "test_accuracy": meta["test"]["accuracy"],
                "macro_f1": meta["test"]["macro_f1"],
                "train_seconds": meta.get("wall_seconds"),
                "handed_in": created,
                "run_id": run_id,
            })  # fmt: skip
        taken: dict[str, set[str]] = {}  # a display name chosen by several students
        for r in rows:
            taken.setdefault(r["student"], set()).add(r["owner"])
        for r in rows:  # ... is told apart by each one's tag
            if len(taken[r["student"]]) > 1:
                r["student"] = f"{r['student']} ({anonymous(r['owner'])})"
        rows.sort(key=lambda r: (-r["test_accuracy"], r["handed_in"]))
        if best_only:
            seen: set[tuple[str, str, str]] = set()
            rows = [r for r in rows if (key := (r["owner"], r["assignment"], r["model"]))
                    not in seen and not seen.add(key)]  # fmt: skip
        return rows


def to_csv(rows: list[dict], titles: dict[str, str] | None = None, lang: str = "en") -> str:
    """The board as CSV for a spreadsheet (``titles``: an assignment id's title). In Spanish
    (``lang``) the cells are separated by semicolons and decimals written with a comma, as a
    Spanish spreadsheet reads them. Every text cell that a spreadsheet would read as a
    formula (=, +, -, @, a tab) starts with an apostrophe, so a student named
    ``=HYPERLINK(...)`` stays a name."""
    titles = titles or {}
    comma = lang == "es"

    def decimal(value: float | None, digits: int) -> str:
        text = "" if value is None else f"{value:.{digits}f}"
        return text.replace(".", ",") if comma else text

    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if comma else ",")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([
            _cell(r["student"]), _cell(titles.get(r["assignment"], r["assignment"])),
            _cell(r["model"]), _cell(r["dataset"]), decimal(r["test_accuracy"], 4),
            decimal(r["macro_f1"], 4), decimal(r["train_seconds"], 1),
            datetime.fromtimestamp(r["handed_in"]).isoformat(timespec="seconds"), r["run_id"],
        ])  # fmt: skip
    return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

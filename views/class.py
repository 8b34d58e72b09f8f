"""The class (the teacher's): this lesson's board of every student's runs, best first, with a
CSV for grading; the assignments students see on the Train page; a new lesson. Listed in
the navigation for the teacher only (ui.state.is_teacher), and refused to anyone else."""

from __future__ import annotations

import codecs
import time
from datetime import datetime

import pandas as pd
import streamlit as st

from core import UserError, schema
from core.assignments import MAX_BYTES, examples
from core.classroom import to_csv
from ui.i18n import lang, num, pct, styled, t
from ui.runs import share_link
from ui.state import classroom, is_teacher
from ui.text import DASH, plain
from ui.widgets import spoken_select

BOARD_EVERY = 10  # seconds between redraws of the board (students hand in meanwhile)
EVERYONE = "\0all"  # the filter's "every assignment" (no assignment id can be this)


def plural(key: str, n: int) -> str:
    """ "1 run", "3 runs": ``key`` holds the one and the many ({n} in each)."""
    return t(f"{key}_one" if n == 1 else f"{key}_many", n=num(n))


def titles() -> dict[str, str]:
    return {"": t("cl_free_practice")} | {a.id: a.text("title", lang())
                                          for a in classroom().assignments()}  # fmt: skip


def lesson_ui() -> None:
    start = classroom().lesson_start()
    since = (t("cl_lesson_since", when=datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M"))
             if start else t("cl_lesson_all"))  # fmt: skip
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.caption(since)
    if right.button(t("cl_new_lesson"), help=t("cl_new_lesson_help"), key="cl_new_lesson"):
        classroom().new_lesson()
        st.toast(t("cl_new_lesson_done"))
        st.rerun()


@st.fragment(run_every=BOARD_EVERY)
def board_ui() -> None:
    names = titles()
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    words = {EVERYONE: t("cl_every_assignment")} | names
    picked = spoken_select(c1, t("cl_filter"), list(words), words, key="cl_filter")
    best = c2.toggle(t("cl_best_only"), value=True, key="cl_best", help=t("cl_best_help"))
    rows = classroom().board(assignment=None if picked == EVERYONE else picked, best_only=best)
    if not rows:
        st.info(t("cl_board_empty"))
        return
    frame = pd.DataFrame({
        t("cl_rank"): range(1, len(rows) + 1),
        t("cl_student"): [r["student"] for r in rows],
        t("cl_accuracy"): [r["test_accuracy"] for r in rows],
        t("cl_f1"): [r["macro_f1"] for r in rows],
        t("cl_open"): [share_link(r["run_id"]) for r in rows],
        t("cl_model"): [r["model"] for r in rows],
        t("cl_assignment"): [names.get(r["assignment"], r["assignment"]) for r in rows],
        t("cl_seconds"): [r["train_seconds"] for r in rows],
        t("cl_when"): [datetime.fromtimestamp(r["handed_in"]).strftime("%H:%M") for r in rows],
        t("cl_dataset"): [r["dataset"] for r in rows],
    })  # fmt: skip
    # Numbers stay numbers (the columns sort as such), written in the page's language.
    shown = (styled(frame, digits=4)
             .format(lambda v: pct(v, 2), subset=[t("cl_accuracy")])
             .format(lambda v: num(v, 1), subset=[t("cl_seconds")]))  # fmt: skip
    st.dataframe(shown, hide_index=True, width="stretch", placeholder=DASH,
                 column_config={t("cl_open"): st.column_config.LinkColumn(
                     display_text=t("cl_open_text")),
                     t("cl_student"): st.column_config.TextColumn(width="medium")})  # fmt: skip
    students = len({r["owner"] for r in rows})
    st.caption(t("cl_board_summary", runs=plural("cl_runs", len(rows)),
                 students=plural("cl_students", students), every=BOARD_EVERY))  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M")
    table = codecs.BOM_UTF8 + to_csv(rows, names, lang()).encode()  # the mark: Excel reads UTF-8
    st.download_button(t("cl_csv"), data=table, file_name=f"class-{stamp}.csv",
                       mime="text/csv", icon=":material/download:", on_click="ignore",
                       key="cl_csv")  # fmt: skip


def assignments_ui() -> None:
    st.subheader(t("cl_assignments"))
    st.caption(t("cl_assignments_help"))
    offered = classroom().assignments()
    for a in offered:
        free = ", ".join(schema.field(name).label(lang()) for name in a.free) or DASH
        st.markdown(t("cl_assignment_line", title=plain(a.text("title", lang())), id=a.id,
                      free=plain(free)))  # fmt: skip
    if not offered:
        st.info(t("cl_no_assignments"))
    cols = st.columns(len(examples()) + 1)
    for col, (name, path) in zip(cols, examples().items(), strict=False):
        col.button(t("cl_load_example", name=name), key=f"cl_ex_{name}",
                   on_click=lambda path=path: _load(path.read_bytes(), path.name))  # fmt: skip
    if offered and cols[-1].button(t("cl_clear"), key="cl_clear"):
        classroom().clear_assignments()
        st.session_state["cl_said"] = ("ok", t("cl_cleared"))
        st.rerun()
    box = f"cl_file_{st.session_state.get('cl_files', 0)}"  # a new box once a file is read
    st.file_uploader(t("cl_upload"), type=["json", "yaml", "yml"], key=box,
                     help=t("cl_upload_help"), on_change=_uploaded, args=(box,),
                     max_upload_size=1)  # MB: a file is at most MAX_BYTES  # fmt: skip
    if said := st.session_state.pop("cl_said", None):
        (st.error if said[0] == "error" else st.success)(said[1])


def _load(data: bytes, name: str) -> None:
    """Load a file's assignments (a button's or the upload box's callback: it runs before
    the page), or say why not."""
    try:
        items = classroom().load_assignments(data, name)
    except UserError as e:
        st.session_state["cl_said"] = ("error", t("cl_bad_file", why=plain(str(e))))
    else:
        st.session_state["cl_said"] = (
            "ok",
            t("cl_loaded", n=plural("cl_assignments_n", len(items)), name=plain(name)),
        )


def _uploaded(box: str) -> None:
    """The upload box changed: load it; either way the box is emptied (a refused file left
    in it would look loaded)."""
    file = st.session_state.get(box)
    if file is None:
        return
    st.session_state["cl_files"] = st.session_state.get("cl_files", 0) + 1
    _load(file.getvalue()[: MAX_BYTES + 1], file.name)


def main() -> None:
    st.title(t("cl_title"))
    if not is_teacher():
        st.error(t("lib_teacher_only"))
        return
    lesson_ui()
    board_ui()
    assignments_ui()


main()

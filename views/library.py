"""Library (the teacher's): every stored run with its model, data, score, size on disk, age
and whether today's code can rebuild it; delete runs, prune the stale ones, see the store's
size, copy a run's read-only share link. Listed in the navigation for the teacher only
(ui.state.is_teacher), and refused to anyone else who opens its address."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core import UserError
from core.data.uploads import MAX_ZIP_MB
from ui.i18n import num, styled, t
from ui.runs import share_link
from ui.state import is_teacher, store
from ui.text import DASH


def table(rows: list[dict]) -> pd.DataFrame:
    now = time.time()
    return pd.DataFrame({
        t("lib_run"): [r["name"] or r["run_id"] for r in rows],
        t("lib_model"): [r["model"] for r in rows],
        t("lib_dataset"): [r["dataset"] for r in rows],
        t("lib_score"): [r["accuracy"] if r["accuracy"] is not None else r["mse"] for r in rows],
        t("lib_mb"): [r["bytes"] / 2**20 for r in rows],
        t("lib_age_h"): [(now - r["created"]) / 3600 for r in rows],
        t("lib_current"): [t("lib_yes") if r["current"] else t("lib_no") for r in rows],
        t("lib_share"): [share_link(r["run_id"]) for r in rows],
    })  # fmt: skip


def delete_ui(rows: list[dict]) -> None:
    labels = {r["run_id"]: f"{r['name'] or r['run_id']} · {r['model']} · {r['dataset']}"
              for r in rows}  # fmt: skip
    picked = st.multiselect(t("lib_pick"), list(labels), format_func=labels.get, key="lib_pick",
                            placeholder=t("lib_pick_none"))  # fmt: skip
    if st.button(t("lib_delete", n=len(picked)), disabled=not picked, key="lib_delete"):
        for run_id in picked:
            store().delete(run_id)
        st.session_state.pop("lib_pick", None)
        st.toast(t("lib_deleted", n=len(picked)))
        st.rerun()


def prune_ui() -> None:
    stale = store().stale()
    st.caption(t("lib_prune_help"))
    if st.button(t("lib_prune", n=len(stale)), disabled=not stale, key="lib_prune"):
        for run_id in stale:
            store().delete(run_id)
        st.toast(t("lib_deleted", n=len(stale)))
        st.rerun()


def import_ui() -> None:
    """A run zip (``python -m core export``, another class's server) into this store."""
    st.file_uploader(t("lib_import"), type=["zip"], key="lib_zip", help=t("lib_import_help"),
                     max_upload_size=MAX_ZIP_MB, on_change=_imported)  # fmt: skip
    if said := st.session_state.pop("lib_zip_said", None):
        (st.error if said[0] == "error" else st.success)(said[1])


def _imported() -> None:
    """The upload box changed (runs before the page): bring the run in, or say why not."""
    file = st.session_state.get("lib_zip")
    if file is None:
        return
    try:
        meta = store().import_zip(file, name=file.name)
    except UserError as e:
        st.session_state["lib_zip_said"] = ("error", t("lib_import_bad", why=str(e)))
    else:
        st.session_state["lib_zip_said"] = ("ok", t("lib_imported", run=meta["run_id"],
                                                    model=meta["model"]))  # fmt: skip


def main() -> None:
    st.title(t("lib_title"))
    if not is_teacher():
        st.error(t("lib_teacher_only"))
        return
    rows = store().overview()
    total = sum(r["bytes"] for r in rows)
    stale = sum(not r["current"] for r in rows)
    st.write(t("lib_summary", n=num(len(rows)), mb=num(total / 2**20, 1), stale=num(stale)))
    if not rows:
        st.info(t("lib_empty"))
    else:
        st.dataframe(styled(table(rows), digits=2), hide_index=True, placeholder=DASH,
                     width="stretch",
                     column_config={t("lib_share"): st.column_config.LinkColumn()})  # fmt: skip
        delete_ui(rows)
    prune_ui()
    import_ui()


main()

"""A run's model to take away, from its Evaluate page: ONNX for other tools, verified first.

The export is made on demand (a button), because a backbone's takes a while and most visitors
never want one; it is kept beside the run, so the next visitor downloads it at once. One
export runs at a time on the server: thirty students pressing the button together queue
behind it instead of sharing two cores thirty ways.
"""

from __future__ import annotations

import threading

import streamlit as st

from core import UserError
from core import onnx_export as ox
from ui.i18n import num, t
from ui.state import store

ONE_AT_A_TIME = threading.Lock()


def onnx_ui(meta: dict) -> None:
    run_id = meta["run_id"]
    kept = store().run_file(run_id, ox.FILE)
    st.caption(t("dl_onnx_help", n=num(ox.CHECK_IMAGES)))
    if not kept.is_file():
        slot = st.empty()  # the button goes once pressed: the download takes its place
        if not slot.button(t("dl_onnx_prepare"), key=f"dl_onnx_{run_id}"):
            return
        slot.empty()
        held = ONE_AT_A_TIME.acquire(blocking=False)
        try:  # released however this run ends (a click meanwhile ends it early)
            if not held:
                with st.spinner(t("dl_onnx_waiting")):
                    held = ONE_AT_A_TIME.acquire()
            with st.spinner(t("dl_onnx_making", n=num(ox.CHECK_IMAGES))):
                _, check = ox.export(store(), run_id)
        except UserError as e:
            st.error(str(e))
            return
        finally:
            if held:
                ONE_AT_A_TIME.release()
        st.success(t("dl_onnx_checked", n=num(check.images), diff=f"{check.max_abs_diff:.1e}"))
    st.download_button(
        t("dl_onnx_download", mb=num(kept.stat().st_size / 2**20, 1)),
        data=kept.read_bytes,  # read on the click, not on every rerun of the page
        file_name=f"{meta['model']}-{run_id}.onnx",
        mime="application/octet-stream",
        key=f"dl_onnx_get_{run_id}",
        on_click="ignore",
        icon=":material/download:",
    )

"""Classify: the Gradio tab (draw, drop, paste or film an image), embedded in the app."""

from __future__ import annotations

import streamlit as st

from core import access
from ui.i18n import lang, t
from ui.state import classify_server

HEIGHT = 1050  # pixels: the tab's two columns without an inner scroll bar on a laptop
STARTUP_SECONDS = 60  # the tab imports torch and Gradio: a few seconds on a warm machine

server = classify_server()
if server is None:
    st.title(t("cls_title"))  # when the tab shows, it has its own
    st.warning(t("cls_page_down", why="CNN_CLASSROOM_GRADIO=off", port=7860))
    st.stop()
if not server.ready():
    with st.spinner(t("cls_page_starting")):
        server.ready(timeout=STARTUP_SECONDS)
if not server.ready():
    st.title(t("cls_title"))
    st.error(t("cls_page_down", why=server.failure() or "no answer yet", port=server.port))
    st.stop()
scheme = "https" if (st.context.url or "").startswith("https") else "http"
url = server.url(st.context.headers.get("Host"), scheme) + ("es" if lang() == "es" else "")
if access.password() is not None:  # this browser gave it: the tab lets it in too
    url += f"?class={access.token()}"
st.iframe(url, height=HEIGHT)
st.markdown(f"[{t('cls_page_open')}]({url})")

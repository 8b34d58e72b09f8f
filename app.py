"""CNN Classroom: the Streamlit entry point (navigation, language, shared sidebar).

make run        # or: streamlit run app.py
"""

from __future__ import annotations

import streamlit as st

from ui.i18n import language_picker, t
from ui.state import (
    class_admitted,
    class_password_form,
    classify_server,
    display_name_box,
    is_teacher,
    jobs,
    leave_teacher,
    remember_teacher,
    teacher_form,
    user,
    warm_server,
)

# (file in views/, URL path, Material icon); the title is the translation of nav_<path>.
# Not "pages/": with that folder Streamlit starts in its legacy multipage mode and a first
# visit to /train would run the page without this script (no navigation, no language).
PAGES = [
    ("home", ":material/home:"),
    ("train", ":material/model_training:"),
    ("evaluate", ":material/fact_check:"),
    ("compare", ":material/compare_arrows:"),
    ("embeddings", ":material/scatter_plot:"),
    ("inside", ":material/layers:"),
    ("autoencoder", ":material/compress:"),
    ("experiments", ":material/science:"),
    ("pretraining", ":material/school:"),
    ("classify", ":material/draw:"),
]
TEACHER_PAGES = [("class", ":material/groups:"), ("library", ":material/inventory_2:")]  # teacher's

st.set_page_config(
    page_title="CNN Classroom",
    page_icon=__file__.removesuffix("app.py") + "assets/favicon.png",  # not a CDN (offline)
    layout="wide",
)
language_picker()
# The teacher's pages exist for everyone, so their address answers a student with one line
# ("This page is for the teacher.") rather than Streamlit's "Page not found"; they are listed
# for the teacher only.
teacher = is_teacher()
navigation = [
    st.Page(f"views/{name}.py", title=t(f"nav_{name}"), icon=icon, url_path=name,
            default=name == "home",
            visibility="visible" if teacher or (name, icon) not in TEACHER_PAGES else "hidden")
    for name, icon in PAGES + TEACHER_PAGES
]  # fmt: skip
# Known before the class password is asked for (the page asked for opens once it is
# given), listed only after.
admitted = class_admitted()
page = st.navigation(navigation, position="sidebar" if admitted else "hidden")
if not admitted:
    class_password_form()  # stops here
teacher_form()
leave_teacher()
name_box = st.sidebar.container()  # above what user() may draw once (its cookie)
user()
display_name_box(name_box)
remember_teacher()  # the sidebar's last element, when drawn
jobs()  # the server's job queue starts (and warms up) with the first visit to any page
warm_server()  # its caches fill in the background
classify_server()  # and the Gradio classify tab, in a process of its own
page.run()

"""CNN Classroom: the Streamlit entry point (navigation, language, shared sidebar).

make run        # or: streamlit run app.py
"""

from __future__ import annotations

import streamlit as st

from ui.i18n import language_picker, t
from ui.state import user

st.set_page_config(page_title="CNN Classroom", page_icon="🧥", layout="wide")
language_picker()
user()
pages = [
    st.Page("pages/home.py", title=t("nav_home"), icon="🏠", default=True, url_path="home"),
    st.Page("pages/train.py", title=t("nav_train"), icon="🏋️", url_path="train"),
]
st.navigation(pages).run()

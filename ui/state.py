"""What the pages share: the dataset, the store, the job queue, the visitor's private token."""

from __future__ import annotations

import os
import secrets
import threading
import time

import streamlit as st

from core import access
from core import data as datasets
from core.classroom import MAX_DISPLAY_NAME, Classroom
from core.config import DataConfig
from core.jobs import JobQueue
from core.serve import ClassifyServer
from core.store import Store
from ui.i18n import t


def dataset(cfg: DataConfig | None = None):
    """An ImageData, shared read-only by every session (core.data's cache: bounded in
    datasets and bytes, so every dataset anyone opens does not stay decoded here)."""
    return datasets.load(cfg or DataConfig())


@st.cache_resource(show_spinner=False)
def store() -> Store:
    """The store; on this server's first visit, what killed processes left half-written
    (partial uploads and extractions) is removed."""
    from core.data.uploads import clean_stale

    s = Store()
    clean_stale(s.root)
    return s


@st.cache_resource(show_spinner=False)
def jobs() -> JobQueue:
    """The class's queue (on disk beside the store); this server dispatches it, to worker
    processes or a Ray cluster (CNN_CLASSROOM_RAY), and keeps one worker started ahead so
    the first Start shows its curve at once (CNN_CLASSROOM_WARM_WORKER=off: not ahead)."""
    warm = os.environ.get("CNN_CLASSROOM_WARM_WORKER", "on").lower() != "off"
    return JobQueue(store(), warm=warm)


@st.cache_resource(show_spinner=False)
def classroom() -> Classroom:
    """The class beside the store: display names, assignments, hand-ins (core.classroom)."""
    return Classroom(store())


@st.cache_resource(show_spinner=False)
def warm_server() -> threading.Thread:
    """Once per server, in the background: what every first page view would pay (torch and
    the registry's parameter counts, scikit-learn, the map libraries, the default
    dataset decoded, the store's runs verified once: 5-10 s of CPU). A restarted server's
    thirty reconnecting students then do not each wait behind it."""

    def warm() -> None:
        import openTSNE  # noqa: F401

        import core.metrics  # noqa: F401 - scikit-learn and SciPy
        from core import models

        for entry in models.list_models():
            models.parameter_count(entry.name)
        datasets.load(DataConfig()).mean_std()
        store().list()

    thread = threading.Thread(target=warm, daemon=True, name="warm-server")
    thread.start()
    return thread


def dataset_names(key: str) -> dict[str, str]:
    """{dataset as a config names it: as a picker shows it} for this visitor: the built-in
    ones, their uploaded zips and the folders the teacher offers. A pick kept under ``key``
    that is no longer among them (an upload gone, a folder no longer offered) is dropped."""
    from core.data import BUILTIN
    from core.data import uploads as photo_sets

    own = {**photo_sets.uploads(store().root, user()), **photo_sets.offered_folders()}
    names = {d: d for d in BUILTIN} | {path: shown for shown, path in own.items()}
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    return names


def class_admitted() -> bool:
    """Whether this visitor may see the pages: no class password is set
    (CNN_CLASSROOM_PASSWORD), or this session gave it, or the URL keeps its token (a
    refresh), which then stays in the URL."""
    if access.password() is None:
        return True
    if st.session_state.get("class_ok") or access.accepts_token(st.query_params.get("class", "")):
        _admit()
        return True
    return False


def _admit() -> None:
    st.session_state.class_ok = True
    st.query_params["class"] = access.token()


def class_password_form() -> None:
    """The password page, in place of the page asked for (which opens once it is given);
    stops the script. A wrong password waits a second: guessing stays slow."""
    st.title(t("pw_title"))
    st.write(t("pw_intro"))
    with st.form("class_password"):
        given = st.text_input(t("pw_label"), type="password")
        entered = st.form_submit_button(t("pw_enter"), type="primary")
    if entered and access.accepts(given):
        _admit()
        st.rerun()
    if entered:
        time.sleep(1.0)
        st.error(t("pw_wrong"))
    st.stop()


def cookie(name: str) -> str:
    """A cookie the browser sent with this session's connection ("" when none)."""
    value = st.context.cookies.get(name, "")
    return value if isinstance(value, str) else ""  # (a test run has no browser)


def on_this_machine() -> bool:
    """Whether the visitor's browser runs on the server's machine (Streamlit gives no
    address for a localhost connection)."""
    return st.context.ip_address is None


TEACHER_COOKIE = "cnn_classroom_teacher"  # a token of the teacher key (access.teacher_token)


def is_teacher() -> bool:
    """Whether this visitor is the teacher: this browser gave the teacher key (this session,
    or an earlier one: its cookie), or none is set and the visitor is on the machine itself."""
    if access.teacher_key() is None:
        return on_this_machine()
    if not st.session_state.get("teacher") and not st.session_state.get("teacher_left"):
        st.session_state.teacher = access.accepts_teacher_token(cookie(TEACHER_COOKIE))
    return bool(st.session_state.teacher)


def remember_teacher() -> None:
    """Once the key was given: ask the browser to keep the teacher's token; once the teacher
    left: to forget it. Drawn last in the sidebar, as ``_remember``; sent to this origin
    only, never in a URL."""
    keep = st.session_state.pop("teacher_cookie", None)
    if keep is None:
        return
    token, age = (access.teacher_token(), access.TEACHER_HOURS * 3600) if keep else ("", 0)
    set_cookie(TEACHER_COOKIE, token, age)


def leave_teacher() -> None:
    """The sidebar's way out of the teacher's role (a key was given on a shared computer)."""
    if access.teacher_key() is None or not is_teacher():
        return
    if st.sidebar.button(t("te_leave"), key="te_leave", icon=":material/logout:"):
        st.session_state.teacher, st.session_state.teacher_cookie = False, False
        st.session_state.teacher_left = True  # this connection still carries the cookie
        st.rerun()


def teacher_form() -> None:
    """The sidebar's way in for the teacher, when a teacher key is set and this session has
    not given it. A wrong key waits a second: guessing stays slow."""
    if access.teacher_key() is None or is_teacher():
        return
    with st.sidebar.expander(t("te_title")), st.form("teacher_key", border=False):
        given = st.text_input(t("te_key"), type="password")
        entered = st.form_submit_button(t("te_enter"))
    if entered and access.accepts_teacher(given):
        st.session_state.teacher = st.session_state.teacher_cookie = True
        st.session_state.teacher_left = False
        st.rerun()
    if entered:
        time.sleep(1.0)
        st.sidebar.error(t("te_wrong"))


def display_name_box(where) -> None:
    """The sidebar's box (``where``) where a student writes the name the teacher's class board shows
    (kept by the class, core.classroom: a refresh or a restart keeps it)."""
    key = "display_name"
    if key not in st.session_state:
        st.session_state[key] = classroom().name(user())

    def keep() -> None:
        st.session_state[key] = classroom().set_name(user(), st.session_state[key])

    where.text_input(
        t("cl_your_name"),
        key=key,
        on_change=keep,
        max_chars=MAX_DISPLAY_NAME,
        placeholder=t("cl_your_name_placeholder"),
        help=t("cl_your_name_help"),
    )


USER_COOKIE = "cnn_classroom_user"  # this browser's private token
USER_DAYS = 180  # how long a browser keeps it: a school term and then some


def user() -> str:
    """This visitor's private token: it owns their live jobs and uploads. A cookie keeps it
    (a refresh or a new tab of the same browser is the same visitor), never the URL: a link
    a student shares (a run's Evaluate page, the Train page) hands over nothing of theirs.
    An old link's ``?user=`` is dropped, not adopted."""
    if "user" not in st.session_state:
        token = cookie(USER_COOKIE)
        if not _is_token(token):
            token = secrets.token_hex(8)
            _remember(token)
        st.session_state.user = token
    st.query_params.pop("user", None)
    return st.session_state.user


def _is_token(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def _remember(token: str) -> None:
    """Ask the browser to keep ``token``."""
    set_cookie(USER_COOKIE, token, USER_DAYS * 86400)


def set_cookie(name: str, value: str, seconds: int) -> None:
    """Ask the browser to keep ``name=value`` for ``seconds`` (0: forget it), for this page's
    own origin only and sent to it alone. Drawn last in the sidebar: an element above the
    page would shift every element of its first run against the next, and Streamlit would
    show both while the next one runs."""
    cookie = f"{name}={value}; path=/; max-age={seconds}; SameSite=Strict"
    st.sidebar.html(f"<script>document.cookie = {cookie!r};</script>",
                    unsafe_allow_javascript=True)  # fmt: skip


LOAD = "tr_load"  # a config for the Train page's form to show (set by Home's Run)


@st.cache_data(show_spinner=False, ttl=2)
def stored_runs(task: str = "classify") -> list[dict]:
    """Verified metadata of the stored runs of one task ("classify", or "reconstruct" for
    autoencoders), newest first (re-read at most every 2 s)."""
    return [m for m in store().list() if m.get("task", "classify") == task]


@st.cache_resource(show_spinner=False)
def classify_server() -> ClassifyServer | None:
    """The Gradio classify tab, started once per Streamlit server on the same interface
    (None when CNN_CLASSROOM_GRADIO=off, as in the page tests)."""
    if os.environ.get("CNN_CLASSROOM_GRADIO", "").lower() == "off":
        return None
    return ClassifyServer(st.get_option("server.address") or "")

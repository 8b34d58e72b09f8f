"""The teacher's library (issue 20, items 1 and 2): the teacher role, every stored run with
its size and whether it is current, delete and prune; students never see it."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT, open_page
from streamlit.testing.v1 import AppTest

from core.access import TEACHER_ENV
from core.store import Store

STALE = "f" * 20


@pytest.fixture
def root(tiny_run, tmp_path):
    """The tiny run (current) and the same weights under a key no current code gives."""
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    store = Store(root)
    model, meta = store.load_model(tiny_run.run_id)
    store.save(STALE, model, {k: v for k, v in meta.items()
                              if k not in ("run_id", "checksum", "weights_sha256", "format",
                                           "created")})  # fmt: skip
    return root


def test_the_teacher_on_the_machine_sees_every_run_and_prunes_the_stale(root, tiny_run,
                                                                       monkeypatch):  # fmt: skip
    monkeypatch.delenv(TEACHER_ENV, raising=False)  # no key: localhost is the teacher
    monkeypatch.setattr("ui.state.on_this_machine", lambda: True)
    at = open_page("library", monkeypatch, root)
    assert not at.exception and not at.error
    assert "2 runs" in at.markdown[0].value and "1 not current" in at.markdown[0].value
    frame = at.dataframe[0].value
    assert sorted(frame["still current"]) == ["no", "yes"]
    assert all(link.endswith("&lang=en") and "run=" in link
               for link in frame["share link (read-only)"])  # fmt: skip
    prune = next(b for b in at.button if b.key == "lib_prune")
    assert prune.label == "Prune 1 stale or damaged runs"
    prune.click().run()
    assert [m["run_id"] for m in Store(root).list()] == [tiny_run.run_id]
    at.multiselect(key="lib_pick").set_value([tiny_run.run_id]).run()
    next(b for b in at.button if b.key == "lib_delete").click().run()
    assert Store(root).list() == [] and not at.exception


def test_with_a_teacher_key_only_who_gives_it_is_the_teacher(root, monkeypatch):
    monkeypatch.setenv(TEACHER_ENV, "owl-42")
    monkeypatch.setattr("ui.state.on_this_machine", lambda: True)  # even on the machine
    at = open_page("library", monkeypatch, root, lang="es")
    assert [e.value for e in at.error] == ["Esta página es para el profesor."]
    assert not at.dataframe  # nothing of the runs is shown to a student
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["user"] = "00112233445566aa"
    app.run()
    app.sidebar.text_input[0].input("owl")
    app.sidebar.button[0].click().run()
    assert "That is not the teacher key." in [e.value for e in app.sidebar.error]
    app.sidebar.text_input[0].input("owl-42")
    app.sidebar.button[0].click().run()
    assert app.session_state["teacher"] is True and not app.exception
    app.switch_page("views/library.py").run()
    assert not app.error and app.dataframe


def test_a_student_on_the_network_without_a_key_set_is_not_the_teacher(root, monkeypatch):
    monkeypatch.delenv(TEACHER_ENV, raising=False)
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = open_page("library", monkeypatch, root)
    assert [e.value for e in at.error] == ["This page is for the teacher."]
    assert not at.dataframe and not at.button


def test_the_teacher_stays_the_teacher_after_a_refresh_through_a_cookie(root, monkeypatch):
    """The key given once: the browser keeps a token signed with it and stamped with the
    time (never the key, never in a URL), and a new session (a refresh) of that browser is
    the teacher for 12 hours; a made-up token, one of an old key or an older one is not;
    "Leave the teacher's role" ends it and clears the cookie."""
    import re
    import time

    from core import access

    monkeypatch.setenv(TEACHER_ENV, "owl-42")
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["user"] = "00112233445566aa"
    app.run()
    app.sidebar.text_input[0].input("owl-42")
    app.sidebar.button[0].click().run()
    kept = [h.proto.body for h in app.sidebar.get("html") if "cnn_classroom_teacher=" in
            h.proto.body]  # fmt: skip
    assert len(kept) == 1 and "owl-42" not in kept[0]
    token = re.search(r"cnn_classroom_teacher=([0-9a-f]+\.[0-9a-f]{32});", kept[0]).group(1)
    assert access.accepts_teacher_token(token)

    def refresh(given: str) -> AppTest:
        monkeypatch.setattr("ui.state.cookie", lambda name: given if "teacher" in name else "")
        at = AppTest.from_file(str(ROOT / "views" / "library.py"), default_timeout=120)
        at.session_state["user"] = "00112233445566aa"
        return at.run()

    assert not refresh(token).error
    assert [e.value for e in refresh("0" * 32).error] == ["This page is for the teacher."]
    stale = access.teacher_token(issued=time.time() - 13 * 3600)
    assert [e.value for e in refresh(stale).error] == ["This page is for the teacher."]
    monkeypatch.setenv(TEACHER_ENV, "new key")  # a new key voids the old key's cookies
    assert [e.value for e in refresh(token).error] == ["This page is for the teacher."]

    monkeypatch.setenv(TEACHER_ENV, "owl-42")
    next(b for b in app.sidebar.button if b.key == "te_leave").click().run()
    assert not app.session_state["teacher"]
    cleared = [h.proto.body for h in app.sidebar.get("html") if "max-age=0" in h.proto.body]
    assert cleared and "cnn_classroom_teacher=;" in cleared[0]

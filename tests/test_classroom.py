"""The class at a glance and its assignments (issue 20, items 3 and 4): students choose a
display name, their runs are handed in (tagged with the assignment they worked on), the
teacher's board ranks them and downloads them as CSV; an assignment file fixes some
settings, and the Train page locks them."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace

import pytest
import streamlit as st
from conftest import ROOT, TINY
from streamlit.testing.v1 import AppTest

from core import UserError, assignments
from core.access import TEACHER_ENV
from core.classroom import Classroom, anonymous, to_csv
from core.config import RunConfig
from core.jobs import JobQueue
from core.store import Store

ANA, BEN = "00112233445566aa", "ffeeddccbbaa9988"
SEED000 = assignments.EXAMPLES / "seed000-cnn-vs-mlp.yaml"
SEED003 = assignments.EXAMPLES / "seed003-ablations.yaml"


# -- the assignment files ------------------------------------------------------------------
def test_the_shipped_examples_load_with_their_fixed_and_free_fields():
    (cnn_vs_mlp,) = assignments.parse(SEED000.read_bytes(), SEED000.name)
    assert cnn_vs_mlp.model_choices() == ("cnn_bn", "mlp")
    assert cnn_vs_mlp.config.train.epochs == 5  # fixed over the preset's 10
    assert cnn_vs_mlp.config.train.batch_size == 64 and cnn_vs_mlp.config.train.lr == 1e-3
    assert cnn_vs_mlp.text("title", "es") == "Semilla 000: una CNN frente a un MLP"
    full, ablations = assignments.parse(SEED003.read_bytes(), SEED003.name)
    assert full.config.model.name == ablations.config.model.name == "cnn_stages"
    assert ablations.free == ("no_relu", "no_pool", "skip")
    assert [f.name for f in ablations.free_fields("cnn_stages")] == ["no_relu", "no_pool", "skip"]


def test_json_and_yaml_say_the_same():
    yaml_text = (
        "assignments:\n  - id: a1\n    title: One\n    fixed: {epochs: 2, hidden: [50, 50]}\n"
    )
    one = {"id": "a1", "title": "One", "fixed": {"epochs": 2, "hidden": "50,50"}}
    json_text = json.dumps({"assignments": [one]})
    (a,), (b,) = assignments.parse(yaml_text.encode()), assignments.parse(json_text.encode())
    assert a == b and a.config.model.hidden == (50, 50) and a.config.train.epochs == 2


@pytest.mark.parametrize(("text", "said"), [
    (b"\xff\xfe", "not a text file"),
    (b"assignments: [", "neither JSON nor YAML"),
    (b"{}", "expected a list under 'assignments:'"),
    (b"- id: Bad Id\n  title: x\n", "id must be 1-40 lowercase letters"),
    (b"- id: a\n", "title: give a text"),
    (b"- id: a\n  title: x\n  fixed: {epochs: 0}\n", "assignment 'a': epochs must be between 1"),
    (b"- id: a\n  title: x\n  fixed: {colour: red}\n", "assignment 'a': no config field 'colour'"),
    (b"- id: a\n  title: x\n  preset: nope\n", "assignment 'a': unknown preset 'nope'"),
    (b"- id: a\n  title: x\n  models: [mlp]\n", "add model to free"),
    (b"- id: a\n  title: x\n  free: [model]\n  models: [resnet9000]\n", "resnet9000"),
    (b"- id: a\n  title: x\n  grade: 10\n", "unknown field 'grade'"),
    (b"- id: a\n  title: x\n- id: a\n  title: y\n", "two assignments have the id 'a'"),
    (b"- &x {id: a, title: x}\n- *x\n", "aliases"),
    (b"- id: a\n  title: x\n" * 21, "at most 20 assignments"),
    (b"#" * (65 * 1024), "at most 64 KB"),
    (b"[" * 30000 + b"]" * 30000, "nested more than 20 levels"),
    (b"- id: a\n  title: x\n  fixed: {epochs: " + b"9" * 5000 + b"}\n", "can be read"),
    (b"- {id: a, title: x, free: [dataset]}", "cannot be given dataset to change"),
    (b"- {id: a, title: x, free: [data_dir]}", "cannot be given data_dir to change"),
    (b"- {id: a, title: x, free: [train_limit]}", "cannot be given train_limit"),
    (b"- {id: a, title: {en: '', es: ' '}}", "title: give a text"),
])  # fmt: skip
def test_a_bad_assignment_file_is_one_line_naming_what_is_wrong(text, said):
    with pytest.raises(UserError) as e:
        assignments.parse(text, "tasks.yaml")
    assert said in str(e.value) and "\n" not in str(e.value)


def test_enforce_keeps_the_teachers_fields_whatever_the_page_sends():
    (task,) = assignments.parse(SEED000.read_bytes())
    sent = replace(RunConfig(), model=replace(task.config.model, name="mlp", hidden=(32,)))
    sent = replace(sent, train=replace(sent.train, epochs=99, lr=10.0))  # not free: ignored
    cfg = task.enforce(sent)
    assert cfg.model.name == "mlp" and cfg.model.hidden == (32,)
    assert cfg.train.epochs == 5 and cfg.train.lr == 1e-3
    with pytest.raises(UserError, match="offers the models cnn_bn, mlp"):
        task.enforce(replace(sent, model=replace(sent.model, name="vgg16")))


# -- names, hand-ins and the board ---------------------------------------------------------
@pytest.fixture
def room(tiny_run, tmp_path) -> Classroom:
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    return Classroom(Store(root))


def test_the_board_ranks_each_students_best_run_and_keeps_names_as_text(room, tiny_run):
    room.set_name(ANA, "  <b>Ana</b>\x00 =1+1  ")
    room.hand_in(ANA, [tiny_run.run_id])
    room.hand_in(BEN, [tiny_run.run_id, "0" * 20])  # a run still training is not shown
    rows = room.board()
    assert [r["student"] for r in rows] == ["<b>Ana</b> =1+1", anonymous(BEN)]
    assert rows[0]["test_accuracy"] == tiny_run.meta["test"]["accuracy"]
    assert rows[0]["macro_f1"] == tiny_run.meta["test"]["macro_f1"]
    assert BEN not in anonymous(BEN)  # the private token never shows
    table = list(csv.reader(io.StringIO(to_csv(rows))))
    assert table[0][:3] == ["student", "assignment", "model"]
    assert table[1][0] == "<b>Ana</b> =1+1" and table[1][4] == f"{rows[0]['test_accuracy']:.4f}"
    room.set_name(ANA, '=HYPERLINK("http://x")')
    cell = list(csv.reader(io.StringIO(to_csv(room.board()))))[1][0]
    assert cell.startswith("'=")  # a spreadsheet reads it as text, not a formula


def test_the_board_filters_by_assignment_and_a_new_lesson_starts_it_empty(room, tiny_run):
    room.load_assignments(SEED000.read_bytes(), SEED000.name)
    room.hand_in(ANA, [tiny_run.run_id], "seed000-cnn-vs-mlp")
    room.hand_in(BEN, [tiny_run.run_id])
    assert [r["owner"] for r in room.board(assignment="seed000-cnn-vs-mlp")] == [ANA]
    assert [r["owner"] for r in room.board(assignment="")] == [BEN]
    assert len(room.board()) == 2
    with pytest.raises(UserError, match="no assignment 'other'"):
        room.hand_in(ANA, [tiny_run.run_id], "other")
    room.new_lesson()
    assert room.board() == []
    again = Classroom(room.store)  # a restarted server: the same class
    assert again.assignments()[0].id == "seed000-cnn-vs-mlp" and again.board() == []
    room.hand_in(BEN, [tiny_run.run_id], "seed000-cnn-vs-mlp")
    assert [r["owner"] for r in again.board()] == [BEN]


def test_a_bad_file_keeps_the_assignments_the_class_had(room):
    room.load_assignments(SEED003.read_bytes(), SEED003.name)
    with pytest.raises(UserError):
        room.load_assignments(b"- id: x\n", "broken.yaml")
    assert [a.id for a in room.assignments()] == ["seed003-full", "seed003-ablations"]


# -- the pages -------------------------------------------------------------------------------
@pytest.fixture
def server(tiny_run, tmp_path, monkeypatch):
    """The tiny run's store served, with a queue that does not dispatch."""
    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    monkeypatch.delenv(TEACHER_ENV, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    queue = JobQueue(Store(root), dispatch=False)
    yield Classroom(Store(root)), queue
    st.cache_data.clear()
    st.cache_resource.clear()


def picker(at: AppTest, label: str):
    """The selectbox labelled ``label`` (its key changes with the language and options)."""
    (found,) = [s for s in at.selectbox if s.label == label]
    return found


def app(owner: str, page: str, lang: str = "en") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["user"], at.query_params["lang"] = owner, lang
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_student_works_on_an_assignment_with_its_fields_locked(server, monkeypatch):
    room, queue = server
    room.load_assignments(SEED000.read_bytes(), SEED000.name)
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = app(ANA, "train")
    picker(at, "Assignment").select("seed000-cnn-vs-mlp").run()
    assert not at.exception
    assert any("CNN against an MLP" in m.value for m in at.markdown)
    locked = at.dataframe[0].value
    shown = dict(zip(locked["fixed setting"], locked["its value"], strict=True))
    assert shown["Epochs"] == "5" and shown["Batch size"] == "64"
    assert not any(w.label == "Epochs" for w in at.number_input)  # locked: no widget
    at.selectbox(key="as_seed000-cnn-vs-mlp_model").select("mlp").run()
    at.text_input(key="as_seed000-cnn-vs-mlp_hidden").input("64").run()
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception and not at.error
    (job,) = queue.db.owned(ANA)
    assert job.cfg.model.name == "mlp" and job.cfg.model.hidden == (64,)
    assert job.cfg.train.epochs == 5 and job.cfg.train.lr == 1e-3
    handed = [
        tuple(r) for r in room._con().execute("SELECT owner, run_id, assignment FROM handins")
    ]
    assert handed == [(ANA, job.key, "seed000-cnn-vs-mlp")]


def test_a_students_display_name_is_kept_by_the_class(server, monkeypatch):
    room, _ = server
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = app(BEN, "home", lang="es")
    box = next(w for w in at.sidebar.text_input if w.key == "display_name")
    assert box.label == "Tu nombre en el tablero de la clase"
    box.input("Ben <script>").run()
    assert room.name(BEN) == "Ben <script>"
    assert app(BEN, "home").sidebar.text_input(key="display_name").value == "Ben <script>"


def test_the_teacher_sees_the_board_filters_it_and_loads_assignments(server, tiny_run,
                                                                     monkeypatch):  # fmt: skip
    room, _ = server
    room.set_name(ANA, "Ana *bold* <i>")
    room.hand_in(ANA, [tiny_run.run_id])
    monkeypatch.setattr("ui.state.on_this_machine", lambda: True)
    at = app(ANA, "class")
    frame = at.dataframe[0].value
    assert list(frame["student's name"]) == ["Ana *bold* <i>"]
    assert list(frame["test accuracy"]) == [tiny_run.meta["test"]["accuracy"]]
    assert frame["its evaluation"][0].endswith(f"/evaluate?run={tiny_run.run_id}&lang=en")
    assert any(b.label.startswith("Download the board") for b in at.get("download_button"))
    next(b for b in at.button if b.key == "cl_ex_seed003-ablations.yaml").click().run()
    assert [a.id for a in room.assignments()] == ["seed003-full", "seed003-ablations"]
    assert "Loaded 2 assignments" in at.success[0].value
    picker(at, "Show the runs of").select("seed003-full").run()
    assert not at.dataframe and "No finished runs" in at.info[0].value


def test_a_student_never_sees_the_class_page(server, monkeypatch):
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = AppTest.from_file(str(ROOT / "views" / "class.py"), default_timeout=60)
    at.session_state["user"] = BEN
    at.run()
    assert [e.value for e in at.error] == ["This page is for the teacher."]
    assert not at.dataframe and not at.button


def test_the_class_on_the_command_line(room, tiny_run, tmp_path, capsys):
    from core import cli

    where = ["--store", str(room.store.root)]

    def run(*args) -> tuple[int, str, str]:
        code = cli.main([*args, *where])
        out, err = capsys.readouterr()
        return code, out.strip(), err.strip()

    code, said, _ = run("class", "assignments", str(SEED000))
    assert (
        code == 0 and said == "loaded 1 assignment from seed000-cnn-vs-mlp.yaml: seed000-cnn-vs-mlp"
    )
    room.set_name(ANA, "Ana")
    room.hand_in(ANA, [tiny_run.run_id], "seed000-cnn-vs-mlp")
    code, said, _ = run("class", "board")
    first, last = said.splitlines()[0], said.splitlines()[-1]
    assert code == 0 and "Ana" in first and tiny_run.run_id in first and "CNN against" in first
    assert last.startswith("1 run since the start")
    code, said, _ = run("class", "board", "--csv", str(tmp_path / "board.csv"))
    assert code == 0 and said == f"1 run written to {tmp_path / 'board.csv'}"
    assert (tmp_path / "board.csv").read_text().splitlines()[1].startswith("Ana,Seed 000")
    code, said, _ = run("class", "board", "--json")
    assert [r["student"] for r in json.loads(said)] == ["Ana"] and "owner" not in said
    (tmp_path / "bad.yaml").write_text("- id: a\n  title: x\n  fixed: {lr: -1}\n")
    code, said, err = run("class", "assignments", str(tmp_path / "bad.yaml"))
    assert code == 2 and said == "" and err.startswith("error: assignment 'a': learning rate")
    assert [a.id for a in room.assignments()] == ["seed000-cnn-vs-mlp"]  # kept
    code, said, _ = run("class", "lesson")
    assert code == 0 and "a new lesson started" in said and room.board() == []


def test_a_run_handed_in_again_after_a_new_lesson_counts_in_it(room, tiny_run):
    room.hand_in(ANA, [tiny_run.run_id])
    room.new_lesson()
    assert room.board() == []
    room.hand_in(ANA, [tiny_run.run_id])  # "already trained": answered from the store
    assert [r["owner"] for r in room.board()] == [ANA]


def test_the_best_of_each_model_stays_on_the_board(room, tiny_run):
    from core.runs import Stored, train_or_load

    other = replace(TINY, model=replace(TINY.model, name="cnn_small"))
    cnn = next(e for e in train_or_load(other, room.store) if isinstance(e, Stored))
    room.load_assignments(SEED000.read_bytes(), SEED000.name)
    room.hand_in(ANA, [tiny_run.run_id, cnn.run_id], "seed000-cnn-vs-mlp")
    assert sorted(r["model"] for r in room.board()) == ["cnn_small", "mlp"]


def test_the_spanish_csv_is_what_a_spanish_spreadsheet_reads(room, tiny_run):
    room.set_name(ANA, "José\tPeña")
    room.hand_in(ANA, [tiny_run.run_id])
    (row,) = room.board()
    assert row["student"] == "José Peña"  # a tab is a space
    header, line = to_csv([row], lang="es").splitlines()
    assert header.startswith("student;assignment;model;")
    cells = line.split(";")
    assert cells[0] == "José Peña" and cells[4] == f"{row['test_accuracy']:.4f}".replace(".", ",")


def test_a_student_opening_the_class_page_gets_one_line_not_page_not_found(server,
                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = app(BEN, "class", lang="es")
    assert [e.value for e in at.error] == ["Esta página es para el profesor."]
    assert not at.dataframe and not at.button


def test_a_removed_assignment_is_said_and_the_form_is_free_practice(server, monkeypatch):
    room, _ = server
    room.load_assignments(SEED000.read_bytes(), SEED000.name)
    monkeypatch.setattr("ui.state.on_this_machine", lambda: False)
    at = app(ANA, "train", lang="es")
    picker(at, "Tarea").select("seed000-cnn-vs-mlp").run()
    at.text_input(key="as_seed000-cnn-vs-mlp_hidden").input("0").run()
    assert not at.exception
    assert "Ese valor está fuera de lo que admite Capas densas ocultas" in at.error[0].value
    assert at.dataframe  # the fixed settings are still shown
    start = next(b for b in at.button if b.label == "Comenzar")
    assert start.disabled
    locked = dict(zip(*at.dataframe[0].value.to_dict("list").values(), strict=True))
    assert locked["Tasa de aprendizaje"] == "0,001"
    assert locked["Volteo horizontal aleatorio"] == "no"
    room.load_assignments(SEED003.read_bytes(), SEED003.name)  # the teacher changes them
    at.run()
    assert "ya no está abierta" in at.warning[0].value
    assert picker(at, "Tarea").value == ""


def test_a_title_in_one_language_shows_in_both_and_fixed_settings_show_when_set():
    (task,) = assignments.parse(
        b"- {id: a, title: {es: Hola}, fixed: {momentum: 0.5, early_stopping: 3}}"
    )
    assert task.text("title", "en") == task.text("title", "es") == "Hola"
    locked = {f.name: v for f, v in task.locked(task.config)}
    assert locked["momentum"] == 0.5 and locked["early_stopping"] == 3
    assert "l1" not in locked  # left at its default: not listed


def test_two_students_with_one_name_are_told_apart(room, tiny_run):
    room.set_name(ANA, "Sam")
    room.set_name(BEN, "Sam")
    room.hand_in(ANA, [tiny_run.run_id])
    room.hand_in(BEN, [tiny_run.run_id])
    assert sorted(r["student"] for r in room.board()) == sorted(
        [f"Sam ({anonymous(ANA)})", f"Sam ({anonymous(BEN)})"]
    )

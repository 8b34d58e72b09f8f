"""A run's life in one place (core.runs, core.jobs): planned once, answered from the store or
queued, its derived data made where it is stored; tasks as objects, not strings."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, TINY

from core import UserError, runs, tasks
from core.jobs import JobQueue
from core.models import catalog
from core.runs import Plan, Stored, train_or_load
from core.store import TEST_PROBS, Store


def seeded(seed: int):
    return replace(TINY, train=replace(TINY.train, seed=seed))


def test_request_queues_only_what_is_neither_stored_nor_pending(tmp_path, monkeypatch):
    store = Store(tmp_path)
    assert isinstance(list(train_or_load(seeded(0), store))[-1], Stored)
    queue = JobQueue(store, dispatch=False)
    first = queue.request([seeded(0), seeded(1), seeded(2), seeded(1)], "ana")
    assert (len(first.queued), first.stored, first.pending) == (2, 1, 1)  # seed 1 asked twice
    assert len({job.group for job in first.queued}) == 1  # one submission: one cap slot
    # Asked again while they wait: nothing new is queued, and each config is planned once.
    planned = []
    real_plan = runs.plan
    monkeypatch.setattr(runs, "plan", lambda cfg, s=None: planned.append(cfg) or real_plan(cfg, s))
    again = queue.request([seeded(0), seeded(1), seeded(2)], "ana")
    assert (len(again.queued), again.stored, again.pending) == (0, 1, 2)
    assert len(planned) == 3
    # Another student's request is theirs: the pending runs are not shared as "pending".
    assert len(queue.request([seeded(1)], "ben").queued) == 1


def test_a_job_keeps_its_plan_and_states_reports_store_and_jobs(tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store, dispatch=False)
    (job,) = queue.request([seeded(3)], "ana").queued
    planned = runs.plan(seeded(3), store)
    assert queue.get(job.id).key == planned.run_id and queue.get(job.id).cfg == planned.cfg
    list(train_or_load(seeded(4), store))
    states = queue.states([seeded(3), seeded(4), seeded(5)], "ana")
    assert [s.job.id if s.job else None for s in states] == [job.id, None, None]
    assert [s.meta is not None for s in states] == [False, True, False]
    assert states[1].run_id == runs.plan(seeded(4), store).run_id


def test_a_plan_whose_data_changed_is_refused_with_one_line(tmp_path):
    store = Store(tmp_path)
    planned = runs.plan(TINY, store)
    stale = Plan(planned.cfg, "0" * 20)  # as if planned before its images changed
    with pytest.raises(UserError, match="dataset changed after this run was queued"):
        list(train_or_load(stale, store))


def test_a_new_run_brings_its_test_probabilities_and_asks_for_its_map(tmp_path):
    store = Store(tmp_path)
    asked = []
    events = list(train_or_load(TINY, store, make_map=lambda: asked.append(1) or False))
    stored = events[-1]
    assert isinstance(stored, Stored) and asked == [1]  # asked once, after it was stored
    assert store.run_file(stored.run_id, TEST_PROBS).exists()
    assert list(store.derived.glob(f"{stored.run_id}-tsne-*")) == []  # make_map said no
    list(train_or_load(TINY, store, make_map=lambda: asked.append(2) or True))  # a cache hit
    assert asked == [1]


def test_each_family_names_a_task_the_tasks_know():
    for family in catalog.families():
        assert tasks.of(family.name).name == family.task
        if family.starts_from is not None:
            assert family.starts_from.task in tasks.TASKS
            for option in (family.starts_from.option, family.starts_from.mode,
                           *family.starts_from.inherits):  # fmt: skip
                assert option in family.options
    assert (
        tasks.of("conv_autoencoder").history().keys().isdisjoint({"train_accuracy", "val_accuracy"})
    )


NAMES = "|".join(re.escape(n) for n in [*catalog.FAMILIES, *tasks.TASKS])
DECIDES = re.compile(rf"""(==|!=|\bin\s*\(|\bis)\s*["']({NAMES})["']|["']({NAMES})["']\s*(==|!=)""")
LOOP = re.compile(r"\bfor \w+ in \(")  # a table built over names is data, not a decision


def test_no_module_decides_by_a_model_name_or_a_task_string():
    """Behaviour comes from the catalog's entry and the task object (tasks.of), so a new
    family or task is one declaration, not fifteen edits."""
    sources = [*(ROOT / "core").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
               *(ROOT / "views").rglob("*.py"), ROOT / "gradio_app.py"]  # fmt: skip
    found = [f"{Path(f).relative_to(ROOT)}:{n}: {line.strip()}"
             for f in sources for n, line in enumerate(f.read_text().splitlines(), 1)
             if DECIDES.search(line) and not LOOP.search(line)]  # fmt: skip
    assert found == []

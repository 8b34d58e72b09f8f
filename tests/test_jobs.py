"""The class's job queue: worker processes, fair share, caps, stops, restarts, and Ray.

Every run here is a few seconds of digits. A "server" is any process whose JobQueue
dispatches (it holds the store's queue lock); the test process submits with
``dispatch=False``, as a second Streamlit server or the Gradio tab would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from conftest import ROOT, TINY, widget

from core import UserError
from core.jobs import REQUEUED, JobQueue, QueueFull, fair_order
from core.store import Store

# Long enough to be caught running (about 10-20 s of digits), short enough to finish.
LONG = replace(TINY, data=replace(TINY.data, train_limit=None),
               train=replace(TINY.train, epochs=300))  # fmt: skip


def seeded(cfg, seed: int):
    return replace(cfg, train=replace(cfg.train, seed=seed))


def wait_for(predicate, timeout: float = 120, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    pytest.fail(f"not true after {timeout} s")


# -- fair share ----------------------------------------------------------------------------
def test_fair_order_is_round_robin_over_students():
    rows = [{"id": f"{o}{i}", "owner": o, "seq": n}
            for n, (o, i) in enumerate([("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1),
                                        ("b", 2)])]  # fmt: skip
    order = [r["id"] for r in fair_order(rows, [], {})]
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # A student whose run is going now waits behind those who have none going.
    assert [r["id"] for r in fair_order(rows, ["a"], {"a": 5.0})][:3] == ["b1", "c1", "a1"]
    # Who started last goes last among equals.
    assert [r["id"] for r in fair_order(rows, [], {"b": 1.0, "c": 2.0})][:3] == ["a1", "b1", "c1"]


def test_a_student_with_many_jobs_does_not_block_one_with_one(tmp_path):
    queue = JobQueue(Store(tmp_path), precompute_maps=False)
    many = [queue.submit(seeded(TINY, s), "many") for s in range(4)]
    one = queue.submit(seeded(TINY, 9), "one")
    assert queue.position(one.id) == 2  # right after the first of the four
    done = [queue.wait(j.id, 180) for j in [*many, one]]
    assert all(j.state == "done" for j in done), [j.message for j in done]
    starts = sorted(done, key=lambda j: j.started)
    assert [j.owner for j in starts][:2] == ["many", "one"]


# -- limits ---------------------------------------------------------------------------------
def test_a_student_has_a_capped_number_of_submissions_and_a_sweep_counts_once(tmp_path):
    queue = JobQueue(Store(tmp_path), dispatch=False, max_queued=3, max_variants=4)
    queue.submit(TINY, "ana")
    queue.submit_many([seeded(TINY, s) for s in range(1, 5)], "ana")  # one submission of four
    queue.submit(seeded(TINY, 5), "ana")
    with pytest.raises(QueueFull, match="already have 3 runs waiting or running"):
        queue.submit(seeded(TINY, 6), "ana")
    queue.submit(seeded(TINY, 6), "ben")  # another student is not affected
    with pytest.raises(UserError, match="5 runs in one go; the limit is 4"):
        queue.submit_many([seeded(TINY, s) for s in range(10, 15)], "ben")
    # Stopping a waiting job frees its place.
    first = queue.jobs("ana")[-1]
    assert queue.stop(first.id, "ana")
    assert queue.get(first.id).state == "stopped" and queue.position(first.id) == 0
    queue.submit(seeded(TINY, 6), "ana")


def test_the_cap_is_the_teachers_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_CLASSROOM_MAX_QUEUED", "1")
    queue = JobQueue(Store(tmp_path), dispatch=False)
    queue.submit(TINY, "ana")
    with pytest.raises(QueueFull):
        queue.submit(seeded(TINY, 1), "ana")


def test_only_the_owner_sees_or_stops_a_job(tmp_path):
    queue = JobQueue(Store(tmp_path), dispatch=False)
    job = queue.submit(TINY, "ana")
    assert queue.get(job.id, "ben") is None and not queue.stop(job.id, "ben")
    assert queue.jobs("ben") == [] and [j.id for j in queue.jobs("ana")] == [job.id]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 1_000_000_000, "epochs must be between 1 and 500"),
        ("batch_size", 10_000_000, "batch size must be between 1 and 4096"),
        ("jitter", 1000, "jitter must be between 0 and 64 pixels"),
    ],
)
def test_huge_values_are_refused_before_anything_is_queued(tmp_path, field, value, message):
    queue = JobQueue(Store(tmp_path), dispatch=False)
    with pytest.raises(UserError, match=message):
        queue.submit(replace(TINY, train=replace(TINY.train, **{field: value})), "ana")
    assert queue.count() == 0


def test_a_model_too_large_to_train_is_refused(tmp_path, monkeypatch):
    queue = JobQueue(Store(tmp_path), dispatch=False)
    wide = replace(TINY, model=replace(TINY.model, hidden=(4096,) * 8))
    with pytest.raises(UserError, match="parameters; the limit is 150,000,000"):
        queue.submit(replace(wide, data=replace(wide.data, image_size=512)), "ana")
    monkeypatch.setenv("CNN_CLASSROOM_MAX_RUN_MB", "64")  # the teacher's memory cap
    with pytest.raises(UserError, match=r"GiB of memory to train; the limit is 0\.1 GiB"):
        queue.submit(replace(TINY, train=replace(TINY.train, batch_size=4096),
                             model=replace(TINY.model, hidden=(4096, 4096))), "ana")  # fmt: skip
    assert queue.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hidden", "1000000000x1"], "give 1 to 8 hidden layers"),
        (["--hidden", "1000000000"], "a hidden layer's size must be between 1 and 4096"),
        (["--batch-size", "10000000"], "batch size must be between 1 and 4096"),
        (["--epochs", "1000000000"], "epochs must be between 1 and 500"),
        (["--hidden", "4096,4096,4096"], "parameters; the limit is 1,000,000"),
    ],
)
def test_the_command_line_refuses_huge_values_with_one_line(run_cli, args, message):
    proc = run_cli("train", "--model", "mlp", "--dataset", "digits", *args,
                   env={"CNN_CLASSROOM_MAX_PARAMS": "1000000"})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


# -- workers --------------------------------------------------------------------------------
def worker_pid(queue: JobQueue, job_id: str) -> int:
    procs = queue.executor._procs
    return next(p.proc.pid for p in procs if p is not None and p.job and p.job[0] == job_id)


def test_training_runs_in_a_worker_process_not_the_server(tmp_path):
    queue = JobQueue(Store(tmp_path), precompute_maps=False)
    job = queue.submit(LONG, "ana")
    wait_for(lambda: (j := queue.get(job.id)).state == "running" and j.progress)
    assert worker_pid(queue, job.id) != os.getpid()
    assert "core.train" not in sys.modules or not _trains_here()
    assert queue.stop(job.id, "ana")
    stopped = queue.wait(job.id, 60)
    assert stopped.state == "stopped" and "partial run is not stored" in stopped.message


def _trains_here() -> bool:

    return any(t.name.startswith("train-worker") for t in threading.enumerate())


def test_a_queue_listing_reads_one_state_of_the_queue(tmp_path):
    """Issue 18: what a page lists (a job's place) is read from one snapshot: a job that
    another process starts meanwhile is not seen both queued and running."""
    from core.jobs import JobDB

    queue = JobQueue(Store(tmp_path), dispatch=False)
    job = queue.submit(TINY, "ana")
    other = JobDB(tmp_path)  # another process's connection, as a worker's
    with queue.db.reading():
        before = [r["id"] for r in queue.db.rows(("queued",))]
        t = threading.Thread(target=lambda: other._con().execute(
            "UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,)))  # fmt: skip
        t.start()
        t.join()
        assert [r["id"] for r in queue.db.rows(("queued",))] == before == [job.id]
        assert queue.db.rows(("running",)) == []
    assert queue.db.rows(("queued",)) == [] and queue.position(job.id) == 0


def test_a_worker_that_cannot_warm_up_says_why_on_the_next_job(tmp_path, monkeypatch):
    """Issue 18: a worker that fails before it is ready (here: damaged Fashion-MNIST files,
    read while it warms up) does not end silently; the waiting job fails with its reason."""
    data = tmp_path / "fashion"
    data.mkdir()
    from core.data import fashion_mnist

    for name in fashion_mnist.FILES.values():
        (data / name).write_bytes(b"not a gzip file")
    monkeypatch.setenv(fashion_mnist.ENV_DIR, str(data))
    queue = JobQueue(Store(tmp_path / "store"), precompute_maps=False)
    job = queue.wait(queue.submit(TINY, "ana").id, 120)
    assert job.state == "failed", job
    assert "the training worker could not start" in job.message
    assert "warming up the worker failed" in job.message and "\n" not in job.message


def test_a_worker_killed_by_the_kernel_fails_its_job_and_the_queue_carries_on(tmp_path):
    queue = JobQueue(Store(tmp_path), precompute_maps=False)
    doomed = queue.submit(LONG, "ana")
    after = queue.submit(TINY, "ben")
    wait_for(lambda: queue.get(doomed.id).progress)
    os.kill(worker_pid(queue, doomed.id), signal.SIGKILL)  # what the OOM killer does
    failed = queue.wait(doomed.id, 60)
    assert failed.state == "failed"
    assert failed.message == ("the training process was killed (SIGKILL: out of memory, or "
                              "killed by hand)")  # fmt: skip
    done = queue.wait(after.id, 120)  # a new worker takes the next job
    assert done.state == "done" and Store(tmp_path).meta(done.run_id) is not None


SERVER = """
import sys, time
from core.jobs import JobQueue
from core.store import Store
JobQueue(Store(sys.argv[1]), precompute_maps=False)
print("up", flush=True)
time.sleep(3600)
"""


def start_server(root) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "up"
    return proc


def workers_of(root) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"core.worker --store {root}"], capture_output=True,
                         text=True).stdout  # fmt: skip
    return [int(p) for p in out.split()]


def test_nothing_is_lost_when_the_server_is_killed(tmp_path):
    pages = JobQueue(Store(tmp_path), dispatch=False)  # a page's view of the queue
    server = start_server(tmp_path)
    try:
        finished = pages.submit(seeded(TINY, 1), "dave")
        assert pages.wait(finished.id, 120).state == "done"
        interrupted = pages.submit(LONG, "ana")
        wait_for(lambda: pages.get(interrupted.id).progress)
        queued = [pages.submit(seeded(TINY, 2), "ben"), pages.submit(seeded(TINY, 3), "cat")]
        assert [pages.position(j.id) for j in queued] == [1, 2]
        server.kill()  # kill -9 of the whole app
        server.wait()
        wait_for(lambda: not workers_of(tmp_path), timeout=10)  # its worker went with it
        assert [pages.get(j.id).state for j in queued] == ["queued", "queued"]

        server = start_server(tmp_path)  # make run, again
        again = wait_for(lambda: (j := pages.get(interrupted.id)).attempts == 2 and j)
        assert again.message == REQUEUED
        assert pages.get(finished.id).state == "done"  # finished ones are still there
        results = [pages.wait(j.id, 180) for j in [interrupted, *queued]]
        assert [j.state for j in results] == ["done"] * 3, [j.message for j in results]
        # The interrupted run went first (its owner had waited), then the queue in order.
        assert results[0].started < results[1].started < results[2].started
    finally:
        server.kill()
        server.wait()


# -- Ray ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_queue_runs_its_jobs_as_ray_tasks(ray_head, tmp_path):
    store = Store(tmp_path)
    queue = JobQueue(store, ray_address=ray_head, precompute_maps=False)
    jobs = [queue.submit(seeded(LONG, 1), "ana"), queue.submit(seeded(LONG, 2), "ben")]
    # Two CPUs, one each: both run at once, and their live updates stream back.
    wait_for(lambda: all(queue.get(j.id).state == "running" for j in jobs), timeout=180)
    wait_for(lambda: all(queue.get(j.id).history.get("val_loss") for j in jobs), timeout=120)
    stopped = queue.submit(seeded(LONG, 3), "cat")  # waits for a free CPU, then is stopped
    wait_for(lambda: queue.get(stopped.id).state == "running", timeout=300)
    assert queue.stop(stopped.id, "cat")
    done = [queue.wait(j.id, 300) for j in jobs]
    assert [j.state for j in done] == ["done", "done"], [j.message for j in done]
    assert queue.wait(stopped.id, 120).state == "stopped"
    # The weights came back into this server's store, verified, with what the node made
    # beside them (the test probabilities and validation logits Evaluate reads).
    assert all(store.meta(j.run_id) is not None for j in done)
    assert all(store.test_probs(j.run_id) is not None for j in done)
    assert all(store.run_file(j.run_id, "val-logits.npy").is_file() for j in done)
    assert done[0].run_id != done[1].run_id


# -- the pages ------------------------------------------------------------------------------
def test_a_page_opened_from_its_old_url_reattaches_after_a_restart(tmp_path, monkeypatch):
    """The Train page of a job the restart re-queued, opened from the URL a student had."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    owner = "0123456789abcdef"
    pages = JobQueue(Store(tmp_path), dispatch=False)
    job = pages.submit(LONG, owner)
    pages.db.claim(job.id)  # it was running when the server died
    pages.db.requeue_running()
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=120)
    at.session_state["user"], at.query_params["job"] = owner, job.id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [i.value for i in at.info] + [c.value for c in at.caption]
    assert any("place 1" in s for s in shown), shown
    assert any("queued again in its place" in s for s in shown), shown
    # A stranger with the same link but another token sees nothing of it.
    other = AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=120)
    other.query_params["job"] = job.id
    other.run()
    assert not any("place 1" in i.value for i in other.info)


def test_the_train_page_says_when_a_student_has_too_many_runs(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    owner = "fedcba9876543210"
    monkeypatch.setenv("CNN_CLASSROOM_MAX_QUEUED", "1")
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    JobQueue(Store(tmp_path), dispatch=False).submit(LONG, owner)
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "views" / "train.py"), default_timeout=120)
    at.session_state["user"] = owner
    at.run()
    at.selectbox(key="train_dataset").set_value("digits")
    widget(at, "number_input", "Epochs").set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        "you already have 1 runs waiting or running: wait for one to finish, or stop one"
    ]


def test_a_new_runs_map_waits_when_another_job_waits_for_the_worker(tmp_path):
    """The t-SNE map after a run holds the worker 4-5 s: with students waiting, it is left
    for the Embeddings page to compute when someone asks."""
    queue = JobQueue(Store(tmp_path))
    first = queue.submit(TINY, "ana")
    second = queue.submit(seeded(TINY, 1), "ben")  # waiting while the first trains
    first, second = queue.wait(first.id, 180), queue.wait(second.id, 180)

    def maps(run_id: str) -> list:
        return list((tmp_path / "embeddings").glob(f"{run_id}*-tsne-*.npy"))

    assert wait_for(lambda: maps(second.run_id))  # nobody waited: computed after it ended
    assert not maps(first.run_id)  # someone was waiting
